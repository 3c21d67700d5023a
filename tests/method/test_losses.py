"""Losses and metrics on hand-checked cases (DESIGN.md section 3 "Evaluation")."""

import jax.numpy as jnp
import numpy as np

from rledit_jax.method import losses

X = -100


def one_hot_logits(argmax_ids, vocab=5, high=3.0):
    return jnp.asarray(np.eye(vocab)[np.asarray(argmax_ids)] * high, jnp.float32)


def test_token_accuracy_counts_answer_tokens_only():
    # Row 0: answer at positions 2, 3 -> argmax hits 1 of 2. Row 1: one answer token, hit.
    logits = one_hot_logits([[0, 0, 4, 1], [2, 3, 0, 0]])
    labels = jnp.array([[X, X, 4, 2], [X, 3, X, X]])
    np.testing.assert_allclose(losses.token_accuracy(logits, labels), [0.5, 1.0])


def test_counterfact_new_beats_old_aligned_and_truncated():
    logits = jnp.zeros((1, 4, 5)).at[0, 1, 2].set(1.0).at[0, 1, 3].set(0.5)  # pos 1: new 2 beats old 3
    logits = logits.at[0, 2, 4].set(0.2).at[0, 2, 1].set(0.9)  # pos 2: new 4 loses to old 1
    labels = jnp.array([[X, 2, 4, 0]])
    old = jnp.array([[X, 3, 1, X]])  # the old answer is one token shorter: position 3 does not count
    np.testing.assert_allclose(losses.new_beats_old(logits, labels, old), [0.5])
    # A tie is not a success.
    np.testing.assert_allclose(losses.new_beats_old(jnp.zeros((1, 4, 5)), labels, old), [0.0])


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


def test_answer_positions_in_order():
    labels = jnp.array([[X, 5, X, 7, 8], [X, X, X, X, 1]])
    pos, valid = losses.answer_positions(labels, 3)
    np.testing.assert_array_equal(pos[0], [1, 3, 4])
    np.testing.assert_array_equal(valid, [[True, True, True], [True, False, False]])
    assert pos[1, 0] == 4
