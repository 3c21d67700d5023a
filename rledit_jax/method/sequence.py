"""Training the hypernetworks over one knowledge sequence as a single `lax.scan` (DESIGN.md section 3).

Per step t (0-based here) of a sequence of T steps, with window depth D = `back_depth`:
capture at `W_t`, update the normalisers, predict `S_t`, and take the step loss on `W_t + S_t`:

    sum_{i<min(t+1, D)} decay^i [ sum_mb CE(equiv_{t-i}) + loc_coef sum_mb KL(p_{W_t} || p_{W_t+S_t})(unrel_{t-i}) ]
      + reg_coef sum_sites ||S_t||_F^2

In `reference` mode the gradient flows only through `S_t` (W_t, K, G are constants); it is added to
an accumulator that is clipped to `max_grad_norm` after every step, and one Adam step follows the
sequence.

How a step is computed (DESIGN.md section 4b):
- Every pass runs on packed batches (`packing.py`) from the frozen prefix, with the LM head at answer
  positions only (`passes.py`). The prefixes of the window's equiv and unrel batches live in rings of D
  entries (`Rings`, slot `s % D` for step s): each batch's prefix is computed once, at its own step.
- The window runs only its `min(t+1, D)` real entries, one after the other (a loop with a traced trip
  count); each entry's forward and backward give its loss terms and the dense gradient of its loss
  w.r.t. the shifted kernels, summed into `G = dL/d(W_t + S_t)` (`[d_in, d_out]` per site). The
  hypernetworks' gradient is then the vjp of the shift with `G`: the step loss carries the surrogate
  `<G, W_t + S_t(nets)>` (value-neutral), so no entry's activations outlive it.
- The window's pre-shift distributions need no extra pass: `p_{W_t}` on `unrel_{t-i}`, i >= 1, is the
  post-shift distribution step t-1 computed on it, carried in the scan (answer logits `[D, M, B, A,
  V]`); only `unrel_t` needs a fresh pass at `W_t`.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from rledit_jax.dtypes import working_float
from rledit_jax.method import edit_step as es
from rledit_jax.method import losses, packing, passes, shift
from rledit_jax.method.spec import Hypernets, Spec


def clip_accumulated(acc, max_norm: float):
    """torch `clip_grad_norm_` on the accumulator: scale by max_norm / (norm + 1e-6) when below 1.

    Returns the clipped accumulator and its norm before clipping (what `clip_grad_norm_` returns).
    """
    norm = optax.tree.norm(acc)
    scale = jnp.minimum(1.0, max_norm / (norm + 1e-6))
    return jax.tree.map(lambda g: g * scale, acc), norm


class Rings(NamedTuple):
    """The prefixes of the last D steps' equiv and unrel batches; step s sits in slot `s % D`."""

    equiv: jax.Array  # [D, 1, P_equiv, d] (token ids [D, 1, P] when the first edited block is block 0)
    unrel: jax.Array

    @classmethod
    def empty(cls, spec: Spec, params, batches) -> "Rings":
        def zeros(kind):
            step = es.at_step(getattr(batches, kind), 0)
            shape = jax.eval_shape(
                lambda p, b: passes.prefix(spec, p, packing.pack(b, getattr(spec.lengths, kind))), params, step
            )
            return jnp.zeros((spec.hparams.back_depth, *shape.shape), shape.dtype)

        return cls(equiv=zeros("equiv"), unrel=zeros("unrel"))

    def push(self, spec: Spec, params, batches, s) -> "Rings":
        """The rings with step `s`'s prefixes in slot `s % D`."""

        def put(ring, kind):
            packed = packing.pack(es.at_step(getattr(batches, kind), s), getattr(spec.lengths, kind))
            return jax.lax.dynamic_update_index_in_dim(ring, passes.prefix(spec, params, packed), s % ring.shape[0], 0)

        return Rings(equiv=put(self.equiv, "equiv"), unrel=put(self.unrel, "unrel"))


