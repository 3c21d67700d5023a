"""Training the hypernetworks over one knowledge sequence as a single `lax.scan` (DESIGN.md section 3).

Per step t (0-based here) of a sequence of T steps, with window depth D = `back_depth`:
capture at `W_t`, update the normalisers, predict `S_t`, and take the step loss on `W_t + S_t`:

    sum_{i<min(t+1, D)} decay^i [ sum_mb CE(equiv_{t-i}) + loc_coef sum_mb KL(p_{W_t} || p_{W_t+S_t})(unrel_{t-i}) ]
      + reg_coef sum_sites ||S_t||_F^2

In `reference` mode the gradient flows only through `S_t` (W_t, K, G are constants); it is added to
an accumulator that is clipped to `max_grad_norm` after every step, and one Adam step follows the
sequence. The window's pre-shift distributions need no extra pass: `p_{W_t}` on `unrel_{t-i}`, i >= 1,
is the post-shift distribution step t-1 computed on it, carried in the scan (its logits at answer
positions, `[D, M, B, A, V]`); only `unrel_t` needs a fresh forward at `W_t`.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from rledit_jax import models
from rledit_jax.dtypes import working_float
from rledit_jax.method import edit_step as es
from rledit_jax.method import losses, shift
from rledit_jax.method.spec import Hypernets, Spec


def clip_accumulated(acc, max_norm: float):
    """torch `clip_grad_norm_` on the accumulator: scale by max_norm / (norm + 1e-6) when below 1.

    Returns the clipped accumulator and its norm before clipping (what `clip_grad_norm_` returns).
    """
    norm = optax.tree.norm(acc)
    scale = jnp.minimum(1.0, max_norm / (norm + 1e-6))
    return jax.tree.map(lambda g: g * scale, acc), norm


def window_weights(t, depth: int, decay: float):
    """`[depth]` time-decay weights of steps t, t-1, ..., t-depth+1 (0 before the sequence start)."""
    weights = decay ** jnp.arange(depth, dtype=working_float())
    return jnp.where(t - jnp.arange(depth) >= 0, weights, 0.0)


def window_of(kind_batch, t, depth):
    """Steps t, t-1, ..., t-depth+1 of a `[T, M, B, L]` kind batch -> `[depth, M, B, L]` (clamped at 0)."""
    idx = jnp.maximum(t - jnp.arange(depth), 0)
    return jax.tree.map(lambda x: jnp.take(x, idx, axis=0), kind_batch)


class Window(NamedTuple):
    """What a step's loss reads of the steps t, t-1, ..., t-D+1 (D = back_depth)."""

    equiv: object  # KindBatch [D, M, B, L]
    unrel: object  # KindBatch [D, M, B, L]
    pre_logits: jax.Array  # [D, M, B, A, V] answer logits on `unrel` before this step's shift
    weights: jax.Array  # [D] time-decay weights, 0 for steps before the sequence start

    @classmethod
    def at(cls, spec: Spec, batches, t, pre_logits) -> "Window":
        depth = spec.hparams.back_depth
        weights = window_weights(t, depth, spec.hparams.time_decay)
        return cls(window_of(batches.equiv, t, depth), window_of(batches.unrel, t, depth), pre_logits, weights)


def step_loss(nets, spec: Spec, params, kernels, norms, captures, window: Window):
    """The step loss of DESIGN.md section 3 on `kernels + S(nets)`, shared by all gradient modes.

    Returns `(loss, aux)`; `aux` holds the loss terms, the shift factors and the post-shift answer
    logits on the window's unrel batches.
    """
    hp = spec.hparams
    factors = es.predict_factors(spec, nets, norms, captures)
    shifted = es.apply_factors(kernels, factors)
    equiv_logits = es.forward_kind(spec.model, models.set_sites(spec.model, params, shifted), window.equiv)
    gen = jnp.sum(window.weights * losses.micro_batch_cross_entropy(equiv_logits, window.equiv.labels).sum(-1))
    _, valid = losses.answer_positions(window.unrel.labels, spec.lengths.unrel)
    post_logits = unrel_answer_logits(spec, params, shifted, window.unrel)
    loc = jnp.sum(window.weights * losses.micro_batch_kl(window.pre_logits, post_logits, valid).sum(-1))
    reg = sum(shift.shift_sq_norm(*f) for f in factors.values())
    loss = gen + hp.loc_coef * loc + hp.reg_coef * reg
    aux = {"gen_loss": gen, "loc_loss": loc, "reg": reg, "factors": factors, "post_logits": post_logits}
    return loss, aux


