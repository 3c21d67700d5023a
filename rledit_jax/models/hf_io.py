"""Reading and writing HF checkpoint directories as our params pytrees.

A directory holds `config.json` and the weights as `model.safetensors`, sharded safetensors
(`model.safetensors.index.json`), or `pytorch_model.bin` (sharded or not; read only through
`torch.load(..., weights_only=True)`, so no pickle code runs). Tensors are read one at a time,
converted (HF `[out, in]` linear weights become `[in, out]` kernels) and placed on the device before the
next is read, so loading a 6B model never holds two full copies in host memory. With `shardings` (a
pytree like the params, e.g. from `rledit_jax.partitioning.rules`), each device's part of a tensor is
read straight onto it (from safetensors, only that part is read from the file), so no host or device
ever holds a whole sharded tensor.
"""

import dataclasses
import json
import os
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import safetensors
import safetensors.numpy
import transformers

from rledit_jax import atomic
from rledit_jax.models import registry
from rledit_jax.models.table import HFTensor

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


def config_from_hf(hf: dict[str, Any]) -> Any:
    """Our config from an HF `config.json` dict, by its `model_type`; unsupported fields are refused."""
    if "model_type" not in hf:
        raise ValueError("the HF config has no model_type")
    return registry.architecture(hf["model_type"]).config_from_hf(hf, GENERIC_FIELDS)


def read_hf_config(path: str) -> Any:
    """Our config from a model directory's `config.json` (no weights read)."""
    config_file = os.path.join(path, "config.json")
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"no config.json in model directory {path!r}")
    with open(config_file) as f:
        hf = json.load(f)
    try:
        return config_from_hf(hf)
    except ValueError as e:
        raise ValueError(f"{config_file}: {e}") from None


def _safetensors_reader(files: list[str]) -> Iterator[tuple[str, Any]]:
    """`(name, a lazy slice of the tensor)`: indexing it reads only that part of the file."""
    for file in files:
        with safetensors.safe_open(file, framework="np") as f:
            for name in f.keys():
                yield name, f.get_slice(name)


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


def load_hf(path: str, param_dtype: str | None = None, shardings: dict | None = None) -> tuple[Any, dict]:
    """Loads an HF causal-LM directory as `(config, params)`.

    `param_dtype` (e.g. "bfloat16") overrides the storage dtype; by default weights are float32.
    The returned config computes in the same dtype as it stores. `shardings`: the `jax.sharding.Sharding`
    of every parameter (a pytree like the params); by default each is whole on the default device.
    """
    if not os.path.isdir(path):
        raise FileNotFoundError(f"model directory {path!r} does not exist")
    config = read_hf_config(path)
    arch = registry.architecture(config.model_type)
    if param_dtype is not None:
        config = dataclasses.replace(config, param_dtype=param_dtype, dtype=param_dtype)
    dtype = jnp.dtype(config.param_dtype)
    rows = {row.name: row for row in arch.hf_param_table(config)}
    by_alias = {alias: row for row in rows.values() for alias in row.aliases}
    missing = set(rows)
    files, is_safetensors = _weight_files(path)
    reader = _safetensors_reader if is_safetensors else _torch_reader
    params: dict = {}
    aliased = []  # (row, alias name, tensor): checked once every primary has been read
    unexpected = []
    one_device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    sharding_of = lambda row: _get_path(shardings, row.path) if shardings else one_device
    tied = {}  # host copies of the tensors with aliases, compared with their aliases below
    for name, source in reader(files):
        if name in by_alias:
            aliased.append((by_alias[name], name, _read_whole(source, by_alias[name], dtype)))
        elif name in rows:
            missing.discard(name)
            _set_path(params, rows[name].path, _to_param(source, rows[name], dtype, sharding_of(rows[name])))
            if rows[name].aliases:
                tied[name] = _read_whole(source, rows[name], dtype)
        elif not name.endswith(arch.hf_ignored_suffixes):
            unexpected.append(name)
    for row, alias, value in aliased:
        if row.name in missing:  # The checkpoint holds the tensor under its alias only.
            missing.discard(row.name)
            _set_path(
                params, row.path, _to_param(value, dataclasses.replace(row, transpose=False), dtype, sharding_of(row))
            )
        elif not np.array_equal(tied[row.name], value):
            raise ValueError(f"checkpoint {path!r}: the tied tensors {row.name} and {alias} differ")
    if missing or unexpected:
        raise ValueError(
            f"checkpoint {path!r} does not match its config: missing tensors {sorted(missing)[:10]}"
            f"{' ...' if len(missing) > 10 else ''}, unexpected tensors {unexpected[:10]}"
        )
    return config, params


def _shape(source) -> tuple[int, ...]:
    return tuple(source.shape) if isinstance(source, np.ndarray) else tuple(source.get_shape())


def _read(source, row: HFTensor, dtype, index: tuple[slice, ...]) -> np.ndarray:
    """The part `index` (in our layout) of a tensor (an array or a lazy safetensors slice)."""
    part = source[index[::-1]].T if row.transpose else source[index]
    return np.ascontiguousarray(np.asarray(part).astype(dtype))


def _read_whole(source, row: HFTensor, dtype) -> np.ndarray:
    return _read(source, row, dtype, tuple(slice(None) for _ in _shape(source)))


def _to_param(source, row: HFTensor, dtype, sharding) -> jax.Array:
    """The parameter of `row` with `sharding` (or on one device), each device's part read on its own."""
    shape = _shape(source)[::-1] if row.transpose else _shape(source)
    return jax.make_array_from_callback(shape, sharding, lambda index: _read(source, row, dtype, index))


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
    interrupted save leaves no half-written model behind (`rledit_jax.atomic`).
    """
    arch = registry.architecture(config.model_type)
    with atomic.atomic_directory(path, overwrite=overwrite) as tmp:
        shards: list[dict[str, np.ndarray]] = [{}]
        size = 0
        for row in arch.hf_param_table(config):
            array = np.asarray(jax.device_get(_get_path(params, row.path)))
            array = np.ascontiguousarray(array.T if row.transpose else array)
            if size and size + array.nbytes > max_shard_bytes:
                shards.append({})
                size = 0
            shards[-1][row.name] = array
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