class Window(NamedTuple):
    """What a step's loss reads of the steps t, t-1, ..., t-D+1 (D = back_depth)."""

    batches: object  # StepBatches [T, ...]
    t: jax.Array  # the step
    rings: Rings  # holding the prefixes of the window's steps
    # [D, M, B, A, V] answer logits on the unrel batches before this step's shift (reference mode),
    # or None: computed at the kernels before the shift, and differentiated (unrolled modes).
    pre_logits: jax.Array | None


def entry_terms(spec: Spec, params, kernels, shifted, window: Window, i):
    """Entry `i` of the window (step `t - i`): `(gen_i, loc_i, post_logits [M, B, A, V], dL_i/d shifted,
    dL_i/d kernels or None)`, with `L_i = decay^i (gen_i + loc_coef * loc_i)` its weighted loss."""
    hp, lengths = spec.hparams, spec.lengths
    depth = hp.back_depth
    with_before = window.pre_logits is None
    s = window.t - i
    equiv = packing.pack(es.at_step(window.batches.equiv, s), lengths.equiv)
    unrel = packing.pack(es.at_step(window.batches.unrel, s), lengths.unrel)
    equiv_h, unrel_h = window.rings.equiv[s % depth], window.rings.unrel[s % depth]
    weight = jnp.asarray(hp.time_decay, working_float()) ** i

    def entry_loss(shifted, kernels):
        logits = passes.answer_logits(spec, params, shifted, equiv_h, equiv)
        gen_i = jnp.sum(losses.micro_batch_cross_entropy(logits, equiv.labels))
        post = passes.answer_logits(spec, params, shifted, unrel_h, unrel)
        pre = passes.answer_logits(spec, params, kernels, unrel_h, unrel) if with_before else window.pre_logits[i]
        loc_i = jnp.sum(losses.micro_batch_kl(pre, post, unrel.answer_valid))
        return weight * (gen_i + hp.loc_coef * loc_i), (gen_i, loc_i, post)

    argnums = (0, 1) if with_before else 0
    (_, (gen_i, loc_i, post)), grads = jax.value_and_grad(entry_loss, argnums, has_aux=True)(shifted, kernels)
    g_shifted, g_kernels = grads if with_before else (grads, None)
    return weight * gen_i, weight * loc_i, post, g_shifted, g_kernels


def window_terms(spec: Spec, params, kernels, shifted, window: Window):
    """The window's loss terms and their gradients, entry by entry over its real entries.

    Returns `(gen, loc, post_logits [D, M, B, A, V], G_shifted, G_kernels)`: the time-decayed sums of
    the micro-batch CEs and KLs, the post-shift answer logits per entry (zero past the real ones), and
    the dense gradients of `gen + loc_coef * loc` w.r.t. `shifted` and (when `pre_logits` is None)
    w.r.t. `kernels` (else None). Its inputs are constants for autodiff: see `step_loss`.
    """
    depth = spec.hparams.back_depth
    m, b = window.batches.unrel.input_ids.shape[1:3]
    f = working_float()
    add = lambda acc, g: None if acc is None else jax.tree.map(jnp.add, acc, g)

    def entry(i, carry):
        gen, loc, post_all, g_shifted, g_kernels = carry
        gen_i, loc_i, post, dg_shifted, dg_kernels = entry_terms(spec, params, kernels, shifted, window, i)
        post_all = jax.lax.dynamic_update_index_in_dim(post_all, post, i, 0)
        return gen + gen_i, loc + loc_i, post_all, add(g_shifted, dg_shifted), add(g_kernels, dg_kernels)

    zeros = lambda tree: jax.tree.map(jnp.zeros_like, tree)
    post0 = jnp.zeros((depth, m, b, spec.lengths.unrel.answers, spec.model.vocab_size), f)
    g_kernels = zeros(kernels) if window.pre_logits is None else None
    init = (jnp.zeros((), f), jnp.zeros((), f), post0, zeros(shifted), g_kernels)
    return jax.lax.fori_loop(0, jnp.minimum(window.t + 1, depth), entry, init)