class SequenceCarry(NamedTuple):
    """What one training step hands the next."""

    kernels: dict  # {site: [d_in, d_out]} the edited matrices W_t
    norms: dict  # {(d_in, d_out): NormState}
    acc: dict  # accumulated, clipped hypernetwork gradient (same pytree as nets)
    prev_logits: jax.Array  # [D, M, B, A, V] post-shift answer logits of the last window's unrel


def initial_carry(spec: Spec, params, hypernets: Hypernets, batches) -> SequenceCarry:
    m, b = batches.unrel.input_ids.shape[1:3]
    shape = (spec.hparams.back_depth, m, b, spec.lengths.unrel, spec.model.vocab_size)
    return SequenceCarry(
        kernels=es.base_kernels(spec, params),
        norms=hypernets.norms,
        acc=jax.tree.map(jnp.zeros_like, hypernets.nets),
        prev_logits=jnp.zeros(shape, working_float()),
    )


def unrel_answer_logits(spec: Spec, params, kernels, unrel):
    """Answer logits `[..., M, B, A, V]` of an unrel kind batch on `params` with the sites' `kernels`."""
    positions, _ = losses.answer_positions(unrel.labels, spec.lengths.unrel)
    edited = models.set_sites(spec.model, params, kernels)
    return losses.answer_logits(es.forward_kind(spec.model, edited, unrel), positions)


def sequence_step(spec: Spec, params, nets, batches, carry: SequenceCarry, t):
    """Training step `t` of the sequence: `(carry', per-step outputs)` (the body of the scan)."""
    captures = es.capture_step(spec, params, carry.kernels, es.at_step(batches.edit, t))
    norms = es.update_norms(spec, carry.norms, captures)
    fresh = unrel_answer_logits(spec, params, carry.kernels, es.at_step(batches.unrel, t))
    window = Window.at(spec, batches, t, jnp.concatenate([fresh[None], carry.prev_logits[:-1]], axis=0))
    (loss, aux), grads = jax.value_and_grad(step_loss, has_aux=True)(
        nets, spec, params, carry.kernels, norms, captures, window
    )
    acc, acc_norm = clip_accumulated(jax.tree.map(jnp.add, carry.acc, grads), spec.hparams.max_grad_norm)
    out = {
        "loss": loss,
        "gen_loss": aux["gen_loss"],
        "loc_loss": aux["loc_loss"],
        "reg": aux["reg"],
        "grad_norm": optax.tree.norm(grads),
        "acc_norm": acc_norm,
        "factors": aux["factors"],
    }
    kernels = es.apply_factors(carry.kernels, aux["factors"])
    return SequenceCarry(kernels, norms, acc, aux["post_logits"]), out


def train_sequence(spec: Spec, params, hypernets: Hypernets, batches):
    """Scans the training sequence; returns `(accumulated clipped grads, hypernets', per-step outputs)`.

    `batches` is a `StepBatches` with leading axis T; `hypernets'` carries the updated normalisers.
    """
    step = lambda carry, t: sequence_step(spec, params, hypernets.nets, batches, carry, t)
    carry = initial_carry(spec, params, hypernets, batches)
    carry, outputs = jax.lax.scan(step, carry, jnp.arange(batches.edit.input_ids.shape[0]))
    return carry.acc, hypernets.replace(norms=carry.norms), outputs
