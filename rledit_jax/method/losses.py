"""Per-micro-batch losses and metrics on step batches (DESIGN.md section 3).

Arrays carry a micro-batch axis: `logits` `[..., M, B, L, V]`, `labels` `[..., M, B, L]` with -100 on
ignored positions. Every loss is a mean over the valid positions of one micro-batch (0 for a
micro-batch without any), returned per micro-batch as `[..., M]`; callers sum over micro-batches.
"""

import math

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


# Up to this largest log-term the KL is log1p of a sum of terms below e^60 (finite in float32); beyond it
# the KL exceeds the bound and the plain log-sum-exp is accurate (`micro_batch_kl`).
_KL_LOG1P_BOUND = 60.0
# Below this |x|, `expm1(x) - x` is taken from its Taylor series (to x^8 / 8!: truncation < 4e-10 relative).
_SERIES_BELOW = 0.25


def _expm1_minus_identity(x):
    """`expm1(x) - x = x^2/2 + x^3/6 + ...` (>= 0) to float32 relative accuracy, also for tiny `x` where the
    subtraction would cancel."""
    series = jnp.zeros_like(x)
    for k in range(8, 1, -1):  # Horner from the x^8 term down to x^2
        series = (series + 1.0 / math.factorial(k)) * (x if k > 2 else 1.0)
    near = x * x * series
    far = jnp.expm1(x) - x
    return jnp.where(jnp.abs(x) < _SERIES_BELOW, near, far)


def micro_batch_kl(logits_before, logits_after, valid):
    """KL(p_before || p_after) over the vocabulary, averaged over valid answer positions.

    `logits_*` `[..., M, B, A, V]`, `valid` `[..., M, B, A]` -> `[..., M]`.

    Written in logit differences so float32 keeps its relative accuracy at any KL, from the ~1e-9 of a
    step that barely moves an unrelated prompt to the hundreds of a large edit. With `d = z_after -
    z_before` centred so that `E_p[d] = 0` under `p = p_before`, `KL = log E_p[exp(d)]`, each term
    `p exp(d) = exp(x)`, `x = log p + d`. While every `x` is at most the bound,
    `KL = log1p(E_p[expm1(d) - d])` (the centring makes `E_p[d]` vanish), a sum of non-negative terms
    that does not cancel (`p expm1(d) - p d` from `exp(x)` where `d` alone would overflow). The textbook
    `sum p (log p - log q)` instead subtracts two log-normalisers of size ~log V and loses ~1e-7 * log V
    absolute. Beyond the bound the KL is at least `max x`, and the log-sum-exp
    `max x + log sum exp(x - max x)` is finite and accurate for any finite logits.
    """
    logp = jax.nn.log_softmax(logits_before, axis=-1)
    p = jnp.exp(logp)
    d = logits_after - logits_before
    d = d - jnp.sum(p * d, axis=-1, keepdims=True)
    x = logp + d
    top = jnp.max(x, axis=-1)
    bound = _KL_LOG1P_BOUND
    terms = jnp.where(
        d <= bound, p * _expm1_minus_identity(jnp.minimum(d, bound)), jnp.exp(jnp.minimum(x, bound)) - p - p * d
    )
    near = jnp.log1p(jnp.sum(terms, axis=-1))
    far = top + jnp.log(jnp.sum(jnp.exp(x - top[..., None]), axis=-1))
    kl = jnp.where(top <= bound, near, far)
    return _per_micro_batch_mean(kl, valid)


def token_accuracy(logits, labels):
    """Per row: fraction of answer tokens whose argmax is the label. `[..., L, V]` -> `[...]`."""
    valid = labels != IGNORE
    hit = (jnp.argmax(logits, axis=-1) == labels) & valid
    return jnp.sum(hit, axis=-1) / jnp.maximum(jnp.sum(valid, axis=-1), 1)


def agreement(logits, reference_logits, labels):
    """Per row: fraction of answer tokens (`labels` set) whose argmax is `reference_logits`' argmax.

    `[..., L, V]` (twice), `[..., L]` -> `[...]` (the second specificity protocol: agreement with the
    unedited model's predictions)."""
    predicted = jnp.where(labels != IGNORE, jnp.argmax(reference_logits, axis=-1), IGNORE)
    return token_accuracy(logits, predicted)


def new_beats_old(logits, labels, old_labels):
    """Per row (CounterFact, the reference's `succ_ratios`): the fraction of counted answer tokens where
    the label's logit beats the competing token's. A position counts where both `labels` and
    `old_labels` are set; `packing.compared_old` leaves `old_labels` set exactly where the reference
    counts (the padding id 0 where the old answer is shorter, -100 past its cut)."""
    valid = (labels != IGNORE) & (old_labels != IGNORE)
    pick = lambda ids: jnp.take_along_axis(logits, jnp.where(valid, ids, 0)[..., None], axis=-1)[..., 0]
    hit = (pick(labels) > pick(old_labels)) & valid
    return jnp.sum(hit, axis=-1) / jnp.maximum(jnp.sum(valid, axis=-1), 1)
