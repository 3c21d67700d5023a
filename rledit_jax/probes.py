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


def site_io(config, params, sites, x, attention_mask, loss_fn, *, start: int = 0, stop: int | None = None):
    """`(loss, keys, value_grads)` of one forward (traceable, not jitted): at every position, each site's
    input `keys[site]` `[B, T, d_in]` and the gradient of `loss_fn(output)` w.r.t. the site's output
    `value_grads[site]` `[B, T, d_out]` (in the working float).

    The forward is `models.forward_layers(config, params, x, attention_mask, start=start, stop=stop)`
    and `output` what it returns (logits, or hidden states when `stop` is set); sites must lie in the
    blocks that run.
    """
    sites = tuple(sites)
    b, t = x.shape[:2]
    shapes = models.site_shapes(config)
    for site in sites:
        models.site_path(config, site)  # Unknown names fail here, listing the valid ones.
    probes = {s: jnp.zeros((b, t, shapes[s][1]), jnp.dtype(config.dtype)) for s in sites}

    def probed_loss(probes):
        output, keys = models.forward_with_probes(config, params, probes, x, attention_mask, start=start, stop=stop)
        return loss_fn(output), keys

    (loss, keys), grads = jax.value_and_grad(probed_loss, has_aux=True)(probes)
    f = working_float()
    return loss, {s: keys[s].astype(f) for s in sites}, {s: grads[s].astype(f) for s in sites}


def capture_with_loss(config, params, sites, batch, token: str = "ans"):
    """`(loss, {site: SiteCapture})` for one batch at the given params (traceable, not jitted); the loss
    is the batch's mean CE over `labels != -100`."""
    b, t = batch["input_ids"].shape
    loss, keys, grads = site_io(
        config,
        params,
        sites,
        batch["input_ids"],
        batch["attention_mask"],
        lambda logits: masked_cross_entropy(logits, batch["labels"]),
    )
    mask = row_mask(batch, token).reshape(b * t)
    rows = lambda x: jnp.where(mask[:, None], x.reshape(b * t, -1), 0.0)
    return loss, {s: SiteCapture(keys=rows(keys[s]), value_grads=rows(grads[s]), row_mask=mask) for s in keys}


@functools.partial(jax.jit, static_argnames=("config", "sites", "token"))
def capture(config, params, sites: tuple[str, ...], batch, token: str = "ans"):
    """Jitted capture: `{site: SiteCapture}` for one batch. `sites` is a tuple of HF site names."""
    return capture_with_loss(config, params, sites, batch, token)[1]
