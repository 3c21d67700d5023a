"""bin/bench: seconds per training / edit step, compile time and ratio to the LLM floor, as a table.

  bin/bench --config=configs/tiny.py [--config.model.tiny.n_embd=256 ...] [--steps=5] [--nobreakdown]

How to read the table: the docstring of `rledit_jax/benchmark/report.py`. Nothing is written.
"""

import sys

from absl import app, flags
from ml_collections import config_flags

from rledit_jax.benchmark import report
from rledit_jax.cli import app as cli_app


def _main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    f = flags.FLAGS
    config_file = getattr(f["config"], "config_filename", None) or "?"
    overrides = [a for a in sys.argv[1:] if a.startswith("--config.")]
    name = " ".join([config_file, *overrides])
    print(report.table(f.config, steps=f.steps, breakdown=f.breakdown, config_name=name), flush=True)
    if f.profile_dir:
        report.profile_sequence(f.config, f.profile_dir)


def main():
    config_flags.DEFINE_config_file("config", None, "Config file (get_config()).", lock_config=True)
    flags.DEFINE_integer("steps", 5, "Timed runs per program (after one warm-up).", lower_bound=1)
    flags.DEFINE_bool("breakdown", True, "Also time each part of a training step and of an edit step.")
    flags.DEFINE_string("profile_dir", None, "If set, also write a jax.profiler trace of one sequence here.")
    flags.mark_flags_as_required(["config"])
    cli_app.run(_main, program="bin/bench")
