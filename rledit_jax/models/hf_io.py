"""Reading and writing HF checkpoint directories as our params pytrees.

A directory holds `config.json` and the weights as `model.safetensors`, sharded safetensors
(`model.safetensors.index.json`), or `pytorch_model.bin` (sharded or not; read only through
`torch.load(..., weights_only=True)`, so no pickle code runs). Tensors are read one at a time,
converted (HF `[out, in]` linear weights become `[in, out]` kernels) and placed on the device before the
next is read, so loading a 6B model never holds two full copies in host memory.
"""

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import safetensors
import safetensors.numpy
import transformers

from rledit_jax.models import registry

# Fields every HF config may carry that do not change a causal LM's forward: the generic
# `PretrainedConfig` fields, generation defaults, and generic fields of older transformers versions.
_LEGACY_GENERIC_FIELDS = (
    "torch_dtype",
    "use_bfloat16",
    "torchscript",
    "tf_legacy_loss",
    "pruned_heads",
    "tie_encoder_decoder",
    "is_decoder",
    "add_cross_attention",
    "cross_attention_hidden_size",
    "finetuning_task",
    "prefix",
    "sep_token_id",
    "xla_device",
    "chunk_size_feed_forward",
)
GENERIC_FIELDS = frozenset(
    list(transformers.PretrainedConfig().to_dict())
    + list(transformers.GenerationConfig().to_dict())
    + list(_LEGACY_GENERIC_FIELDS)
)


def read_hf_config(path: str) -> tuple[registry.Architecture, Any]:
    config_file = os.path.join(path, "config.json")
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"no config.json in model directory {path!r}")
    with open(config_file) as f:
        hf = json.load(f)
    if "model_type" not in hf:
        raise ValueError(f"{config_file} has no model_type")
    arch = registry.architecture(hf["model_type"])
    return arch, arch.config_from_hf(hf, GENERIC_FIELDS)


def _safetensors_reader(files: list[str]) -> Iterator[tuple[str, np.ndarray]]:
    for file in files:
        with safetensors.safe_open(file, framework="np") as f:
            for name in f.keys():
                yield name, f.get_tensor(name)


def _torch_reader(files: list[str]) -> Iterator[tuple[str, np.ndarray]]:
    import torch  # Only for `.bin` checkpoints; not a runtime requirement otherwise.

    for file in files:
        state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        for name in list(state):
            tensor = state.pop(name)
            if tensor.dtype == torch.bfloat16:
                yield name, tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
            else:
                yield name, tensor.numpy()


def _weight_files(path: str) -> tuple[list[str], bool]:
    """The weight files of a directory, in order, and whether they are safetensors."""
    for index_name, is_safetensors in (
        ("model.safetensors.index.json", True),
        ("pytorch_model.bin.index.json", False),
    ):
        index_file = os.path.join(path, index_name)
        if os.path.isfile(index_file):
            with open(index_file) as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
            files = [os.path.join(path, s) for s in shards]
            missing = [f for f in files if not os.path.isfile(f)]
            if missing:
                raise FileNotFoundError(f"{index_file} names shards that are missing: {missing}")
            return files, is_safetensors
    for name, is_safetensors in (("model.safetensors", True), ("pytorch_model.bin", False)):
        if os.path.isfile(os.path.join(path, name)):
            return [os.path.join(path, name)], is_safetensors
    raise FileNotFoundError(
        f"no weights in model directory {path!r}: expected model.safetensors, "
        "model.safetensors.index.json, pytorch_model.bin or pytorch_model.bin.index.json"
    )


def _set_path(tree: dict, path: tuple[str, ...], value) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def load_hf(path: str, param_dtype: str | None = None) -> tuple[Any, dict]:
    """Loads an HF causal-LM directory as `(config, params)`.

    `param_dtype` (e.g. "bfloat16") overrides the storage dtype; by default weights are float32.
    The returned config computes in the same dtype as it stores.
    """
    if not os.path.isdir(path):
        raise FileNotFoundError(f"model directory {path!r} does not exist")
    arch, config = read_hf_config(path)
    if param_dtype is not None:
        config = config.__class__(**{**config.__dict__, "param_dtype": param_dtype, "dtype": param_dtype})
    dtype = jnp.dtype(config.param_dtype)
    table = {hf_name: (ours, transpose) for ours, hf_name, transpose in arch.hf_param_table(config)}
    files, is_safetensors = _weight_files(path)
    reader = _safetensors_reader if is_safetensors else _torch_reader
    params: dict = {}
    unexpected = []
    for name, array in reader(files):
        if name not in table:
            if not name.endswith(arch.hf_ignored_suffixes):
                unexpected.append(name)
            continue
        ours, transpose = table.pop(name)
        if transpose:
            array = array.T
        _set_path(params, ours, jax.device_put(np.ascontiguousarray(array.astype(dtype))))
    if table or unexpected:
        raise ValueError(
            f"checkpoint {path!r} does not match its config: missing tensors {sorted(table)[:10]}"
            f"{' ...' if len(table) > 10 else ''}, unexpected tensors {unexpected[:10]}"
        )
    return config, params


def _get_path(tree: dict, path: tuple[str, ...]):
    for key in path:
        tree = tree[key]
    return tree


def save_hf(
    config: Any,
    params: dict,
    path: str,
    *,
    overwrite: bool = False,
    max_shard_bytes: int = 5 * 2**30,
) -> None:
    """Writes `(config, params)` as an HF directory that `transformers` loads.

    The directory is written beside its destination and renamed into place at the end, so an
    interrupted save leaves no half-written model behind.
    """
    path = os.path.abspath(path)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"output directory {path!r} exists; pass overwrite=True to replace it")
    arch = registry.architecture(config.model_type)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.partial-", dir=parent)
    try:
        shards: list[dict[str, np.ndarray]] = [{}]
        size = 0
        for ours, hf_name, transpose in arch.hf_param_table(config):
            array = np.asarray(jax.device_get(_get_path(params, ours)))
            array = np.ascontiguousarray(array.T if transpose else array)
            if size and size + array.nbytes > max_shard_bytes:
                shards.append({})
                size = 0
            shards[-1][hf_name] = array
            size += array.nbytes
        if len(shards) == 1:
            safetensors.numpy.save_file(shards[0], os.path.join(tmp, "model.safetensors"), {"format": "pt"})
        else:
            weight_map = {}
            for i, shard in enumerate(shards):
                name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
                safetensors.numpy.save_file(shard, os.path.join(tmp, name), {"format": "pt"})
                weight_map.update({k: name for k in shard})
            with open(os.path.join(tmp, "model.safetensors.index.json"), "w") as f:
                json.dump({"metadata": {}, "weight_map": weight_map}, f, indent=1)
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(arch.config_to_hf(config), f, indent=1)
        if os.path.exists(path):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.old-", dir=parent)
            os.rename(path, os.path.join(old, "model"))
            os.rename(tmp, path)
            shutil.rmtree(old)
        else:
            os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
