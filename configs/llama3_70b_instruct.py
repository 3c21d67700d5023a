"""Llama-3-70B-Instruct on zsRE, for planning only (`bin/plan`): no run of it has been made or tested.

The 8B setting (`llama3_8b_instruct.py`) scaled to 80 layers: the MLP gate and up projections of the
9 layers 67-75, ending at the same relative depth as the 8B's 22-30. 18 sites of one kernel shape
(8192, 28672): one hypernetwork over 36864-wide rows. It needs a mesh, e.g. 8 GPUs of 80 GB:

  bin/plan --config=configs/llama3_70b_instruct.py --model=meta-llama-3-70b-instruct --mesh=1x8 --steps=400

On that mesh (planned on CPU, December) an edit step takes 52 GiB per device, but the unrolled training
of T = 400 steps 175 GiB: more than 80 GB, so train it on more devices or with shorter sequences.
"""

from rledit_jax.config_schema import paper_config


def get_config():
    # Set to your local HF Meta-Llama-3-70B-Instruct directory (config.json, safetensors, tokenizer).
    config = paper_config(
        "/path/to/Meta-Llama-3-70B-Instruct",
        (f"model.layers.{i}.mlp.{proj}" for i in range(67, 76) for proj in ("gate_proj", "up_proj")),
    )
    # The LLM's weights split over 8 devices (tensor parallelism, `rledit_jax.partitioning.rules`).
    config.mesh.model = 8
    return config
