"""The running normaliser against the float64 merge formula of DESIGN.md section 3."""

import jax
import jax.numpy as jnp
import numpy as np

from rledit_jax.method import normalizer
from tests.method.np_oracle import EPS32, as_tuple, np_merge, random_norm


def test_masked_merges_match_float64_formula():
    rng = np.random.default_rng(0)
    width, rows = 5, 6
    update = jax.jit(normalizer.update)
    state = normalizer.init(width)
    expected = (0.0, np.zeros(width), np.zeros(width), np.zeros(width))
    for valid_count in (4, 2, 6, 3, 5):
        x = rng.normal(2.0, 3.0, size=(rows, width))
        mask = np.zeros(rows, bool)
        mask[rng.choice(rows, valid_count, replace=False)] = True
        garbage = np.where(mask[:, None], x, np.array([np.nan, np.inf, -np.inf, 1e30, 0.0]))
        state = update(state, jnp.asarray(garbage, jnp.float32), jnp.asarray(mask))
        expected = np_merge(expected, x[mask])
        for got, want in zip(as_tuple(state), expected):
            np.testing.assert_allclose(got, want, rtol=2e-6)


def test_running_mean_and_m2_over_batches_of_at_least_two_rows():
    rng = np.random.default_rng(1)
    width = 4
    state = normalizer.init(width)
    seen, batch_vars = [], []
    for valid_count in (2, 5, 3, 7):
        x = rng.normal(-1.0, 2.0, size=(8, width))
        mask = np.arange(8) < valid_count
        state = normalizer.update(state, jnp.asarray(x, jnp.float32), jnp.asarray(mask))
        seen.append(x[mask])
        batch_vars.append(x[mask].var(0, ddof=1))
    everything = np.concatenate(seen)
    np.testing.assert_allclose(state.n, len(everything))
    np.testing.assert_allclose(state.mean, everything.mean(0), rtol=1e-6, atol=1e-6)
    # m*var_b instead of the batch's sum of squares adds exactly one var_b per batch to M.
    total_sq = np.sum((everything - everything.mean(0)) ** 2, 0)
    np.testing.assert_allclose(state.m2, total_sq + np.sum(batch_vars, 0), rtol=1e-6)


def test_single_row_merge_has_zero_batch_variance():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 4))
    x32 = jnp.asarray(x, jnp.float32)
    state = normalizer.update(normalizer.init(4), x32, jnp.array([False, True, False]))
    np.testing.assert_array_equal(state.n, 1.0)
    np.testing.assert_allclose(state.mean, x[1], rtol=1e-6)
    np.testing.assert_array_equal(state.m2, 0.0)
    np.testing.assert_array_equal(state.std, 0.0)
    expected = np_merge(as_tuple(state), x[2:3])
    state = normalizer.update(state, x32, jnp.array([False, False, True]))
    for got, want in zip(as_tuple(state), expected):
        assert np.all(np.isfinite(got))
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_empty_merge_leaves_state_unchanged():
    update = jax.jit(normalizer.update)
    x = jnp.full((3, 4), jnp.nan)
    none = jnp.zeros(3, bool)
    fresh = normalizer.init(4)
    for before in (fresh, normalizer.update(fresh, jnp.arange(12.0).reshape(3, 4), jnp.ones(3, bool))):
        after = update(before, x, none)
        jax.tree.map(np.testing.assert_array_equal, after, before)


def test_normalize():
    state = random_norm(3, 6)
    x = np.random.default_rng(30).normal(size=(2, 6))
    expected = (x - np.asarray(state.mean, np.float64)) / (np.asarray(state.std, np.float64) + EPS32)
    np.testing.assert_allclose(normalizer.normalize(state, jnp.asarray(x, jnp.float32)), expected, rtol=1e-6)
