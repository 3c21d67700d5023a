"""Per-micro-batch losses and metrics on step batches (DESIGN.md section 3).

Arrays carry a micro-batch axis: `logits` `[..., M, B, L, V]`, `labels` `[..., M, B, L]` with -100 on
ignored positions. Every loss is a mean over the valid positions of one micro-batch (0 for a
micro-batch without any), returned per micro-batch as `[..., M]`; callers sum over micro-batches.
"""

import jax
import jax.numpy as jnp

from rledit_jax import probes
from rledit_jax.data.tokenization import IGNORE
from rledit_jax.dtypes import working_float


def _per_micro_batch_mean(values, valid):
    """Mean of `values` `[..., M, B, L]` over valid positions of each micro-batch -> `[..., M]`."""
    total = jnp.sum(jnp.where(valid, values, 0.0), axis=(-2, -1))
    return total / jnp.maximum(jnp.sum(valid, axis=(-2, -1)), 1)


def micro_batch_cross_entropy(logits, labels):
    """Mean CE over `labels != -100` of each micro-batch -> `[..., M]`."""
    logp, valid = probes.label_log_probs(logits, labels)
    return _per_micro_batch_mean(-logp, valid)


def answer_positions(labels, n_answer: int):
    """The first `n_answer` positions with `labels != -100` of each row, in order.

    Returns `(positions [..., n_answer] int32, valid [..., n_answer] bool)`; `n_answer` (static) must be
    at least the longest answer so nothing is dropped.
    """
    valid = labels != IGNORE
    order = jnp.argsort(~valid, axis=-1, stable=True)[..., :n_answer]
    return order.astype(jnp.int32), jnp.take_along_axis(valid, order, axis=-1)


def answer_logits(logits, positions):
    """Logits at the answer positions: `[..., L, V]`, `[..., A]` -> `[..., A, V]` (working float)."""
    return jnp.take_along_axis(logits, positions[..., None], axis=-2).astype(working_float())


def micro_batch_kl(logits_before, logits_after, valid):
    """KL(p_before || p_after) over the vocabulary, averaged over valid answer positions.

    `logits_*` `[..., M, B, A, V]`, `valid` `[..., M, B, A]` -> `[..., M]`.

    Written in logit differences so float32 keeps its accuracy when the two distributions are close
    (the usual case: one step's shift barely moves unrelated prompts). With `d = z_after - z_before`
    centred so that `E_p[d] = 0` under `p = p_before`, `KL = log E_p[exp(d)] = log1p(E_p[expm1(d)])`;
    the textbook `sum p (log p - log q)` instead subtracts two log-normalisers of size ~log V and loses
    that rounding error (~1e-7 * log V absolute) against a KL that may be 1e-4.
    """
    p = jax.nn.softmax(logits_before, axis=-1)
    d = logits_after - logits_before
    d = d - jnp.sum(p * d, axis=-1, keepdims=True)
    kl = jnp.log1p(jnp.sum(p * jnp.expm1(d), axis=-1))
    return _per_micro_batch_mean(kl, valid)


def token_accuracy(logits, labels):
    """Per row: fraction of answer tokens whose argmax is the label. `[..., L, V]` -> `[...]`."""
    valid = labels != IGNORE
    hit = (jnp.argmax(logits, axis=-1) == labels) & valid
    return jnp.sum(hit, axis=-1) / jnp.maximum(jnp.sum(valid, axis=-1), 1)


def new_beats_old(logits, labels, old_labels):
    """Per row (CounterFact): fraction of aligned answer tokens where the label's logit beats the old
    answer's. Positions count where both `labels` and `old_labels` are set (the shorter answer)."""
    valid = (labels != IGNORE) & (old_labels != IGNORE)
    pick = lambda ids: jnp.take_along_axis(logits, jnp.where(valid, ids, 0)[..., None], axis=-1)[..., 0]
    hit = (pick(labels) > pick(old_labels)) & valid
    return jnp.sum(hit, axis=-1) / jnp.maximum(jnp.sum(valid, axis=-1), 1)
