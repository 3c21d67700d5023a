"""Lifelong evaluation (DESIGN.md section 3 "Evaluation"): edit T batches in sequence, then score.

From the base weights, each eval step captures, updates the normalisers, predicts and applies shifts
(no training). On the final model every edited fact is scored per row: token accuracy (zsRE, FEVER) or
CounterFact's new-vs-old logit comparison (`spec.metric`). ES / GS / LS are the means over the real
rows of the edit / equiv / unrel batches (`fact_index >= 0`). `LS_agreement` is the second
specificity protocol: per unrel row, the fraction of answer positions where the edited model's argmax
is the unedited model's argmax (not capped by what the base model knows).

Retention curve (`spec.curve_every > 0`): inside the scan, after step t when `(t + 1) % curve_every == 0`
or t = T - 1, ES / GS / LS on the model as edited so far, over the rows of steps 0..t ("all") and of
step 0 alone ("first"). `Curve` arrays are `[S]` over the steps of the program; `point` marks the
steps that are curve points (the others hold zeros).
"""

import dataclasses

import flax.struct
import jax
import jax.numpy as jnp

from rledit_jax.jit import program
from rledit_jax.method import edit_step as es
from rledit_jax.method import losses, packing, passes
from rledit_jax.method.spec import Hypernets, Spec

SCORES = {"edit": "ES", "equiv": "GS", "unrel": "LS"}


@flax.struct.dataclass
class Curve:
    point: jax.Array  # [S] bool
    all: dict  # {ES, GS, LS: [S]} on the rows of steps 0..t
    first: dict  # {ES, GS, LS: [S]} on the rows of step 0


@flax.struct.dataclass
class Lifelong:
    scores: dict  # {ES, GS, LS, LS_agreement: scalar}
    rows: dict  # {kind: [T, M, B]} per-row scores of the final model
    kernels: dict  # {site: [d_in, d_out]} the final model's edited kernels
    hypernets: Hypernets  # with the normalisers updated by every eval step
    factors: dict | None  # per step {site: (K [T, N, d_in], C [T, N, d_out])} with spec.keep_factors
    curve: Curve | None  # with spec.curve_every > 0


def _step_rows(spec: Spec, params, kernels, batch, lengths, metric: str):
    """Per-row scores `[M, B]` of one step's kind batch `[M, B, L]` on the model with `kernels`."""
    packed = packing.pack(batch, lengths)
    logits = passes.answer_logits(spec, params, kernels, passes.prefix(spec, params, packed), packed)
    if metric == "token":
        return losses.token_accuracy(logits, packed.labels)
    return losses.new_beats_old(logits, packed.labels, packed.old_labels)


def row_scores(spec: Spec, params, kernels, kind_batch, lengths):
    """Per-row score `[T, M, B]` of a kind batch (packed with `lengths`) on the edited model."""
    return jax.lax.map(lambda batch: _step_rows(spec, params, kernels, batch, lengths, spec.metric), kind_batch)


def agreement_rows(spec: Spec, params, kernels, kind_batch, lengths):
    """Per row `[T, M, B]`: the fraction of answer positions where the argmax under `kernels` is the
    unedited model's argmax."""

    def step(batch):
        packed = packing.pack(batch, lengths)
        hidden = passes.prefix(spec, params, packed)
        before = passes.answer_logits(spec, params, es.base_kernels(spec, params), hidden, packed)
        after = passes.answer_logits(spec, params, kernels, hidden, packed)
        return losses.agreement(after, before, packed.labels)

    return jax.lax.map(step, kind_batch)


def _mean(rows, mask):
    return jnp.sum(jnp.where(mask, rows, 0.0)) / jnp.sum(mask)


