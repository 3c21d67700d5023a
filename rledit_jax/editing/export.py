"""Shipping an edited model: a full HF directory, or only the edited matrices' deltas.

The delta of a site is `kernel_edited - kernel_base` in float32 (the accumulated edits). Both exports
build the edited weight the same way, `(base.astype(float32) + delta).astype(model dtype)`, so
`apply_delta(base, delta export)` writes exactly the tensors of the full export.

A delta directory holds

  delta.safetensors  float32 deltas named by HF tensor name, in HF layout ([out, in] for a linear
                     weight, e.g. `transformer.h.3.mlp.fc_out.weight`)
  manifest.json      format, base model (a path with the sha256 of its weight files, or "tiny" with
                     the config that rebuilds it), sites, dtypes, the sha256 of delta.safetensors and
                     of each edited base tensor (so a delta is never applied to another base)

Every directory is written beside its destination and renamed into place at the end, so an
interrupted export leaves no half-written output behind.
"""

import hashlib
import json
import os
import shutil

import jax
import ml_collections
import numpy as np
import safetensors
import safetensors.numpy

from rledit_jax import atomic, models, run
from rledit_jax.models import registry

DELTA_FILE = "delta.safetensors"
MANIFEST_FILE = "manifest.json"
FORMAT = "rledit-jax-delta"
VERSION = 1
# Tokenizer (and generation) files copied from the base model directory into a full export.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "added_tokens.json",
    "generation_config.json",
)


class DeltaError(ValueError):
    """A delta that does not fit the base it is applied to, or a damaged delta directory."""


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_array(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def model_file_hashes(path: str) -> dict[str, str]:
    """sha256 of a model directory's config and weight files (safetensors / .bin, shards, indices)."""
    names = sorted(
        n for n in os.listdir(path) if n == "config.json" or n.endswith((".safetensors", ".bin", ".index.json"))
    )
    return {n: sha256_file(os.path.join(path, n)) for n in names}


def site_tensors(llm_config, sites) -> dict[str, tuple[tuple[str, ...], str, bool]]:
    """`{site: (our params path, HF tensor name, transpose?)}` from the architecture's name table."""
    table = {row.path: row for row in registry.architecture(llm_config.model_type).hf_param_table(llm_config)}
    out = {}
    for site in sites:
        row = table[models.site_path(llm_config, site)]
        out[site] = (row.path, row.name, row.transpose)
    return out


def site_deltas(llm_config, params, kernels: dict) -> dict[str, np.ndarray]:
    """`{site: kernel - base kernel}` float32 `[d_in, d_out]`, with the base from `params`."""
    return {
        site: np.asarray(jax.device_get(k), np.float32)
        - np.asarray(jax.device_get(models.get_site(llm_config, params, site)), np.float32)
        for site, k in kernels.items()
    }


def add_delta(base_kernel, delta: np.ndarray) -> np.ndarray:
    """The edited kernel written to disk: `(base + delta)` in float32, cast back to the base's dtype."""
    base = np.asarray(jax.device_get(base_kernel))
    return (base.astype(np.float32) + delta).astype(base.dtype)


def with_deltas(llm_config, params, deltas: dict) -> dict:
    """`params` with every site's kernel replaced by `add_delta(kernel, deltas[site])`."""
    return models.set_sites(
        llm_config,
        params,
        {site: add_delta(models.get_site(llm_config, params, site), d) for site, d in deltas.items()},
    )


def _write_files(directory: str, files: dict[str, str | bytes] | None) -> None:
    for name, content in (files or {}).items():
        mode = "wb" if isinstance(content, bytes) else "w"
        with open(os.path.join(directory, name), mode) as f:
            f.write(content)


def _copy_tokenizer(directory: str, tokenizer_dir: str | None) -> None:
    if not tokenizer_dir:
        return
    for name in TOKENIZER_FILES:
        source = os.path.join(tokenizer_dir, name)
        if os.path.isfile(source):
            shutil.copyfile(source, os.path.join(directory, name))


def _write_hf(llm_config, params, deltas, out, *, overwrite, tokenizer_dir, files):
    with atomic.atomic_directory(out, overwrite=overwrite) as tmp:
        model_dir = os.path.join(tmp, "model")
        models.save_hf(llm_config, with_deltas(llm_config, params, deltas), model_dir)
        for name in os.listdir(model_dir):
            os.rename(os.path.join(model_dir, name), os.path.join(tmp, name))
        os.rmdir(model_dir)
        _copy_tokenizer(tmp, tokenizer_dir)
        _write_files(tmp, files)


def export_hf(
    llm_config,
    params,
    kernels: dict,
    out: str,
    *,
    overwrite: bool = False,
    tokenizer_dir: str | None = None,
    files: dict | None = None,
) -> None:
    """Writes the model with the edit sites set to `kernels` as an HF directory `transformers` loads.

    `tokenizer_dir`: copy its tokenizer files along; `files`: extra `{name: text or bytes}` to add.
    """
    _write_hf(
        llm_config,
        params,
        site_deltas(llm_config, params, kernels),
        out,
        overwrite=overwrite,
        tokenizer_dir=tokenizer_dir,
        files=files,
    )


def base_description(model_config, llm_config, params, sites) -> dict:
    """The manifest's `base` entry: where the base model comes from and fingerprints of it."""
    base: dict = {"model_dtype": llm_config.param_dtype}
    if model_config.path:
        path = os.path.abspath(model_config.path)
        base.update(kind="hf", path=path, files=model_file_hashes(path))
    else:
        base.update(kind="tiny", tiny=model_config.tiny.to_dict())
    base["tensors"] = {
        hf: sha256_array(_hf_layout(models.get_site(llm_config, params, site), transpose))
        for site, (_, hf, transpose) in site_tensors(llm_config, sites).items()
    }
    return base


def _hf_layout(kernel, transpose: bool) -> np.ndarray:
    array = np.asarray(jax.device_get(kernel))
    return np.ascontiguousarray(array.T if transpose else array)


def export_delta(
    llm_config,
    params,
    kernels: dict,
    out: str,
    *,
    base: dict,
    overwrite: bool = False,
    files: dict | None = None,
    extra: dict | None = None,
) -> dict:
    """Writes `delta.safetensors` and `manifest.json` (plus `files`) into `out`; returns the manifest.

    `base` comes from `base_description`; `extra` is merged into the manifest (e.g. the edits made).
    """
    tensors = site_tensors(llm_config, kernels)
    deltas = site_deltas(llm_config, params, kernels)
    arrays = {hf: _hf_layout(deltas[site], transpose) for site, (_, hf, transpose) in tensors.items()}
    with atomic.atomic_directory(out, overwrite=overwrite) as tmp:
        delta_path = os.path.join(tmp, DELTA_FILE)
        safetensors.numpy.save_file(arrays, delta_path, {"format": FORMAT})
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "delta_file": DELTA_FILE,
            "delta_sha256": sha256_file(delta_path),
            "delta_dtype": "float32",
            "layout": "HF tensor names and layout ([out, in]); edited = (base.float32 + delta) cast "
            "to base.model_dtype",
            "model_type": llm_config.model_type,
            "sites": [
                {"site": site, "tensor": hf, "shape": list(arrays[hf].shape)} for site, (_, hf, _) in tensors.items()
            ],
            "base": base,
            **(extra or {}),
        }
        _write_files(tmp, {MANIFEST_FILE: json.dumps(manifest, indent=1), **(files or {})})
    return manifest


