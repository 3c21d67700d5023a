"""bin/bench: seconds of the training, edit and evaluation programs against their torch passes, as a table.

  bin/bench --config=configs/bench_gptj_8l.py [--steps=3] [--reference]

How to read the table: the docstring of `rledit_jax/benchmark/report.py`. Nothing is written.
"""

import sys

from absl import app, flags
from ml_collections import config_flags

from rledit_jax import config_validation
from rledit_jax.benchmark import report
from rledit_jax.cli import app as cli_app


def _main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    f = flags.FLAGS
    config_validation.validate(f.config)
    cli_app.set_matmul_precision(f.config)
    config_file = getattr(f["config"], "config_filename", None) or "?"
    overrides = [a for a in sys.argv[1:] if a.startswith("--config.")]
    name = " ".join([config_file, *overrides])
    print(report.table(f.config, steps=f.steps, reference=f.reference, config_name=name), flush=True)
    if f.profile_dir:
        report.profile_sequence(f.config, f.profile_dir)


def main():
    config_flags.DEFINE_config_file("config", None, "Config file (get_config()).", lock_config=True)
    flags.DEFINE_integer("steps", 3, "Timed runs per program (after one warm-up).", lower_bound=1)
    flags.DEFINE_bool("reference", False, "Also time the official PyTorch code (RLEDIT_REF_DIR) on the same batches.")
    flags.DEFINE_string("profile_dir", None, "If set, also write a jax.profiler trace of one sequence here.")
    flags.mark_flags_as_required(["config"])
    cli_app.run(_main, program="bin/bench")
