"""The speed benchmark's setting: an 8-layer GPT-J of GPT-J's vocabulary, built in code, on synthetic facts.

  bin/bench --config=configs/bench_gptj_8l.py

n_embd 256, n_inner 1024, 8 heads, rotary_dim 16, vocab 50400 (GPT-J's head width, so the LM head
weighs as it does in GPT-J-6B relative to a layer); edit sites the fc_out of layers 5 and 6;
20 steps x 20 edits in micro-batches of 4, back_depth 10, rank 64, 2 blocks (the comparison of
rledit-jax's steps with their torch passes and with the PyTorch reference is made at this shape).
"""

from rledit_jax.config_schema import default_config


def get_config():
    config = default_config()
    tiny = config.model.tiny
    tiny.n_positions, tiny.n_embd, tiny.n_layer, tiny.n_head = 128, 256, 8, 8
    tiny.rotary_dim, tiny.n_inner, tiny.vocab_size = 16, 1024, 50400
    config.model.edit_sites = ("transformer.h.5.mlp.fc_out", "transformer.h.6.mlp.fc_out")

    config.data.n_edits = 20
    config.data.batch_size = 4

    config.hparams.rank = 64
    config.hparams.n_blocks = 2
    config.hparams.back_depth = 10

    config.train.steps_per_sequence = 20
    config.eval.steps = 20
    # Like for like with the reference's evaluation, which has no retention curve.
    config.eval.curve_every = 0
    return config