def read_delta(delta_dir: str) -> tuple[dict, dict[str, np.ndarray]]:
    """`(manifest, {HF tensor name: float32 array})`, after checking the file against the manifest."""
    manifest_path = os.path.join(delta_dir, MANIFEST_FILE)
    if not os.path.isfile(manifest_path):
        raise FileNotFoundError(f"no {MANIFEST_FILE} in delta directory {delta_dir!r}")
    with open(manifest_path) as f:
        manifest = json.load(f)
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise DeltaError(f"{manifest_path}: not a {FORMAT} v{VERSION} manifest")
    delta_path = os.path.join(delta_dir, manifest["delta_file"])
    if not os.path.isfile(delta_path):
        raise FileNotFoundError(f"delta file {delta_path!r} named by the manifest is missing")
    if sha256_file(delta_path) != manifest["delta_sha256"]:
        raise DeltaError(
            f"{delta_path}: sha256 differs from the manifest's; the delta file is damaged or was replaced"
        )
    arrays = safetensors.numpy.load_file(delta_path)
    named = {s["tensor"]: tuple(s["shape"]) for s in manifest["sites"]}
    found = {name: a.shape for name, a in arrays.items()}
    if named != found or any(a.dtype != np.float32 for a in arrays.values()):
        raise DeltaError(f"{delta_path} holds {found}, the manifest names {named} (float32)")
    return manifest, arrays


def load_base(manifest: dict, base: str | None):
    """`(llm_config, params, model directory or None)` of the base a delta is applied to.

    `base` None or "tiny" rebuilds the manifest's tiny model; otherwise it is an HF directory, loaded
    in the manifest's model dtype and checked against the manifest's file hashes.
    """
    described = manifest["base"]
    dtype = described["model_dtype"]
    if base in (None, "tiny"):
        if described["kind"] != "tiny":
            if base == "tiny":
                raise DeltaError(
                    f"the delta was made against the model at {described['path']!r}, not the built-in tiny model"
                )
            base = described["path"]
        else:
            model_config = ml_collections.ConfigDict({"path": None, "dtype": dtype, "tiny": described["tiny"]})
            llm_config, params = run.load_model(model_config)
            return llm_config, params, None
    if described["kind"] == "tiny":
        raise DeltaError(f"the delta was made against the built-in tiny model, not {base!r}; pass --base=tiny")
    llm_config, params = models.load_hf(base, param_dtype=dtype)
    if model_file_hashes(base) != described["files"]:
        raise DeltaError(
            f"base model {base!r} differs from the one the delta was made against "
            f"({described['path']!r}): weight-file sha256 mismatch"
        )
    return llm_config, params, base


def apply_delta(delta_dir: str, out: str, *, base: str | None = None, overwrite: bool = False) -> None:
    """Adds a delta export to its base model and writes the edited model as an HF directory."""
    atomic.check_output(out, overwrite)
    manifest, arrays = read_delta(delta_dir)
    llm_config, params, base_dir = load_base(manifest, base)
    sites = [s["site"] for s in manifest["sites"]]
    tensors = site_tensors(llm_config, sites)
    deltas = {}
    for site, (_, hf, transpose) in tensors.items():
        base_kernel = models.get_site(llm_config, params, site)
        if sha256_array(_hf_layout(base_kernel, transpose)) != manifest["base"]["tensors"][hf]:
            raise DeltaError(f"base tensor {hf} differs from the one the delta was made against")
        delta = arrays[hf].T if transpose else arrays[hf]
        deltas[site] = np.ascontiguousarray(delta)
    _write_hf(llm_config, params, deltas, out, overwrite=overwrite, tokenizer_dir=base_dir, files=None)
