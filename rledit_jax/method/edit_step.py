"""One RLEdit edit step as pure functions (DESIGN.md section 3 "Capture", "Normaliser", "Shift").

Names used throughout the method (the package docstring of `rledit_jax` has the full glossary):

- `params`: the frozen LLM params pytree; `kernels`: `{site: [d_in, d_out] float32}`, the current
  edited matrices of the edit sites (base kernel plus every shift so far), which replace the sites'
  kernels in `params` for every forward.
- A kind batch `[M, B, L]`: M micro-batches of B rows of L tokens (`input_ids`, `attention_mask`,
  `labels`), as `rledit_jax.data.KindBatch` lays them out.
- `captures`: `{site: SiteCapture}` with arrays `[M, R, d]` (R rows per micro-batch, see `capture_step`).
- `factors`: `{site: (K [N, d_in], C [N, d_out])}` with the site's shift `S = K^T C`, N = M * R;
  rows outside the capture mask are zero in K and contribute nothing.
"""

import jax
import jax.numpy as jnp

from rledit_jax import models, probes
from rledit_jax.dtypes import working_float
from rledit_jax.method import losses, normalizer, shift
from rledit_jax.method.spec import Hypernets, Spec


def at_step(kind_batch, t):
    """Step `t` (traced) of a `[T, M, B, L]` kind batch."""
    return jax.tree.map(lambda x: x[t], kind_batch)


def flatten_micro_batches(batch):
    """`[M, B, L]` arrays -> `[M * B, L]` (a plain dict of input_ids, attention_mask, labels)."""
    return {
        k: getattr(batch, k).reshape(-1, batch.input_ids.shape[-1]) for k in ("input_ids", "attention_mask", "labels")
    }


def forward_kind(model, params, batch):
    """Logits `[..., M, B, L, V]` of a kind batch with leading axes `[..., M, B, L]`."""
    lead = batch.input_ids.shape
    logits = models.forward_layers(
        model, params, batch.input_ids.reshape(-1, lead[-1]), batch.attention_mask.reshape(-1, lead[-1])
    )
    return logits.reshape(*lead, -1)


def capture_step(spec: Spec, params, kernels, batch):
    """Keys/value-gradients of a step's edit micro-batches under `kernels`.

    One forward/backward over all M micro-batches at once: the loss is the sum of the micro-batch mean
    CEs, so every row's gradient is exactly that of its own micro-batch's loss. Returns
    `{site: SiteCapture}` with arrays `[M, R, d]` and `row_mask` `[M, R]`: R = B * L rows, or with
    `token="ans"` and `spec.lengths.edit = A` (at least the longest answer) only each example's answer
    positions, R = B * A. Dropping rows outside the mask changes no result (they are zero) but makes
    every shift's factors, and their N x N solve, that much smaller.
    """
    m, b, l = batch.input_ids.shape
    token, answer_rows = spec.hparams.token, spec.lengths.edit

    def loss_fn(logits, labels):
        return jnp.sum(losses.micro_batch_cross_entropy(logits.reshape(m, b, l, -1), labels.reshape(m, b, l)))

    _, captures = probes.capture_with_loss(
        spec.model,
        models.set_sites(spec.model, params, kernels),
        spec.layout.names,
        flatten_micro_batches(batch),
        token,
        loss_fn,
    )
    if token == "ans" and answer_rows is not None:
        positions, valid = losses.answer_positions(batch.labels, answer_rows)  # [M, B, A]
        rows = (jnp.arange(m)[:, None, None] * b * l + jnp.arange(b)[None, :, None] * l + positions).reshape(-1)
        valid = valid.reshape(m, b * answer_rows)
        pick = lambda x: jnp.where(valid[..., None], x[rows].reshape(m, b * answer_rows, -1), 0.0)
        return {
            site: probes.SiteCapture(keys=pick(cap.keys), value_grads=pick(cap.value_grads), row_mask=valid)
            for site, cap in captures.items()
        }
    return {site: jax.tree.map(lambda x: x.reshape(m, b * l, *x.shape[1:]), cap) for site, cap in captures.items()}


def update_norms(spec: Spec, norms, captures):
    """Merges a step's captures into the normalisers: micro-batch major, then site in config order."""

    def merge_micro_batch(norms, cap):
        norms = dict(norms)
        for site in spec.layout.sites:
            k, g, mask = cap[site.name]
            norms[site.shape] = normalizer.update(norms[site.shape], jnp.concatenate([k, g], -1), mask)
        return norms, None

    norms, _ = jax.lax.scan(merge_micro_batch, norms, captures)
    return norms


def predict_factors(spec: Spec, nets, norms, captures):
    """Every site's shift as factors `(K, C)`, from all of the step's rows at once."""
    factors = {}
    for site in spec.layout.sites:
        k, g, mask = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), captures[site.name])
        factors[site.name] = shift.shift_factors(
            nets[site.shape], norms[site.shape], k, g, mask, jnp.int32(site.index)
        )
    return factors


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
