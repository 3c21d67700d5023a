"""Llama-3-8B-Instruct on zsRE, the paper's setting: edit the MLP gate and up projections of layers 22-30.

18 sites, all of one kernel shape (4096, 14336): one hypernetwork and normaliser for all of them.

  bin/train --config=configs/llama3_8b_instruct.py --config.model.path=/models/Meta-Llama-3-8B-Instruct \
    --config.data.train_path=zsre_train.json --config.data.eval_path=zsre_eval.json --workdir=runs/llama3
"""

from rledit_jax.config_schema import paper_config


def get_config():
    # Set to your local HF Meta-Llama-3-8B-Instruct directory (config.json, safetensors, tokenizer).
    return paper_config(
        "/path/to/Meta-Llama-3-8B-Instruct",
        (f"model.layers.{i}.mlp.{proj}" for i in range(22, 31) for proj in ("gate_proj", "up_proj")),
    )
