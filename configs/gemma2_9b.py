"""Gemma-2-9B on zsRE, the paper's setting: edit the MLP gate and up projections of layers 32-40.

18 sites, all of one kernel shape (3584, 14336): one hypernetwork and normaliser for all of them.

  bin/train --config=configs/gemma2_9b.py --config.model.path=/models/gemma-2-9b \
    --config.data.train_path=zsre_train.json --config.data.eval_path=zsre_eval.json --workdir=runs/gemma2
"""

from rledit_jax.config_schema import paper_config


def get_config():
    # Set to your local HF gemma-2-9b directory (config.json, safetensors, tokenizer).
    return paper_config(
        "/path/to/gemma-2-9b",
        (f"model.layers.{i}.mlp.{proj}" for i in range(32, 41) for proj in ("gate_proj", "up_proj")),
    )