def step_loss(nets, spec: Spec, params, kernels, norms, captures, window: Window):
    """The step loss of DESIGN.md section 3 on `kernels + S(nets)`, shared by all gradient modes.

    Its value is the loss; its gradient w.r.t. `nets` (and `kernels`, for the unrolled modes) is the
    loss's: the window's terms enter through the surrogate `<G, kernels + S> (+ <G_kernels, kernels>)`
    with the dense gradients of `window_terms`, the L2 term directly. Returns `(loss, aux)`; `aux`
    holds the loss terms, the shift factors and the post-shift answer logits on the window's unrel
    batches.
    """
    hp = spec.hparams
    factors = es.predict_factors(spec, nets, norms, captures)
    shifted = es.apply_factors(kernels, factors)
    sg = jax.lax.stop_gradient
    gen, loc, post_logits, g_shifted, g_kernels = window_terms(spec, params, sg(kernels), sg(shifted), window)
    surrogate = sum(jnp.vdot(g_shifted[s], shifted[s]) for s in shifted)
    if g_kernels is not None:
        surrogate = surrogate + sum(jnp.vdot(g_kernels[s], kernels[s]) for s in kernels)
    reg = sum(shift.shift_sq_norm(*f) for f in factors.values())
    loss = gen + hp.loc_coef * loc + hp.reg_coef * reg + (surrogate - sg(surrogate))
    aux = {"gen_loss": gen, "loc_loss": loc, "reg": reg, "factors": factors, "post_logits": post_logits}
    return loss, aux


class SequenceCarry(NamedTuple):
    """What one training step hands the next."""

    kernels: dict  # {site: [d_in, d_out]} the edited matrices W_t
    norms: dict  # {(d_in, d_out): NormState}
    acc: dict  # accumulated, clipped hypernetwork gradient (same pytree as nets)
    prev_logits: jax.Array  # [D, M, B, A, V] post-shift answer logits of the last window's unrel
    rings: Rings


def initial_carry(spec: Spec, params, hypernets: Hypernets, batches) -> SequenceCarry:
    m, b = batches.unrel.input_ids.shape[1:3]
    shape = (spec.hparams.back_depth, m, b, spec.lengths.unrel.answers, spec.model.vocab_size)
    return SequenceCarry(
        kernels=es.base_kernels(spec, params),
        norms=hypernets.norms,
        acc=jax.tree.map(jnp.zeros_like, hypernets.nets),
        prev_logits=jnp.zeros(shape, working_float()),
        rings=Rings.empty(spec, params, batches),
    )


def sequence_step(spec: Spec, params, nets, batches, carry: SequenceCarry, t):
    """Training step `t` of the sequence: `(carry', per-step outputs)` (the body of the scan)."""
    captures = es.capture_step(spec, params, carry.kernels, es.at_step(batches.edit, t))
    norms = es.update_norms(spec, carry.norms, captures)
    rings = carry.rings.push(spec, params, batches, t)
    unrel_t = packing.pack(es.at_step(batches.unrel, t), spec.lengths.unrel)
    depth = spec.hparams.back_depth
    fresh = passes.answer_logits(spec, params, carry.kernels, rings.unrel[t % depth], unrel_t)
    window = Window(batches, t, rings, jnp.concatenate([fresh[None], carry.prev_logits[:-1]], axis=0))
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
    return SequenceCarry(kernels, norms, acc, aux["post_logits"], rings), out


def train_sequence(spec: Spec, params, hypernets: Hypernets, batches):
    """Scans the training sequence; returns `(accumulated clipped grads, hypernets', per-step outputs)`.

    `batches` is a `StepBatches` with leading axis T; `hypernets'` carries the updated normalisers.
    """
    step = lambda carry, t: sequence_step(spec, params, hypernets.nets, batches, carry, t)
    carry = initial_carry(spec, params, hypernets, batches)
    carry, outputs = jax.lax.scan(step, carry, jnp.arange(batches.edit.input_ids.shape[0]))
    return carry.acc, hypernets.replace(norms=carry.norms), outputs
