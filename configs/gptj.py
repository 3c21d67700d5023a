"""GPT-J-6B on zsRE, the paper's setting: edit the MLP output of layers 22-27.

  bin/train --config=configs/gptj.py --config.model.path=/models/gpt-j-6b \
    --config.data.train_path=zsre_train.json --config.data.eval_path=zsre_eval.json --workdir=runs/gptj
"""

from rledit_jax.config_schema import default_config


def get_config():
    config = default_config()
    # Set to your local HF GPT-J-6B directory (config.json + safetensors or pytorch_model.bin).
    config.model.path = "/path/to/gpt-j-6b"
    config.model.dtype = "bfloat16"
    config.model.edit_sites = tuple(f"transformer.h.{i}.mlp.fc_out" for i in range(22, 28))
    config.data.name = "zsre"
    # The shared zsRE files hold a few rows with an empty new answer: skip and count them.
    config.data.skip_malformed = True
    config.data.n_edits = 20
    config.data.batch_size = 4
    config.train.steps_per_sequence = 400
    config.eval.steps = 400
    return config