def _curve_point(spec: Spec, params, kernels, batches, t):
    """`(all, first)` scores after step t: only steps 0..t are scored (the others are skipped)."""
    out = {"all": {}, "first": {}}
    for kind, name in SCORES.items():
        kind_batch, lengths = getattr(batches, kind), getattr(spec.lengths, kind)
        zeros = jnp.zeros(kind_batch.fact_index.shape[1:], jnp.float32)

        def scored(s, kind_batch=kind_batch, lengths=lengths, zeros=zeros):
            rows = lambda: _step_rows(spec, params, kernels, es.at_step(kind_batch, s), lengths, spec.metric)
            return jax.lax.cond(s <= t, lambda: rows().astype(jnp.float32), lambda: zeros)

        n_steps = kind_batch.fact_index.shape[0]
        rows = jax.lax.map(scored, jnp.arange(n_steps))
        real = kind_batch.fact_index >= 0
        steps = jnp.arange(n_steps)[:, None, None]
        out["all"][name] = _mean(rows, real & (steps <= t))
        out["first"][name] = _mean(rows, real & (steps == 0))
    return out["all"], out["first"]


def edit_steps(spec: Spec, params, hypernets: Hypernets, kernels, batches, steps):
    """Applies the edits of steps `steps` `[S]` in order; returns `(kernels, hypernets', factors, curve)`.

    `batches` holds the whole stream `[T, ...]` (the curve scores every step edited so far).
    """
    n_steps = batches.edit.input_ids.shape[0]
    every = spec.curve_every

    def step(carry, t):
        kernels, hypernets = carry
        kernels, hypernets, factors = es.edit_step(spec, params, hypernets, kernels, es.at_step(batches.edit, t))
        if not every:
            return (kernels, hypernets), (factors, None)
        point = ((t + 1) % every == 0) | (t == n_steps - 1)
        empty = {name: jnp.float32(0.0) for name in SCORES.values()}
        scores = jax.lax.cond(point, lambda: _curve_point(spec, params, kernels, batches, t), lambda: (empty, empty))
        return (kernels, hypernets), (factors, Curve(point=point, all=scores[0], first=scores[1]))

    (kernels, hypernets), (factors, curve) = jax.lax.scan(step, (kernels, hypernets), steps)
    return kernels, hypernets, factors, curve


def edit_sequence(spec: Spec, params, hypernets: Hypernets, batches):
    """Every step's edits from the base kernels; returns `(kernels, hypernets', factors per step)`."""
    steps = jnp.arange(batches.edit.input_ids.shape[0])
    kernels, hypernets, factors, _ = edit_steps(
        dataclasses.replace(spec, curve_every=0), params, hypernets, es.base_kernels(spec, params), batches, steps
    )
    return kernels, hypernets, factors


def final_scores(spec: Spec, params, kernels, batches):
    """`(scores {ES, GS, LS, LS_agreement}, per-row scores {kind: [T, M, B]})` of the edited model."""
    rows, scores = {}, {}
    for kind, name in SCORES.items():
        kind_batch = getattr(batches, kind)
        rows[kind] = row_scores(spec, params, kernels, kind_batch, getattr(spec.lengths, kind))
        scores[name] = _mean(rows[kind], kind_batch.fact_index >= 0)
    agreement = agreement_rows(spec, params, kernels, batches.unrel, spec.lengths.unrel)
    scores["LS_agreement"] = _mean(agreement, batches.unrel.fact_index >= 0)
    return scores, rows


@program(donate=("hypernets",))
def evaluate(spec: Spec, params, hypernets: Hypernets, batches) -> Lifelong:
    """The whole lifelong evaluation as one program. `hypernets` is donated (its normalisers keep
    updating); every step's factors are kept only with `spec.keep_factors` (traces)."""
    steps = jnp.arange(batches.edit.input_ids.shape[0])
    kernels, hypernets, factors, curve = edit_steps(
        spec, params, hypernets, es.base_kernels(spec, params), batches, steps
    )
    scores, rows = final_scores(spec, params, kernels, batches)
    return Lifelong(scores, rows, kernels, hypernets, factors if spec.keep_factors else None, curve)


@program(donate=("hypernets", "kernels"))
def evaluate_steps(spec: Spec, params, hypernets: Hypernets, kernels, batches, steps):
    """`edit_steps` as a program: one segment of an evaluation stopped between steps (`lifelong.py`)."""
    kernels, hypernets, factors, curve = edit_steps(spec, params, hypernets, kernels, batches, steps)
    return kernels, hypernets, factors if spec.keep_factors else None, curve


score = program(final_scores)
