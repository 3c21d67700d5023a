"""Gradients through the unrolled edit trajectory (DESIGN.md section 4), memory bounded by T x factors.

The sequence objective is `sum_t loss_t`, where `loss_t` is the step loss of `sequence.step_loss` on
`W_t + S_t` and `W_{t+1} = W_t + S_t`: every edited matrix depends on the hypernetwork through all
earlier shifts, and so does the KL's "before" distribution `p_{W_t}`. Modes (`spec.gradient`):

- `unrolled`: keys and value-gradients captured at `W_t` are held constant;
- `unrolled_second_order`: they are differentiated too (the value-gradient is itself a gradient, so
  this is second order), and so is everything computed from them, the normaliser statistics
  included: the exact derivative of the sequence loss.

The normaliser statistics the sequence starts from are state (constants); within the sequence they
are functions of the captures, so they carry a gradient exactly when the captures do.

Memory. Reverse mode through a plain scan would store every step's carry, i.e. T dense copies of the
edited matrices. Instead the gradient is computed by hand in two scans:

1. forward: run the edits, keeping only each step's shift factors `(K_t [N, d_in], C_t [N, d_out])`
   and the normaliser statistics it started from;
2. backward (reverse scan): rebuild `W_t = W_{t+1} - K_t^T C_t` from the step's output (the update is
   additive), recompute step t under `jax.vjp`, and push the cotangents of `W_{t+1}` and of the
   statistics back to `W_t` and the statistics before the step, while summing the hypernetwork's.
   The rings of window prefixes (`sequence.Rings`) run backwards too: moving from step t+1 to t, the
   slot of step t+1 takes step t+1-D's prefix, so every batch's prefix is computed once per scan.

Peak memory is then T x (factors + normaliser statistics) plus one step's activations. Rebuilding
`W_t` by subtraction is exact up to float32 rounding of `W` (one ulp per step), which perturbs the
recomputed step by far less than the gradient's own float32 noise.
"""

import functools

import jax
import jax.numpy as jnp

from rledit_jax.dtypes import working_float
from rledit_jax.method import edit_step as es
from rledit_jax.method import sequence
from rledit_jax.method.spec import Hypernets, Spec

MODES = ("unrolled", "unrolled_second_order")


def step_objective(nets, kernels, spec: Spec, params, batches, norms, rings, t):
    """`(loss_t, (W_{t+1}, aux, norms'))` as a function of `(nets, W_t)`: what both scans evaluate.

    `norms` are the statistics before step t; `rings` hold the prefixes of the window's steps.
    """
    captures = es.capture_step(spec, params, kernels, es.at_step(batches.edit, t))
    if spec.gradient != "unrolled_second_order":
        captures = jax.lax.stop_gradient(captures)
    norms = es.update_norms(spec, norms, captures)
    window = sequence.Window(batches, t, rings, pre_logits=None)
    loss, aux = sequence.step_loss(nets, spec, params, kernels, norms, captures, window)
    return loss, (es.apply_factors(kernels, aux["factors"]), aux, norms)


def forward_trajectory(spec: Spec, params, hypernets: Hypernets, batches):
    """The forward scan: `(W_T, norms after the sequence, rings after it, per-step outputs)`; the outputs
    hold each step's loss terms, shift factors and the normaliser statistics it started from."""

    def forward(carry, t):
        kernels, norms, rings = carry
        rings = rings.push(spec, params, batches, t)
        loss, (kernels_next, aux, norms_next) = step_objective(
            hypernets.nets, kernels, spec, params, batches, norms, rings, t
        )
        out = {"loss": loss, **{k: aux[k] for k in ("gen_loss", "loc_loss", "reg", "factors")}, "norms_before": norms}
        return (kernels_next, norms_next, rings), out

    n_steps = batches.edit.input_ids.shape[0]
    init = (es.base_kernels(spec, params), hypernets.norms, sequence.Rings.empty(spec, params, batches))
    (kernels, norms, rings), outputs = jax.lax.scan(forward, init, jnp.arange(n_steps))
    return kernels, norms, rings, outputs


def sequence_grads(spec: Spec, params, hypernets: Hypernets, batches):
    """`(grad of sum_t loss_t w.r.t. the nets, hypernets with the normalisers after the sequence,
    per-step outputs)`."""
    if spec.gradient not in MODES:
        raise ValueError(f"unrolled gradient mode must be one of {MODES}, got {spec.gradient!r}")
    kernels, norms_after, rings, outputs = forward_trajectory(spec, params, hypernets, batches)
    zeros = functools.partial(jax.tree.map, jnp.zeros_like)
    n_steps, depth = batches.edit.input_ids.shape[0], spec.hparams.back_depth

    def backward(carry, xs):
        kernels_next, state_bar, grads, rings = carry
        factors, norms_before, t = xs
        kernels = {s: kernels_next[s] - k.T @ c for s, (k, c) in factors.items()}
        # The rings held steps t+1 .. t+2-D; step t's window needs t .. t+1-D in their place.
        oldest = t + 1 - depth
        rings = jax.lax.cond(
            (t + 1 < n_steps) & (oldest >= 0), lambda r: r.push(spec, params, batches, oldest), lambda r: r, rings
        )

        def loss_and_next(nets, kernels, norms):
            loss, (kernels_next, _, norms_next) = step_objective(nets, kernels, spec, params, batches, norms, rings, t)
            return loss, (kernels_next, norms_next)

        _, vjp = jax.vjp(loss_and_next, hypernets.nets, kernels, norms_before)
        nets_bar, *state_bar = vjp((jnp.ones((), working_float()), state_bar))
        return (kernels, tuple(state_bar), jax.tree.map(jnp.add, grads, nets_bar), rings), None

    (_, _, grads, _), _ = jax.lax.scan(
        backward,
        (kernels, (zeros(kernels), zeros(norms_after)), zeros(hypernets.nets), rings),
        (outputs["factors"], outputs.pop("norms_before"), jnp.arange(n_steps)),
        reverse=True,
    )
    return grads, hypernets.replace(norms=norms_after), outputs
