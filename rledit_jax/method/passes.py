"""The LLM passes of the method, on packed kind batches (`packing.py`; DESIGN.md section 4b).

Frozen prefix: no weight below the first edited block changes during a sequence, so what enters it
(`prefix`) is a constant of a batch; every later pass starts there. Answer-only head: every loss and
metric reads logits only at answer positions, so the final norm and the LM head run there alone.

  prefix          [1, P, d]        the input of the first edited block (token ids [1, P] when it is block 0)
  answer logits   [M, B, A, V]     working float, at the packed batch's answer slots
  captures        {site: SiteCapture [M, R, d]}, R = B * A answer rows (`token="ans"`) or B * L
"""

import jax.numpy as jnp

from rledit_jax import models, probes
from rledit_jax.dtypes import working_float
from rledit_jax.method import losses
from rledit_jax.method.packing import Packed
from rledit_jax.method.spec import Spec
from rledit_jax.partitioning import constraints


def first_edited_layer(spec: Spec) -> int:
    return min(spec.model.site_layer(s) for s in spec.layout.names)


def prefix(spec: Spec, params, packed: Packed):
    """What enters the first edited block for a packed batch; computed once per batch."""
    layer = first_edited_layer(spec)
    tokens = constraints.packed_tokens(spec, packed.tokens[None])
    if layer == 0:
        return tokens
    return constraints.packed_tokens(
        spec, models.forward_layers(spec.model, params, tokens, packed.segments, stop=layer)
    )


def _upper(spec: Spec, params, kernels, hidden, packed: Packed):
    """The edited blocks on the prefix: the last block's output `[1, P, d]` (before the final norm)."""
    model = spec.model
    edited = models.set_sites(model, params, kernels)
    start = first_edited_layer(spec)
    return models.forward_layers(model, edited, hidden, packed.segments, start=start, stop=model.n_layers), edited


def head_at_answers(spec: Spec, params, last, packed: Packed):
    """The final norm and LM head at the answer slots of `last` `[1, P, d]` -> `[M, B, A, V]`."""
    model = spec.model
    at = last[0][packed.answer_slots]  # [M, B, A, d]
    logits = models.forward_layers(model, params, at.reshape(1, -1, at.shape[-1]), None, start=model.n_layers)
    return logits.reshape(*at.shape[:-1], -1).astype(working_float())


def answer_logits(spec: Spec, params, kernels, hidden, packed: Packed):
    """Answer logits `[M, B, A, V]` of a packed batch on the model with the sites' `kernels`."""
    last, edited = _upper(spec, params, kernels, hidden, packed)
    return head_at_answers(spec, edited, last, packed)


def capture_rows(packed: Packed, token: str):
    """`(slots [M, R], mask [M, R])`: the packed slots a capture keeps per micro-batch, and which count."""
    if token == "ans":
        slots, mask = packed.answer_slots, packed.answer_valid
    else:
        slots, mask = packed.token_slots, packed.token_valid
    m = slots.shape[0]
    return slots.reshape(m, -1), mask.reshape(m, -1)


def capture(spec: Spec, params, kernels, hidden, packed: Packed, token: str):
    """Keys and value-gradients of the edit batch under `kernels` (DESIGN.md section 3 "Capture").

    The loss is the sum of the micro-batch mean CEs, so every row's gradient is exactly that of its own
    micro-batch's loss. Rows: each example's answer positions (`token="ans"`, R = B * A) or every real
    token (`"all"`, R = B * L); rows outside the mask are zero.
    """
    model = spec.model
    edited = models.set_sites(model, params, kernels)

    def loss_fn(last):
        logits = head_at_answers(spec, edited, last, packed)
        return jnp.sum(losses.micro_batch_cross_entropy(logits, packed.labels))

    _, keys, grads = probes.site_io(
        model,
        edited,
        spec.layout.names,
        hidden,
        packed.segments,
        loss_fn,
        start=first_edited_layer(spec),
        stop=model.n_layers,
    )
    slots, mask = capture_rows(packed, token)
    rows = lambda x: jnp.where(mask[..., None], x[0][slots], 0.0)
    return {s: probes.SiteCapture(keys=rows(keys[s]), value_grads=rows(grads[s]), row_mask=mask) for s in keys}
