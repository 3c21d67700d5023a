"""Training the hypernetworks over one knowledge sequence as a single `lax.scan` (DESIGN.md section 3).

Per step t (0-based here) of a sequence of T steps, with window depth D = `back_depth`:
capture at `W_t`, update the normalisers, predict `S_t`, and take the step loss on `W_t + S_t`:

    sum_{i<min(t+1, D)} decay^i [ sum_mb CE(equiv_{t-i}) + loc_coef sum_mb KL(p_{W_t} || p_{W_t+S_t})(unrel_{t-i}) ]
      + reg_coef sum_sites ||S_t||_F^2

In `reference` mode the gradient flows only through `S_t` (W_t, K, G are constants); it is added to
an accumulator that is clipped to `max_grad_norm` after every step, and one Adam step follows the
sequence. The window's pre-shift distributions need no extra pass: `p_{W_t}` on `unrel_{t-i}`, i >= 1,
is the post-shift distribution step t-1 computed on it, carried in the scan (its logits at answer positions,
`[D, M, B, A, V]`); only `unrel_t` needs a fresh forward at `W_t`.
"""

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from rledit_jax.dtypes import working_float
from rledit_jax.editor import edit_step as es
from rledit_jax.editor import hypernet, losses, normalizer
from rledit_jax.editor.sites import SiteLayout


@dataclasses.dataclass(frozen=True)
class EditorHParams:
    """The `config.editor` fields the jitted programs depend on (static, hashable)."""

    rank: int
    n_blocks: int
    lr: float
    meta_lr: float
    loc_coef: float
    reg_coef: float
    max_grad_norm: float
    time_decay: float
    back_depth: int
    token: str

    @classmethod
    def from_config(cls, editor_config) -> "EditorHParams":
        return cls(**{f.name: editor_config[f.name] for f in dataclasses.fields(cls)})


def init_nets(rng, layout: SiteLayout, hp: EditorHParams):
    groups = layout.groups
    keys = jax.random.split(rng, len(groups))
    return {
        shape: hypernet.init_hypernet(k, *shape, len(names), hp.rank, hp.n_blocks, hp.lr)
        for k, (shape, names) in zip(keys, groups.items())
    }


def init_norms(layout: SiteLayout):
    return {shape: normalizer.init(sum(shape)) for shape in layout.groups}


def make_optimizer(hp: EditorHParams):
    # torch.optim.Adam's defaults, as the reference uses.
    return optax.adam(hp.meta_lr, b1=0.9, b2=0.999, eps=1e-8)


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


def shift_sq_norm(k, c):
    """||K^T C||_F^2 = sum((K K^T) * (C C^T)), without forming the d_in x d_out matrix."""
    return jnp.sum((k @ k.T) * (c @ c.T))


def step_loss(
    nets, *, llm_config, layout, hp, params, kernels, norms, captures, window, pre_logits, weights, n_answer: int
):
    """The step loss of DESIGN.md section 3 on `kernels + S(nets)`, shared by all gradient modes.

    `window`: the equiv/unrel kind batches of steps t..t-D+1 (`[D, M, B, L]`), `weights` `[D]` the
    time-decay weights (0 for steps before the sequence start), `pre_logits` `[D, M, B, A, V]` the
    pre-shift answer logits on the window's unrel batches. Returns `(loss, aux)`.
    """
    factors = es.predict_factors(layout, nets, norms, captures)
    shifted = es.edited_params(llm_config, params, es.apply_factors(kernels, factors))
    equiv, unrel = window
    gen = jnp.sum(
        weights * losses.micro_batch_cross_entropy(es.forward_kind(llm_config, shifted, equiv), equiv.labels).sum(-1)
    )
    positions, valid = losses.answer_positions(unrel.labels, n_answer)
    post_logits = losses.answer_logits(es.forward_kind(llm_config, shifted, unrel), positions)
    loc = jnp.sum(weights * losses.micro_batch_kl(pre_logits, post_logits, valid).sum(-1))
    reg = sum(shift_sq_norm(*f) for f in factors.values())
    loss = gen + hp.loc_coef * loc + hp.reg_coef * reg
    aux = {"gen_loss": gen, "loc_loss": loc, "reg": reg, "factors": factors, "post_logits": post_logits}
    return loss, aux


