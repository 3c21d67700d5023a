"""GPT-J-6B on zsRE, the paper's setting: edit the MLP output of layers 22-27.

  bin/train --config=configs/gptj.py --config.model.path=/models/gpt-j-6b \
    --config.data.train_path=zsre_train.json --config.data.eval_path=zsre_eval.json --workdir=runs/gptj
"""

from rledit_jax.config_schema import paper_config


def get_config():
    # Set to your local HF GPT-J-6B directory (config.json + safetensors or pytorch_model.bin).
    return paper_config("/path/to/gpt-j-6b", (f"transformer.h.{i}.mlp.fc_out" for i in range(22, 28)))
