"""Tiny runs on a mesh and on one device, and the agreement the mesh tests assert.

Every weight dimension the partition rules split is a multiple of 8 here (the tiny tokenizer's 622
tokens are padded to a vocabulary of 640), so any `data x model` mesh of 8 devices divides them.

A mesh sums the same float32 terms as one device in another order, so the two differ by rounding,
carried as far as each program's conditioning takes it (the lifelong evaluation's N x N solves
amplify it) and depending on the CPU's kernels: the GPT-J evaluation's shift factors differ by 3.6e-6
on an AVX-512 machine, 1.4e-5 with XLA held to AVX2 (`--xla_cpu_max_isa=AVX2`) and 2.6e-5 on
another AVX2 machine. No fixed tolerance is right on every machine, so each test measures its own
yardstick where it runs: the one-device program re-run `N_NUDGES` times on its inputs nudged by one
ulp (`nudged`: rounding of float32's own size, carried through the same conditioning), and the mesh
must stay within `ROUNDING_FACTOR` times the largest move (`assert_within_rounding`). A reordering
rounds every intermediate, not only the inputs: the measured mesh / nudge ratios were at most 2.0,
with XLA's default kernels and held to AVX2 (BUILD.md "Tolerances across machines"); 10 leaves a
margin of 5 or more, while a wrong partition moves results by O(1).
"""

import jax
import numpy as np

from rledit_jax import run
from tests import margins
from tests.config_files import load_config, with_fields

MESH = {"mesh.data": 2, "mesh.model": 4}
N_NUDGES = 3
ROUNDING_FACTOR = 10
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


def nudged(tree, seed: int):
    """`tree` with every nonzero float32 entry moved one ulp up, one ulp down or left, at random (numpy
    copies): the same inputs rounded otherwise. Zeros stay (rounding never makes them; the normalisers'
    empty statistics would turn negative)."""
    rng = np.random.default_rng(seed)

    def nudge(x):
        x = np.asarray(x)
        if x.dtype != np.float32:
            return x
        toward = np.where(rng.integers(0, 2, x.shape) == 1, np.float32(np.inf), np.float32(-np.inf))
        moved = np.where(rng.integers(0, 3, x.shape) == 0, x, np.nextafter(x, toward))
        return np.where(x == 0, x, moved).astype(np.float32)

    return jax.tree.map(nudge, tree)


def assert_within_rounding(ours: dict, reference: dict, nudged_runs: list[dict], what: str) -> None:
    """Each pytree of `ours` (the mesh's) differs from `reference`'s (one device's), as a whole (`rel_diff`)
    and in its worst leaf, by at most `ROUNDING_FACTOR` times the most that float32 rounding alone moves
    it: the largest difference of `nudged_runs` (the one-device program on `nudged` inputs) from
    `reference`. Measured on the machine that runs the test, so the bound follows its kernels."""
    for key in reference:
        for name, measure in (("whole", rel_diff), ("worst leaf", worst_leaf_diff)):
            spread = max(measure(run[key], reference[key]) for run in nudged_runs)
            margins.check(f"{what}, {key} ({name})", measure(ours[key], reference[key]), ROUNDING_FACTOR * spread)


def shard_shapes(array) -> set[tuple[int, ...]]:
    """The shapes of the parts of `array` this process's devices hold."""
    return {tuple(s.data.shape) for s in array.addressable_shards}
