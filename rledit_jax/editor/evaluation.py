"""Lifelong evaluation (DESIGN.md section 3 "Evaluation"): edit T batches in sequence, then score.

From the base weights, each eval step captures, updates the normalisers, predicts and applies shifts
(no training). On the final model every edited fact is scored per row: token accuracy (zsRE, FEVER) or
CounterFact's new-vs-old logit comparison. ES / GS / LS are the means over the real rows of the edit /
equiv / unrel batches (`fact_index >= 0`).
"""

import jax
import jax.numpy as jnp

from rledit_jax.editor import edit_step as es
from rledit_jax.editor import losses
from rledit_jax.editor.sites import SiteLayout

METRICS = ("token", "counterfact")
SCORES = {"edit": "ES", "equiv": "GS", "unrel": "LS"}


def edit_sequence(llm_config, layout: SiteLayout, token: str, answer_rows: int | None, params, nets, norms, batches):
    """Applies every step's edits in order; returns `(kernels, norms', factors per step)`.

    `answer_rows`: see `edit_step.capture_step`.
    """

    def step(carry, t):
        kernels, norms = carry
        kernels, norms, factors = es.edit_step(
            llm_config, layout, token, params, nets, kernels, norms, es.at_step(batches.edit, t), answer_rows
        )
        return (kernels, norms), factors

    n_steps = batches.edit.input_ids.shape[0]
    (kernels, norms), factors = jax.lax.scan(
        step, (es.base_kernels(llm_config, layout, params), norms), jnp.arange(n_steps)
    )
    return kernels, norms, factors


def row_scores(llm_config, params, kernels, kind_batch, metric: str):
    """Per-row score `[T, M, B]` of a kind batch on the edited model."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    edited = es.edited_params(llm_config, params, kernels)

    def score(batch):
        logits = es.forward_kind(llm_config, edited, batch)
        if metric == "token":
            return losses.token_accuracy(logits, batch.labels)
        return losses.new_beats_old(logits, batch.labels, batch.old_labels)

    return jax.lax.map(score, kind_batch)


def evaluate(
    llm_config,
    layout: SiteLayout,
    token: str,
    metric: str,
    answer_rows: int | None,
    keep_factors: bool,
    params,
    nets,
    norms,
    batches,
):
    """`(scores {ES, GS, LS}, per-row scores {kind: [T, M, B]}, norms', factors per step or None)`.

    Every step's factors are returned only with `keep_factors` (traces); see `epoch.train_epoch`.
    """
    kernels, norms, factors = edit_sequence(llm_config, layout, token, answer_rows, params, nets, norms, batches)
    rows, scores = {}, {}
    for kind, name in SCORES.items():
        kind_batch = getattr(batches, kind)
        rows[kind] = row_scores(llm_config, params, kernels, kind_batch, metric)
        real = kind_batch.fact_index >= 0
        scores[name] = jnp.sum(jnp.where(real, rows[kind], 0.0)) / jnp.sum(real)
    return scores, rows, norms, factors if keep_factors else None


evaluate_jit = jax.jit(evaluate, static_argnums=(0, 1, 2, 3, 4, 5))
