"""Packing, the frozen prefix, the answer-only head and the entry-by-entry window against the plain path.

The plain path: full forwards of the right-padded `[M, B, L]` batches from the token ids, logits at
every position, the whole window at once, differentiated by autodiff. The cached paths must give the
same numbers up to float32 reordering.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rledit_jax import data, models, probes
from rledit_jax.method import edit_step as es
from rledit_jax.method import losses, packing, passes, sequence
from rledit_jax.method.packing import Lengths
from rledit_jax.method.sites import make_layout
from rledit_jax.method.spec import HParams, Spec, init_hypernets

SITES = ("transformer.h.2.mlp.fc_out", "transformer.h.3.mlp.fc_in")  # two shapes; the prefix is blocks 0-1


@pytest.fixture(scope="module")
def problem():
    config = models.GPTJConfig(
        vocab_size=data.TINY_VOCAB_SIZE, n_positions=64, n_embd=32, n_layer=4, n_head=4, rotary_dim=4, n_inner=48
    )
    params = models.init_params(config, jax.random.PRNGKey(0))
    facts = data.make_synthetic_facts(5 * 5, 0)
    batches = data.build_step_batches(
        data.load_tokenizer(None), facts, data.draw_stream(len(facts), 5, 5, 0), batch_size=2, max_length=64
    )
    hp = HParams(8, 2, 0.3, 1e-3, 0.6, 1e-2, 1.0, 0.9, 3, "ans")
    spec = Spec(model=config, layout=make_layout(config, SITES), hparams=hp, lengths=Lengths.of(batches))
    hypernets = init_hypernets(jax.random.PRNGKey(1), spec.layout, hp)
    leaves, tree = jax.tree.flatten(hypernets.nets)
    keys = jax.random.split(jax.random.PRNGKey(2), len(leaves))
    nets = tree.unflatten([x + 0.1 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])
    return spec, params, hypernets.replace(nets=nets), batches


def close(ours, plain, rel=2e-6):
    ours, plain = np.asarray(ours, np.float64), np.asarray(plain, np.float64)
    np.testing.assert_allclose(ours, plain, rtol=0, atol=rel * max(np.abs(plain).max(), 1e-30))


def plain_logits(spec, params, kernels, kind_batch):
    """Logits `[M, B, L, V]` of a step's kind batch by a full forward of its padded rows."""
    m, b, l = kind_batch.input_ids.shape
    edited = models.set_sites(spec.model, params, kernels)
    logits = models.forward(
        spec.model, edited, kind_batch.input_ids.reshape(-1, l), kind_batch.attention_mask.reshape(-1, l)
    )
    return logits.reshape(m, b, l, -1)


def test_pack_keeps_every_real_token_in_order(problem):
    spec, _, _, batches = problem
    kind = jax.tree.map(lambda x: x[3], batches.unrel)
    p = packing.pack(kind, spec.lengths.unrel)
    mask = np.asarray(kind.attention_mask).astype(bool)
    real = np.asarray(kind.input_ids)[mask]
    n = len(real)
    assert spec.lengths.unrel.tokens >= n
    np.testing.assert_array_equal(np.asarray(p.tokens)[:n], real)
    ids, pos = np.asarray(p.segments.ids[0]), np.asarray(p.segments.positions[0])
    assert (ids[n:] == -1).all() and (ids[:n] >= 0).all()
    rows, cols = np.nonzero(mask.reshape(-1, mask.shape[-1]))
    np.testing.assert_array_equal(ids[:n], rows)
    np.testing.assert_array_equal(pos[:n], cols)
    # The answer slots hold the answer tokens; the labels read there are the batch's.
    tokens = np.asarray(p.tokens)
    valid = np.asarray(p.answer_valid)
    labels = np.asarray(p.labels)
    assert valid.sum() == (np.asarray(kind.labels) != data.IGNORE).sum()
    # A label is the next token, so the token at slot+1 of a non-final answer position is its label.
    slots = np.asarray(p.answer_slots)
    inner = valid & np.roll(valid, -1, axis=-1)
    inner[..., -1] = False
    np.testing.assert_array_equal(tokens[slots[inner] + 1], labels[inner])


@pytest.mark.parametrize("kind", ["edit", "equiv", "unrel"])
def test_answer_logits_from_the_prefix_equal_the_full_forward(problem, kind):
    spec, params, _, batches = problem
    kernels = es.base_kernels(spec, params)
    kernels = {s: k + 0.01 * jnp.ones_like(k) for s, k in kernels.items()}  # edited sites
    step = jax.tree.map(lambda x: x[2], getattr(batches, kind))
    p = packing.pack(step, getattr(spec.lengths, kind))
    ours = passes.answer_logits(spec, params, kernels, passes.prefix(spec, params, p), p)
    positions, valid = losses.answer_positions(step.labels, getattr(spec.lengths, kind).answers)
    plain = losses.answer_logits(plain_logits(spec, params, kernels, step), positions)
    close(np.where(valid[..., None], ours, 0.0), np.where(valid[..., None], plain, 0.0))


