"""One RLEdit edit step as pure functions (DESIGN.md section 3 "Capture", "Normaliser", "Shift").

Names used throughout the method (the package docstring of `rledit_jax` has the full glossary):

- `params`: the frozen LLM params pytree; `kernels`: `{site: [d_in, d_out] float32}`, the current
  edited matrices of the edit sites (base kernel plus every shift so far), which replace the sites'
  kernels in `params` for every forward.
- A kind batch `[M, B, L]`: M micro-batches of B rows of L tokens (`input_ids`, `attention_mask`,
  `labels`), as `rledit_jax.data.KindBatch` lays them out.
- `captures`: `{site: SiteCapture}` with arrays `[M, R, d]` (R rows per micro-batch, see `capture_step`).
- Every pass runs on packed batches from the frozen prefix, with the head at answer positions only
  (`packing.py`, `passes.py`).
- `factors`: `{site: (K [N, d_in], C [N, d_out])}` with the site's shift `S = K^T C`, N = M * R;
  rows outside the capture mask are zero in K and contribute nothing.
"""

import jax
import jax.numpy as jnp

from rledit_jax import models
from rledit_jax.dtypes import working_float
from rledit_jax.method import normalizer, packing, passes, shift
from rledit_jax.method.spec import Hypernets, Spec
from rledit_jax.partitioning import constraints


def at_step(kind_batch, t):
    """Step `t` (traced) of a `[T, M, B, L]` kind batch."""
    return jax.tree.map(lambda x: x[t], kind_batch)


def capture_step(spec: Spec, params, kernels, batch):
    """Keys/value-gradients of a step's edit micro-batches `[M, B, L]` under `kernels`.

    Packed (`packing.py`) and run from the frozen prefix (`passes.py`); returns `{site: SiteCapture}`
    with arrays `[M, R, d]` and `row_mask` `[M, R]`: R = B * A answer rows (`token="ans"`, A =
    `spec.lengths.edit.answers`) or B * L (`"all"`). Rows outside the mask are zero in K and G, so they
    change no result, and dropping them makes every shift's factors, and its N x N solve, smaller.
    """
    packed = packing.pack(batch, spec.lengths.edit)
    hidden = passes.prefix(spec, params, packed)
    return passes.capture(spec, params, kernels, hidden, packed, spec.hparams.token)


def update_norms(spec: Spec, norms, captures):
    """Merges a step's captures into the normalisers: micro-batch major, then site in config order."""

    def merge_micro_batch(norms, cap):
        norms = dict(norms)
        for site in spec.layout.sites:
            k, g, mask = cap[site.name]
            norms[site.shape] = normalizer.update(norms[site.shape], jnp.concatenate([k, g], -1), mask)
        return norms, None

    norms, _ = jax.lax.scan(merge_micro_batch, norms, captures)
    return constraints.whole(spec, norms)


def predict_factors(spec: Spec, nets, norms, captures):
    """Every site's shift as factors `(K, C)` (formed as `spec.shift` says), from all of the step's rows at once."""
    factors = {}
    for site in spec.layout.sites:
        k, g, mask = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), captures[site.name])
        factors[site.name] = shift.FACTORS[spec.shift](
            nets[site.shape], norms[site.shape], k, g, mask, jnp.int32(site.index)
        )
    return constraints.factors(spec, factors)


def apply_factors(kernels, factors):
    """`kernels` plus every site's shift `K^T C`."""
    return {site: kernels[site] + factors[site][0].T @ factors[site][1] for site in kernels}


def edit_step(spec: Spec, params, hypernets: Hypernets, kernels, batch):
    """Capture, update the normalisers, predict and apply every site's shift.

    Returns `(kernels', hypernets with the normalisers updated, factors)`.
    """
    captures = capture_step(spec, params, kernels, batch)
    norms = update_norms(spec, hypernets.norms, captures)
    factors = predict_factors(spec, hypernets.nets, norms, captures)
    return apply_factors(kernels, factors), hypernets.replace(norms=norms), factors


def base_kernels(spec: Spec, params):
    """The sites' unedited kernels in float32 (edits accumulate in float32 even on bf16 models)."""
    return {s: models.get_site(spec.model, params, s).astype(working_float()) for s in spec.layout.names}
