"""Lifelong evaluation (DESIGN.md section 3 "Evaluation"): edit T batches in sequence, then score.

From the base weights, each eval step captures, updates the normalisers, predicts and applies shifts
(no training). On the final model every edited fact is scored per row: token accuracy (zsRE, FEVER) or
CounterFact's new-vs-old logit comparison (`spec.metric`). ES / GS / LS are the means over the real
rows of the edit / equiv / unrel batches (`fact_index >= 0`).
"""

import jax
import jax.numpy as jnp

from rledit_jax.jit import program
from rledit_jax.method import edit_step as es
from rledit_jax.method import losses, packing, passes
from rledit_jax.method.packing import KindLengths
from rledit_jax.method.spec import Hypernets, Spec

SCORES = {"edit": "ES", "equiv": "GS", "unrel": "LS"}


def edit_sequence(spec: Spec, params, hypernets: Hypernets, batches):
    """Applies every step's edits in order; returns `(kernels, hypernets', factors per step)`."""

    def step(carry, t):
        kernels, hypernets = carry
        kernels, hypernets, factors = es.edit_step(spec, params, hypernets, kernels, es.at_step(batches.edit, t))
        return (kernels, hypernets), factors

    n_steps = batches.edit.input_ids.shape[0]
    (kernels, hypernets), factors = jax.lax.scan(step, (es.base_kernels(spec, params), hypernets), jnp.arange(n_steps))
    return kernels, hypernets, factors


def row_scores(spec: Spec, params, kernels, kind_batch, lengths: KindLengths):
    """Per-row score `[T, M, B]` of a kind batch (packed with `lengths`) on the edited model."""

    def score(batch):
        packed = packing.pack(batch, lengths)
        logits = passes.answer_logits(spec, params, kernels, passes.prefix(spec, params, packed), packed)
        if spec.metric == "token":
            return losses.token_accuracy(logits, packed.labels)
        return losses.new_beats_old(logits, packed.labels, packed.old_labels)

    return jax.lax.map(score, kind_batch)


def final_scores(spec: Spec, params, kernels, batches):
    """`(scores {ES, GS, LS}, per-row scores {kind: [T, M, B]})` of every fact of `batches` on the model
    with the sites' `kernels` (however they were edited)."""
    rows, scores = {}, {}
    for kind, name in SCORES.items():
        kind_batch = getattr(batches, kind)
        rows[kind] = row_scores(spec, params, kernels, kind_batch, getattr(spec.lengths, kind))
        real = kind_batch.fact_index >= 0
        scores[name] = jnp.sum(jnp.where(real, rows[kind], 0.0)) / jnp.sum(real)
    return scores, rows


@program(donate=("hypernets",))
def evaluate(spec: Spec, params, hypernets: Hypernets, batches):
    """`(scores {ES, GS, LS}, per-row scores {kind: [T, M, B]}, hypernets', factors per step or None)`.

    `hypernets` is donated (its normalisers keep updating). Every step's factors are returned only
    with `spec.keep_factors` (traces); see `train_step.train_sequence_and_update`.
    """
    kernels, hypernets, factors = edit_sequence(spec, params, hypernets, batches)
    scores, rows = final_scores(spec, params, kernels, batches)
    return scores, rows, hypernets, factors if spec.keep_factors else None
