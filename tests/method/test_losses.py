"""Losses and metrics on hand-checked cases (DESIGN.md section 3 "Evaluation")."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rledit_jax.method import losses, packing

X = -100


def one_hot_logits(argmax_ids, vocab=5, high=3.0):
    return jnp.asarray(np.eye(vocab)[np.asarray(argmax_ids)] * high, jnp.float32)


def test_token_accuracy_counts_answer_tokens_only():
    # Row 0: answer at positions 2, 3 -> argmax hits 1 of 2. Row 1: one answer token, hit.
    logits = one_hot_logits([[0, 0, 4, 1], [2, 3, 0, 0]])
    labels = jnp.array([[X, X, 4, 2], [X, 3, X, X]])
    np.testing.assert_allclose(losses.token_accuracy(logits, labels), [0.5, 1.0])


def test_agreement_with_the_unedited_argmax():
    # Row 0: argmaxes after (1, 2, 0) vs before (1, 0, 0) at answer positions 0-2: 2 of 3 agree.
    # Row 1: only position 2 is an answer; after 2, before 2: 1 of 1. Labels are not compared.
    after = jax.nn.one_hot(jnp.array([[1, 2, 0], [0, 1, 2]]), 3)
    before = jax.nn.one_hot(jnp.array([[1, 0, 0], [1, 1, 2]]), 3) * 2.0
    labels = jnp.array([[2, 2, 2], [-100, -100, 0]])
    np.testing.assert_allclose(losses.agreement(after, before, labels), [2 / 3, 1.0])


def test_counterfact_new_beats_old_counts_where_both_are_set():
    logits = jnp.zeros((1, 4, 5)).at[0, 1, 2].set(1.0).at[0, 1, 3].set(0.5)  # pos 1: new 2 beats old 3
    logits = logits.at[0, 2, 4].set(0.2).at[0, 2, 1].set(0.9)  # pos 2: new 4 loses to old 1
    labels = jnp.array([[X, 2, 4, 0]])
    old = jnp.array([[X, 3, 1, X]])  # position 3 is not compared
    np.testing.assert_allclose(losses.new_beats_old(logits, labels, old), [0.5])
    # A tie is not a success.
    np.testing.assert_allclose(losses.new_beats_old(jnp.zeros((1, 4, 5)), labels, old), [0.0])


def test_counterfact_score_is_the_references_succ_ratios():
    """Two micro-batches `[M=2, B=2, L=6]` scored by the reference's formula, written out by hand: cut the
    micro-batch's padded labels and old labels (0-padded to the longest old row) to the shorter of their
    two widths; a position counts where both are set; divide by the answer tokens left after the cut."""
    v = 8
    # Micro-batch 0: row 0 = prompt 2 tokens, new answer (1, 2, 3), old answer (4): old row [X, 4] padded
    # with 0; row 1 = prompt 3 tokens, new (5), old (6, 7, 1). Widths: labels 4, old 5 -> both cut to 4.
    # Micro-batch 1: one row, prompt 2, new (1, 2, 3, 4), old (5): widths 5 and 2 -> cut to 2.
    mask = np.zeros((2, 2, 6), np.int32)
    mask[0, 0, :4], mask[0, 1, :3], mask[1, 0, :5] = 1, 1, 1
    labels = np.full((2, 2, 6), X)
    labels[0, 0, 1:4], labels[0, 1, 2], labels[1, 0, 1:5] = (1, 2, 3), 5, (1, 2, 3, 4)
    old = np.full((2, 2, 6), X)
    old[0, 0, 1:5], old[0, 1, 2:5], old[1, 0, 1] = (4, 0, 0, 0), (6, 7, 1), 5
    logits = np.zeros((2, 2, 6, v), np.float32)
    logits[0, 0, 1, 1] = 1.0  # new 1 beats old 4
    logits[0, 0, 2, 0] = 1.0  # new 2 loses to the padding id 0
    logits[0, 0, 3, 3] = 1.0  # new 3 beats 0
    logits[0, 1, 2, 6] = 1.0  # new 5 loses to old 6
    logits[1, 0, 1, 1] = 1.0  # new 1 beats old 5; positions 2-4 fall past the cut
    compared = packing.compared_old(jnp.asarray(mask), jnp.asarray(old))
    np.testing.assert_array_equal(compared[0, 0], [X, 4, 0, 0, X, X])
    np.testing.assert_array_equal(compared[1, 0], [X, 5, X, X, X, X])
    got = losses.new_beats_old(jnp.asarray(logits), jnp.asarray(labels), compared)
    np.testing.assert_allclose(got, [[2 / 3, 0.0], [1.0, 0.0]])


def test_micro_batch_cross_entropy_is_a_mean_per_micro_batch():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 2, 3, 7))  # [M, B, L, V]
    labels = np.array([[[X, 1, 2], [X, X, 6]], [[X, X, X], [0, X, X]]])
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    mb0 = -(logp[0, 0, 1, 1] + logp[0, 0, 2, 2] + logp[0, 1, 2, 6]) / 3
    mb1 = -logp[1, 1, 0, 0]
    got = losses.micro_batch_cross_entropy(jnp.asarray(logits, jnp.float32), jnp.asarray(labels))
    np.testing.assert_allclose(got, [mb0, mb1], rtol=1e-6)


def test_kl_matches_float64_definition_even_for_close_distributions():
    rng = np.random.default_rng(1)
    before = rng.normal(size=(1, 2, 3, 50)) * 4  # [M, B, A, V]
    for scale in (1.0, 1e-3):
        after = before + scale * rng.normal(size=before.shape)
        p = np.exp(before - np.log(np.exp(before).sum(-1, keepdims=True)))
        logq = after - np.log(np.exp(after).sum(-1, keepdims=True))
        kl = (p * (np.log(p) - logq)).sum(-1)
        valid = np.array([[[True, True, False], [True, False, False]]])
        want = kl[valid].mean()
        got = losses.micro_batch_kl(
            jnp.asarray(before, jnp.float32), jnp.asarray(after, jnp.float32), jnp.asarray(valid)
        )
        np.testing.assert_allclose(got, [want], rtol=1e-4 if scale == 1.0 else 2e-3)


def float64_kl(before, after):
    """KL(softmax(before) || softmax(after)) over the last axis, by log-softmax in float64."""
    before, after = np.asarray(before, np.float64), np.asarray(after, np.float64)
    logp = before - np.logaddexp.reduce(before, axis=-1, keepdims=True)
    logq = after - np.logaddexp.reduce(after, axis=-1, keepdims=True)
    return (np.exp(logp) * (logp - logq)).sum(-1)


@pytest.mark.parametrize("move", [1e-4, 1e-3, 1e-2, 1.0, 30.0, 88.0, 100.0, 1e3])
def test_kl_is_finite_and_accurate_for_any_logit_move(move):
    """Per position, moves of `move` logits over the whole vocabulary and on one token (up or down)
    against float64: relative error at float32 rounding; the tolerance's absolute floor is the float64
    log-softmax's own rounding (~1e-16 * log V), which the tiniest single-token KLs (~1e-17) fall under."""
    rng = np.random.default_rng(0)
    before = (rng.normal(size=(2, 100, 1, 50)) * 4).astype(np.float32)  # [M, B, A, V]
    after = before + (move * rng.normal(size=before.shape)).astype(np.float32)
    one_token = np.eye(50, dtype=np.float32)[rng.integers(0, 50, (100, 1))] * np.float32(move)
    after[1] = before[1] + np.where(np.arange(100)[:, None, None] % 2, 1, -1) * one_token
    want = float64_kl(before, after)  # [M, B, A]
    kl = jax.jit(
        jax.vmap(lambda b, a: losses.micro_batch_kl(b[None, None], a[None, None], jnp.ones((1, 1, 1), bool))[0])
    )
    got = np.asarray(kl(before.reshape(-1, 1, 50), after.reshape(-1, 1, 50))).reshape(want.shape)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-13)
    valid = np.ones(before.shape[:-1], bool)
    mean = losses.micro_batch_kl(jnp.asarray(before), jnp.asarray(after), jnp.asarray(valid))
    np.testing.assert_allclose(mean, want.mean(axis=(1, 2)), rtol=1e-5, atol=1e-13)
    grad = jax.grad(lambda a: losses.micro_batch_kl(jnp.asarray(before), a, jnp.asarray(valid)).sum())(
        jnp.asarray(after)
    )
    assert np.isfinite(np.asarray(grad)).all()


def test_answer_positions_in_order():
    labels = jnp.array([[X, 5, X, 7, 8], [X, X, X, X, 1]])
    pos, valid = losses.answer_positions(labels, 3)
    np.testing.assert_array_equal(pos[0], [1, 3, 4])
    np.testing.assert_array_equal(valid, [[True, True, True], [True, False, False]])
    assert pos[1, 0] == 4
