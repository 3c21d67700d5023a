"""Mistral-7B-v0.3 on zsRE, the paper's setting: edit the MLP down projections of layers 17 and 18.

2 sites of kernel shape (14336, 4096).

  bin/train --config=configs/mistral_7b.py --config.model.path=/models/Mistral-7B-v0.3 \
    --config.data.train_path=zsre_train.json --config.data.eval_path=zsre_eval.json --workdir=runs/mistral
"""

from rledit_jax.config_schema import default_config


def get_config():
    config = default_config()
    # Set to your local HF Mistral-7B-v0.3 directory (config.json, safetensors, tokenizer).
    config.model.path = "/path/to/Mistral-7B-v0.3"
    config.model.dtype = "bfloat16"
    config.model.edit_sites = ("model.layers.17.mlp.down_proj", "model.layers.18.mlp.down_proj")
    config.data.name = "zsre"
    # The shared zsRE files hold a few rows with an empty new answer: skip and count them.
    config.data.skip_malformed = True
    config.data.n_edits = 20
    config.data.batch_size = 4
    config.train.steps_per_sequence = 400
    config.eval.steps = 400
    return config
