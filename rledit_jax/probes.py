"""Keys and value-gradients at edit sites, captured without hooks (DESIGN.md sections 2 and 3).

A batch is `input_ids`, `attention_mask`, `labels`, each `[B, T]`; `labels[i]` is the target of
position `i` (no extra shift) and -100 marks ignored positions. The loss is the mean cross-entropy over
positions with `labels != -100`. For every site the capture returns, flattened row-major over
`(batch, position)`:

- `keys` `[B*T, d_in]`: the site's input,
- `value_grads` `[B*T, d_out]`: the gradient of the loss w.r.t. the site's output,
- `row_mask` `[B*T]` bool: rows that count (`ans`: labels != -100; `all`: attention_mask == 1).

Rows outside the mask are zeroed in `keys` and `value_grads`, so padding never leaks into a shift.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rledit_jax import models
from rledit_jax.data.tokenization import IGNORE
from rledit_jax.dtypes import working_float


class SiteCapture(NamedTuple):
    keys: jax.Array
    value_grads: jax.Array
    row_mask: jax.Array


def label_log_probs(logits, labels):
    """`(log p(label) [...], valid [...])` per position; `logits` `[..., V]`, 0 where `labels == -100`."""
    valid = labels != IGNORE
    logp = jax.nn.log_softmax(logits.astype(working_float()), axis=-1)
    picked = jnp.take_along_axis(logp, jnp.where(valid, labels, 0)[..., None], axis=-1)[..., 0]
    return jnp.where(valid, picked, 0.0), valid


def masked_cross_entropy(logits, labels):
    """Mean CE over positions with `labels != -100` (0 when there are none). `logits` `[..., V]`."""
    logp, valid = label_log_probs(logits, labels)
    return -jnp.sum(logp) / jnp.maximum(jnp.sum(valid), 1)


def row_mask(batch, token: str):
    if token == "ans":
        return batch["labels"] != IGNORE
    if token == "all":
        return batch["attention_mask"] == 1
    raise ValueError(f"token selection must be 'ans' or 'all', got {token!r}")


def capture_with_loss(config, params, sites, batch, token: str = "ans", loss_fn=masked_cross_entropy):
    """`(loss, {site: SiteCapture})` for one batch at the given params (traceable, not jitted).

    `loss_fn(logits, labels)` is the differentiated scalar; by default the batch's mean CE.
    """
    sites = tuple(sites)
    b, t = batch["input_ids"].shape
    shapes = models.site_shapes(config)
    for site in sites:
        models.site_path(config, site)  # Unknown names fail here, listing the valid ones.
    probes = {s: jnp.zeros((b, t, shapes[s][1]), jnp.dtype(config.dtype)) for s in sites}

    def probed_loss(probes):
        logits, keys = models.forward_with_probes(config, params, probes, batch["input_ids"], batch["attention_mask"])
        return loss_fn(logits, batch["labels"]), keys

    (loss, keys), grads = jax.value_and_grad(probed_loss, has_aux=True)(probes)
    mask = row_mask(batch, token).reshape(b * t)
    out = {}
    for site in sites:
        k = keys[site].reshape(b * t, -1).astype(working_float())
        g = grads[site].reshape(b * t, -1).astype(working_float())
        out[site] = SiteCapture(
            keys=jnp.where(mask[:, None], k, 0.0),
            value_grads=jnp.where(mask[:, None], g, 0.0),
            row_mask=mask,
        )
    return loss, out


@functools.partial(jax.jit, static_argnames=("config", "sites", "token"))
def capture(config, params, sites: tuple[str, ...], batch, token: str = "ans"):
    """Jitted capture: `{site: SiteCapture}` for one batch. `sites` is a tuple of HF site names."""
    return capture_with_loss(config, params, sites, batch, token)[1]
