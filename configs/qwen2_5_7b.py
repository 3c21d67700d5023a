"""Qwen2.5-7B-Instruct on zsRE: edit the MLP gate and up projections of layers 19-26.

Not a setting of the paper (which has no Qwen run): the band is the paper's Llama-3 band (layers
22-30 of 32, i.e. 69%-94% of the depth) moved to the same relative depth of Qwen2.5's 28 layers, and
the sites the same kind of projection. 16 sites of kernel shape (3584, 18944).

  bin/train --config=configs/qwen2_5_7b.py --config.model.path=/models/Qwen2.5-7B-Instruct \
    --config.data.train_path=zsre_train.json --config.data.eval_path=zsre_eval.json --workdir=runs/qwen2
"""

from rledit_jax.config_schema import paper_config


def get_config():
    # Set to your local HF Qwen2.5-7B-Instruct directory (config.json, safetensors, tokenizer).
    return paper_config(
        "/path/to/Qwen2.5-7B-Instruct",
        (f"model.layers.{i}.mlp.{proj}" for i in range(19, 27) for proj in ("gate_proj", "up_proj")),
    )
