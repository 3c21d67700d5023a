"""Tiny runs on a mesh and on one device, and the agreement measure the mesh tests assert on.

Every weight dimension the partition rules split is a multiple of 8 here (the tiny tokenizer's 622
tokens are padded to a vocabulary of 640), so any `data x model` mesh of 8 devices divides them.
"""

import jax
import numpy as np

from rledit_jax import run
from tests.config_files import load_config, with_fields

MESH = {"mesh.data": 2, "mesh.model": 4}
# A column-parallel site (d_out split) and a row-parallel one (d_in split), of two kernel shapes.
SITES = {
    "tiny": ("transformer.h.1.mlp.fc_in", "transformer.h.1.mlp.fc_out"),
    "tiny_llama": ("model.layers.1.mlp.up_proj", "model.layers.1.mlp.down_proj"),
}
LAYERS = {"tiny": "model.tiny.n_layer", "tiny_llama": "model.tiny.num_hidden_layers"}


def tiny_config(name: str = "tiny", **overrides):
    """`configs/{name}.py` shrunk to 2 layers, 2 steps of 4 facts (micro-batches of 3 and 1)."""
    config = load_config(name)
    config.model.edit_sites = SITES[name]
    fields = {
        LAYERS[name]: 2,
        "model.tiny.vocab_size": 640,
        "data.n_edits": 4,
        "train.sequences": 1,
        "train.steps_per_sequence": 2,
        "eval.steps": 2,
        "hparams.back_depth": 2,
        "hparams.rank": 8,
    }
    return with_fields(config, **{**fields, **overrides})


def setup_pair(name: str = "tiny", **overrides) -> tuple[run.Run, run.Run]:
    """`(the run on one device, the same run on the (2, 4) mesh)`."""
    return run.setup(tiny_config(name, **overrides)), run.setup(tiny_config(name, **overrides, **MESH))


def rel_diff(ours, reference) -> float:
    """`|ours - reference| / |reference|`, Frobenius norms over all the leaves of two pytrees together."""
    a, b = (
        np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(t)]) for t in (ours, reference)
    )
    assert a.shape == b.shape
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def worst_leaf_diff(ours, reference) -> float:
    """The largest `rel_diff` of one leaf (all-zero leaves of the reference left out)."""
    pairs = zip(jax.tree.leaves(ours), jax.tree.leaves(reference), strict=True)
    return max(rel_diff(a, b) for a, b in pairs if np.any(np.asarray(b)))


def assert_agree(ours: dict, reference: dict, what: str, tol: float = 1e-5, leaf_tol: float = 1e-4) -> None:
    """Every pytree of `ours` within `tol` of `reference`'s as a whole, and within `leaf_tol` leaf by leaf
    (float32 rounding alone moves a small leaf by a few 1e-6: one device's program with its weights
    rounded differently does); prints the numbers."""
    whole = {k: rel_diff(ours[k], reference[k]) for k in reference}
    leaves = {k: worst_leaf_diff(ours[k], reference[k]) for k in reference}
    print(f"\n{what}: relative difference {whole}; worst leaf {leaves}")
    assert max(whole.values()) <= tol, whole
    assert max(leaves.values()) <= leaf_tol, leaves


def shard_shapes(array) -> set[tuple[int, ...]]:
    """The shapes of the parts of `array` this process's devices hold."""
    return {tuple(s.data.shape) for s in array.addressable_shards}
