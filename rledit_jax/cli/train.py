"""bin/train: trains an RLEdit hypernetwork, then evaluates lifelong editing.

bin/train --config=configs/tiny.py --workdir=runs/tiny [--config.editor.rank=64 ...]
"""

from absl import app, flags
from ml_collections import config_flags

from rledit_jax import train_lib
from rledit_jax.cli import app as cli_app


def _main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    metrics = train_lib.train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir)
    print(" ".join(f"{k}={metrics[k]:.4f}" for k in ("ES", "GS", "LS")))


def main():
    config_flags.DEFINE_config_file("config", None, "Config file (get_config()).", lock_config=True)
    flags.DEFINE_string("workdir", None, "Directory for metrics, the trained hypernetwork and traces.")
    flags.mark_flags_as_required(["config", "workdir"])
    cli_app.run(_main, program="bin/train")
