"""Mistral-7B-v0.3 on zsRE, the paper's setting: edit the MLP down projections of layers 17 and 18.

2 sites of kernel shape (14336, 4096).

  bin/train --config=configs/mistral_7b.py --config.model.path=/models/Mistral-7B-v0.3 \
    --config.data.train_path=zsre_train.json --config.data.eval_path=zsre_eval.json --workdir=runs/mistral
"""

from rledit_jax.config_schema import paper_config


def get_config():
    # Set to your local HF Mistral-7B-v0.3 directory (config.json, safetensors, tokenizer).
    return paper_config("/path/to/Mistral-7B-v0.3", ("model.layers.17.mlp.down_proj", "model.layers.18.mlp.down_proj"))