@dataclasses.dataclass(frozen=True)
class AnswerLengths:
    """Longest answer, in tokens, of the edit and unrel kinds of a run's batches (static sizes).

    `edit` bounds the rows captured per example (`token="ans"`); `unrel` is the answer axis of the
    locality KL.
    """

    edit: int
    unrel: int

    @classmethod
    def of(cls, batches) -> "AnswerLengths":
        longest = lambda kind: max(1, int((kind.labels != losses.IGNORE).sum(-1).max()))
        return cls(edit=longest(batches.edit), unrel=longest(batches.unrel))


class SequenceCarry(NamedTuple):
    """What one training step hands the next."""

    kernels: dict  # {site: [d_in, d_out]} the edited matrices W_t
    norms: dict  # {(d_in, d_out): NormState}
    acc: dict  # accumulated, clipped hypernetwork gradient (same pytree as nets)
    prev_logits: jax.Array  # [D, M, B, A, V] post-shift answer logits of the last window's unrel


def initial_carry(
    llm_config, layout: SiteLayout, hp: EditorHParams, lengths: AnswerLengths, params, nets, norms, batches
) -> SequenceCarry:
    m, b = batches.unrel.input_ids.shape[1:3]
    return SequenceCarry(
        kernels=es.base_kernels(llm_config, layout, params),
        norms=norms,
        acc=jax.tree.map(jnp.zeros_like, nets),
        prev_logits=jnp.zeros((hp.back_depth, m, b, lengths.unrel, llm_config.vocab_size), working_float()),
    )


def sequence_step(
    llm_config,
    layout: SiteLayout,
    hp: EditorHParams,
    lengths: AnswerLengths,
    params,
    nets,
    batches,
    carry: SequenceCarry,
    t,
):
    """Training step `t` of the sequence: `(carry', per-step outputs)` (the body of the scan)."""
    depth = hp.back_depth
    captures = es.capture_step(
        llm_config, params, carry.kernels, layout, es.at_step(batches.edit, t), hp.token, lengths.edit
    )
    norms = es.update_norms(layout, carry.norms, captures)
    unrel_t = es.at_step(batches.unrel, t)
    positions, _ = losses.answer_positions(unrel_t.labels, lengths.unrel)
    fresh = losses.answer_logits(
        es.forward_kind(llm_config, es.edited_params(llm_config, params, carry.kernels), unrel_t), positions
    )
    pre_logits = jnp.concatenate([fresh[None], carry.prev_logits[:-1]], axis=0)
    weights = window_weights(t, depth, hp.time_decay)
    window = (window_of(batches.equiv, t, depth), window_of(batches.unrel, t, depth))
    (loss, aux), grads = jax.value_and_grad(step_loss, has_aux=True)(
        nets,
        llm_config=llm_config,
        layout=layout,
        hp=hp,
        params=params,
        kernels=carry.kernels,
        norms=norms,
        captures=captures,
        window=window,
        pre_logits=pre_logits,
        weights=weights,
        n_answer=lengths.unrel,
    )
    acc, acc_norm = clip_accumulated(jax.tree.map(jnp.add, carry.acc, grads), hp.max_grad_norm)
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


def train_sequence(
    llm_config, layout: SiteLayout, hp: EditorHParams, lengths: AnswerLengths, params, nets, norms, batches
):
    """Scans the training sequence; returns `(accumulated clipped grads, norms', per-step outputs)`.

    `batches` is a `StepBatches` with leading axis T.
    """
    static = (llm_config, layout, hp, lengths)
    step = functools.partial(sequence_step, *static, params, nets, batches)
    carry = initial_carry(*static, params, nets, norms, batches)
    carry, outputs = jax.lax.scan(step, carry, jnp.arange(batches.edit.input_ids.shape[0]))
    return carry.acc, carry.norms, outputs
