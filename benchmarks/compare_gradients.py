"""Does training through the unrolled trajectory give a better editor than the reference gradient?

Trains the same hypernetwork init on the same fixed edit stream (equal budget: the same sequences and
Adam steps) once per `train.gradient` mode, then runs the same lifelong evaluation, and prints
ES / GS / LS with the training wall time (compilation of the one training program included); steady
per-step speed is `bin/bench`'s job.

  python benchmarks/compare_gradients.py [--sequences=8] [--steps=6] [--config=configs/tiny.py]
"""

import json
import os
import tempfile
import time

from absl import flags, logging
from ml_collections import config_flags

from rledit_jax import config_schema, data
from rledit_jax.cli import app
from rledit_jax.cli.train import train_and_evaluate


def fixed_stream(config, n_train_rows, n_eval_rows):
    n_edits = config.data.n_edits
    return {
        "train": data.draw_stream(n_train_rows, config.train.sequences * config.train.steps_per_sequence, n_edits, 1),
        "eval": data.draw_stream(n_eval_rows, config.eval.steps, n_edits, 2),
    }


def compare(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    base = flags.FLAGS.config
    base.train.sequences, base.train.steps_per_sequence = flags.FLAGS.sequences, flags.FLAGS.steps
    work = tempfile.mkdtemp(prefix="compare-gradients-")
    n_train = base.train.sequences * base.train.steps_per_sequence * base.data.n_edits
    n_eval = base.eval.steps * base.data.n_edits
    stream = os.path.join(work, "stream.json")
    with open(stream, "w") as f:
        json.dump(fixed_stream(base, n_train, n_eval), f)
    print(
        f"{base.train.sequences} sequences x {base.train.steps_per_sequence} steps x {base.data.n_edits} edits, "
        f"eval {base.eval.steps} steps; sites {list(base.model.edit_sites)}"
    )
    print(f"{'mode':<22} {'ES':>7} {'GS':>7} {'LS':>7} {'train s':>8} {'run s':>7}")
    for mode in flags.FLAGS.modes:
        config = base.copy_and_resolve_references()
        config.train.gradient = mode
        config.data.stream_file = stream
        workdir = os.path.join(work, mode)
        start = time.time()
        metrics = train_and_evaluate(config, workdir)
        print(
            f"{mode:<22} {metrics['ES']:>7.4f} {metrics['GS']:>7.4f} {metrics['LS']:>7.4f} "
            f"{metrics['train_seconds']:>8.1f} {time.time() - start:>7.1f}"
        )


if __name__ == "__main__":
    config_flags.DEFINE_config_file("config", "configs/tiny.py", "Base config.", lock_config=False)
    flags.DEFINE_integer("sequences", 8, "Training sequences (Adam steps) per mode.")
    flags.DEFINE_integer("steps", 6, "Edit steps per training sequence (train.steps_per_sequence).")
    flags.DEFINE_list("modes", list(config_schema.GRADIENT_MODES), "Gradient modes to compare.")
    app.run(compare, program="benchmarks/compare_gradients.py")