@pytest.mark.parametrize("token", ["ans", "all"])
def test_capture_equals_the_padded_capture(problem, token):
    spec, params, _, batches = problem
    spec = dataclasses.replace(spec, hparams=dataclasses.replace(spec.hparams, token=token))
    kernels = es.base_kernels(spec, params)
    step = jax.tree.map(lambda x: x[1], batches.edit)
    ours = es.capture_step(spec, params, kernels, step)
    m, b, l = step.input_ids.shape

    def loss_fn(logits):
        return jnp.sum(losses.micro_batch_cross_entropy(logits.reshape(m, b, l, -1), step.labels))

    _, keys, grads = probes.site_io(
        spec.model,
        params,
        spec.layout.names,
        step.input_ids.reshape(-1, l),
        step.attention_mask.reshape(-1, l),
        loss_fn,
    )
    for site in spec.layout.names:
        k, g = keys[site].reshape(m, b, l, -1), grads[site].reshape(m, b, l, -1)
        mask = ours[site].row_mask
        if token == "ans":
            positions, _ = losses.answer_positions(step.labels, spec.lengths.edit.answers)
            pick = lambda x, positions=positions: jnp.take_along_axis(x, positions[..., None], axis=2).reshape(
                m, -1, x.shape[-1]
            )
        else:
            pick = lambda x: x.reshape(m, b * l, -1)
        close(ours[site].keys, jnp.where(mask[..., None], pick(k), 0.0))
        close(ours[site].value_grads, jnp.where(mask[..., None], pick(g), 0.0))


def plain_step_loss(nets, spec, params, kernels, norms, captures, batches, t, pre_logits):
    """DESIGN.md section 3's step loss with every window entry's full forward (entries before step 0
    weigh 0), differentiated by autodiff."""
    hp = spec.hparams
    factors = es.predict_factors(spec, nets, norms, captures)
    shifted = es.apply_factors(kernels, factors)
    gen = loc = 0.0
    for i in range(hp.back_depth):
        s = max(t - i, 0)
        weight = hp.time_decay**i * (t - i >= 0)
        equiv = jax.tree.map(lambda x, s=s: x[s], batches.equiv)
        unrel = jax.tree.map(lambda x, s=s: x[s], batches.unrel)
        gen = gen + weight * jnp.sum(
            losses.micro_batch_cross_entropy(plain_logits(spec, params, shifted, equiv), equiv.labels)
        )
        positions, valid = losses.answer_positions(unrel.labels, spec.lengths.unrel.answers)
        post = losses.answer_logits(plain_logits(spec, params, shifted, unrel), positions)
        loc = loc + weight * jnp.sum(losses.micro_batch_kl(pre_logits[i], post, valid))
    reg = sum(sequence.shift.shift_sq_norm(*f) for f in factors.values())
    return gen + hp.loc_coef * loc + hp.reg_coef * reg


@pytest.mark.parametrize("t", [1, 4])  # a partial window (2 of 3 entries) and a full one
def test_windowed_step_loss_equals_the_plain_loss(problem, t):
    spec, params, hypernets, batches = problem
    kernels = es.base_kernels(spec, params)
    captures = es.capture_step(spec, params, kernels, jax.tree.map(lambda x: x[t], batches.edit))
    norms = es.update_norms(spec, hypernets.norms, captures)
    rings = sequence.Rings.empty(spec, params, batches)
    for s in range(t + 1):
        rings = rings.push(spec, params, batches, s)
    rng = np.random.default_rng(0)
    m, b = batches.unrel.input_ids.shape[1:3]
    shape = (spec.hparams.back_depth, m, b, spec.lengths.unrel.answers, spec.model.vocab_size)
    pre_logits = jnp.asarray(rng.normal(size=shape), jnp.float32)
    window = sequence.Window(batches, jnp.int32(t), rings, pre_logits)
    (loss, _), grads = jax.jit(jax.value_and_grad(sequence.step_loss, has_aux=True), static_argnums=1)(
        hypernets.nets, spec, params, kernels, norms, captures, window
    )
    plain, plain_grads = jax.jit(jax.value_and_grad(plain_step_loss), static_argnums=(1, 7))(
        hypernets.nets, spec, params, kernels, norms, captures, batches, t, pre_logits
    )
    close(loss, plain)
    jax.tree.map(lambda a, b: close(a, b, 1e-5), grads, plain_grads)
