"""A tiny random 4-layer Llama (grouped-query attention) and synthetic facts, made in code.

The tiny default (`configs/tiny.py`) on a Llama instead of a GPT-J, editing two sites of different
kernel shapes (one hypernetwork and normaliser each):
  bin/train --config=configs/tiny_llama.py --workdir=runs/tiny_llama
"""

import ml_collections

from rledit_jax.config_schema import default_config


def get_config():
    config = default_config()

    # model.path unset = the built-in tiny random model: its architecture, the seed of its weights and
    # the fields of its HF config.json (the vocabulary is the tiny tokenizer's).
    config.model.tiny = ml_collections.ConfigDict()
    config.model.tiny.model_type = "llama"
    config.model.tiny.seed = 0
    config.model.tiny.hidden_size = 64
    config.model.tiny.intermediate_size = 256
    config.model.tiny.num_hidden_layers = 4
    config.model.tiny.num_attention_heads = 4
    # Two query heads per key/value head.
    config.model.tiny.num_key_value_heads = 2
    config.model.tiny.max_position_embeddings = 128
    config.model.tiny.rms_norm_eps = 1e-5
    config.model.tiny.rope_theta = 10000.0
    # up_proj is [64, 256], down_proj [256, 64].
    config.model.edit_sites = ("model.layers.2.mlp.up_proj", "model.layers.3.mlp.down_proj")

    # data.train_path / eval_path unset = synthetic zsRE-like facts made in code.
    config.data.n_edits = 8
    # 3 does not divide 8: the last micro-batch of each step is ragged.
    config.data.batch_size = 3

    config.hparams.rank = 32
    config.hparams.n_blocks = 2
    config.hparams.meta_lr = 1e-3
    config.hparams.back_depth = 4

    config.train.sequences = 4
    config.train.steps_per_sequence = 8
    config.eval.steps = 8
    return config
