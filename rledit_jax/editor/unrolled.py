"""Gradients through the unrolled edit trajectory (DESIGN.md section 4), memory bounded by T x factors.

The sequence objective is `sum_t loss_t`, where `loss_t` is the step loss of `training.step_loss` on
`W_t + S_t` and `W_{t+1} = W_t + S_t`: every edited matrix depends on the hypernetwork through all
earlier shifts, and so does the KL's "before" distribution `p_{W_t}`. Modes:

- `unrolled`: keys and value-gradients captured at `W_t` are held constant;
- `unrolled_second_order`: they are differentiated too (the value-gradient is itself a gradient, so
  this is second order), and so is everything computed from them, the normaliser statistics
  included: the exact derivative of the sequence loss;
- `stop_carry` (for tests): `W_t` is a constant in each step's loss; the gradient is then the sum of
  the `reference` mode's per-step gradients, unclipped.

The normaliser statistics the sequence starts from are state (constants); within the sequence they
are functions of the captures, so they carry a gradient exactly when the captures do.

Memory. Reverse mode through a plain scan would store every step's carry, i.e. T dense copies of the
edited matrices. Instead the gradient is computed by hand in two scans:

1. forward: run the edits, keeping only each step's shift factors `(K_t [N, d_in], C_t [N, d_out])`
   and the normaliser statistics it started from;
2. backward (reverse scan): rebuild `W_t = W_{t+1} - K_t^T C_t` from the step's output (the update is
   additive), recompute step t under `jax.vjp`, and push the cotangents of `W_{t+1}` and of the
   statistics back to `W_t` and the statistics before the step, while summing the hypernetwork's.

Peak memory is then T x (factors + normaliser statistics) plus one step's activations. Rebuilding
`W_t` by subtraction is exact up to float32 rounding of `W` (one ulp per step), which perturbs the
recomputed step by far less than the gradient's own float32 noise.
"""

import functools

import jax
import jax.numpy as jnp

from rledit_jax.dtypes import working_float
from rledit_jax.editor import edit_step as es
from rledit_jax.editor import losses
from rledit_jax.editor.sites import SiteLayout
from rledit_jax.editor.training import AnswerLengths, EditorHParams, step_loss, window_of, window_weights

MODES = ("unrolled", "unrolled_second_order", "stop_carry")


def step_objective(
    nets,
    kernels,
    *,
    llm_config,
    layout: SiteLayout,
    hp: EditorHParams,
    lengths: AnswerLengths,
    params,
    batches,
    norms,
    t,
    second_order: bool,
):
    """`(loss_t, (W_{t+1}, aux, norms'))` as a function of `(nets, W_t)`: what both scans evaluate.

    `norms` are the statistics before step t.
    """
    captures = es.capture_step(
        llm_config, params, kernels, layout, es.at_step(batches.edit, t), hp.token, lengths.edit
    )
    if not second_order:
        captures = jax.lax.stop_gradient(captures)
    norms = es.update_norms(layout, norms, captures)
    window = (window_of(batches.equiv, t, hp.back_depth), window_of(batches.unrel, t, hp.back_depth))
    positions, _ = losses.answer_positions(window[1].labels, lengths.unrel)
    pre_logits = losses.answer_logits(
        es.forward_kind(llm_config, es.edited_params(llm_config, params, kernels), window[1]), positions
    )
    loss, aux = step_loss(
        nets,
        llm_config=llm_config,
        layout=layout,
        hp=hp,
        params=params,
        kernels=kernels,
        norms=norms,
        captures=captures,
        window=window,
        pre_logits=pre_logits,
        weights=window_weights(t, hp.back_depth, hp.time_decay),
        n_answer=lengths.unrel,
    )
    return loss, (es.apply_factors(kernels, aux["factors"]), aux, norms)


def sequence_grads(
    llm_config, layout: SiteLayout, hp: EditorHParams, lengths: AnswerLengths, mode: str, params, nets, norms, batches
):
    """`(grad of sum_t loss_t w.r.t. nets, norms after the sequence, per-step outputs)`."""
    if mode not in MODES:
        raise ValueError(f"unrolled gradient mode must be one of {MODES}, got {mode!r}")
    objective = functools.partial(
        step_objective,
        llm_config=llm_config,
        layout=layout,
        hp=hp,
        lengths=lengths,
        params=params,
        batches=batches,
        second_order=mode == "unrolled_second_order",
    )

    def forward(carry, t):
        kernels, norms = carry
        loss, (kernels_next, aux, norms_next) = objective(nets, kernels, norms=norms, t=t)
        out = {
            "loss": loss,
            "gen_loss": aux["gen_loss"],
            "loc_loss": aux["loc_loss"],
            "reg": aux["reg"],
            "factors": aux["factors"],
            "norms_before": norms,
        }
        return (kernels_next, norms_next), out

    zeros = functools.partial(jax.tree.map, jnp.zeros_like)
    n_steps = batches.edit.input_ids.shape[0]
    (kernels, norms_after), outputs = jax.lax.scan(
        forward, (es.base_kernels(llm_config, layout, params), norms), jnp.arange(n_steps)
    )

    def backward(carry, xs):
        kernels_next, state_bar, grads = carry
        factors, norms_before, t = xs
        kernels = {s: kernels_next[s] - k.T @ c for s, (k, c) in factors.items()}

        def loss_and_next(nets, kernels, norms):
            loss, (kernels_next, _, norms_next) = objective(nets, kernels, norms=norms, t=t)
            return loss, (kernels_next, norms_next)

        _, vjp = jax.vjp(loss_and_next, nets, kernels, norms_before)
        nets_bar, *state_bar = vjp((jnp.ones((), working_float()), state_bar))
        if mode == "stop_carry":
            state_bar = zeros(state_bar)
        return (kernels, tuple(state_bar), jax.tree.map(jnp.add, grads, nets_bar)), None

    (_, _, grads), _ = jax.lax.scan(
        backward,
        (kernels, (zeros(kernels), zeros(norms_after)), zeros(nets)),
        (outputs["factors"], outputs.pop("norms_before"), jnp.arange(n_steps)),
        reverse=True,
    )
    return grads, norms_after, outputs
