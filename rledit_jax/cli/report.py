"""bin/report: renders a run directory's results into DIR/report.md plus PNG figures.

  bin/report --workdir=runs/tiny

Reads whichever of train_metrics.jsonl, curve.jsonl, general.jsonl, metrics.json and compare.json
the directory holds (formats: rledit_jax/report/inputs.py). A missing directory or a malformed file
(named with its line) is a one-line error, exit status 2.
"""

from absl import app, flags

from rledit_jax import report
from rledit_jax.cli import app as cli_app


def _main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    print(report.render(flags.FLAGS.workdir))


def main():
    flags.DEFINE_string("workdir", None, "Run directory to render (report.md and PNGs are written there).")
    flags.mark_flags_as_required(["workdir"])
    cli_app.run(_main, program="bin/report")
