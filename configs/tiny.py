"""Built-in tiny default: a random 4-layer GPT-J and synthetic facts, made in code (no downloads).

Runs end to end on a 2-core CPU in about a minute:
  bin/train --config=configs/tiny.py --workdir=runs/tiny
"""

from rledit_jax.config_schema import default_config


def get_config():
    config = default_config()

    # model.path unset = the built-in tiny random GPT-J described by model.tiny.
    config.model.edit_sites = ("transformer.h.2.mlp.fc_out", "transformer.h.3.mlp.fc_out")

    # data.train_path / eval_path unset = synthetic zsRE-like facts made in code.
    config.data.n_edits = 8
    # 3 does not divide 8: the last micro-batch of each step is ragged.
    config.data.batch_size = 3

    config.hparams.rank = 32
    config.hparams.n_blocks = 2
    config.hparams.meta_lr = 1e-3
    config.hparams.back_depth = 4

    # MEND's network at the tiny model's scale (the reference's rank 1920 is for 4096-wide models).
    config.baselines.mend.rank = 32

    config.train.sequences = 4
    config.train.steps_per_sequence = 8
    config.eval.steps = 8
    config.eval.curve_every = 2
    return config
