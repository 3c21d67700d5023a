"""The push-through shift against the direct d_in x d_in solve, and its gradient against torch."""

import jax
import jax.numpy as jnp
import numpy as np
import torch

from rledit_jax.method import shift
from tests.method.helpers import predict_shift
from tests.method.np_oracle import EPS32, as_tuple, np_direct_shift, random_norm, random_params

D_IN, D_OUT, N_SITES = 7, 5, 3


def shift_inputs(seed, rows, valid):
    rng = np.random.default_rng(seed)
    keys = rng.normal(size=(rows, D_IN))
    value_grads = rng.normal(size=(rows, D_OUT))
    mask = np.zeros(rows, bool)
    mask[rng.choice(rows, valid, replace=False)] = True
    return keys, value_grads, mask


def test_push_through_shift_matches_direct_solve_per_site():
    params = random_params(8, D_IN, D_OUT, N_SITES, rank=4, n_blocks=2)
    norm = random_norm(8, D_IN + D_OUT)
    keys, value_grads, mask = shift_inputs(8, rows=6, valid=4)
    predict = jax.jit(predict_shift)
    shifts = []
    for site in range(N_SITES):
        got = predict(
            params,
            norm,
            jnp.asarray(keys, jnp.float32),
            jnp.asarray(value_grads, jnp.float32),
            jnp.asarray(mask),
            site,
        )
        want = np_direct_shift(params, as_tuple(norm), keys[mask], value_grads[mask], site)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
        shifts.append(want)
    # Sites differ only in their lr / lamda / scale / shift rows, and each one's own row is used.
    assert not np.allclose(shifts[0], shifts[1], rtol=1e-2)


def test_shift_is_linear_in_the_site_lr():
    params = random_params(9, D_IN, D_OUT, N_SITES, rank=4, n_blocks=2)
    norm = random_norm(9, D_IN + D_OUT)
    keys, value_grads, mask = (jnp.asarray(a) for a in shift_inputs(9, rows=5, valid=5))
    base = predict_shift(params, norm, keys, value_grads, mask, 1)
    tripled = dict(params, lr=params["lr"].at[1].multiply(3.0))
    got = predict_shift(tripled, norm, keys, value_grads, mask, 1)
    np.testing.assert_allclose(got, 3 * base, rtol=1e-5)
    np.testing.assert_array_equal(
        predict_shift(tripled, norm, keys, value_grads, mask, 0),
        predict_shift(params, norm, keys, value_grads, mask, 0),
    )


def test_shift_factors_rank_and_masking():
    params = random_params(10, D_IN, D_OUT, N_SITES, rank=4, n_blocks=2)
    norm = random_norm(10, D_IN + D_OUT)
    keys, value_grads, mask = shift_inputs(10, rows=8, valid=3)
    k, c = shift.shift_factors(params, norm, keys, value_grads, mask, 2)
    assert k.shape == (8, D_IN) and c.shape == (8, D_OUT)
    np.testing.assert_array_equal(k, np.where(mask[:, None], keys, 0.0).astype(np.float32))
    np.testing.assert_array_equal(c[~mask], 0.0)
    s = np.asarray(k.T @ c, np.float64)
    want = np_direct_shift(params, as_tuple(norm), keys[mask], value_grads[mask], 2)
    np.testing.assert_allclose(s, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
    assert np.linalg.matrix_rank(s, tol=1e-5 * np.abs(s).max()) == 3


def test_masked_rows_are_irrelevant():
    params = random_params(11, D_IN, D_OUT, N_SITES, rank=4, n_blocks=2)
    norm = random_norm(11, D_IN + D_OUT)
    keys, value_grads, mask = shift_inputs(11, rows=6, valid=4)
    predict = jax.jit(predict_shift)
    valid = mask[:, None]
    clean = predict(params, norm, np.where(valid, keys, 0.0), np.where(valid, value_grads, 0.0), mask, 0)
    garbage = predict(params, norm, np.where(valid, keys, np.nan), np.where(valid, value_grads, 1e30), mask, 0)
    np.testing.assert_array_equal(garbage, clean)
    only_valid = predict(params, norm, keys[mask], value_grads[mask], np.ones(4, bool), 0)
    np.testing.assert_allclose(clean, only_valid, rtol=1e-5, atol=1e-6 * np.abs(only_valid).max())


def torch_shift(params, norm, keys, value_grads, site):
    """Float64 torch version of DESIGN section 3 (direct d_in x d_in solve, clamp(min=0) relu)."""
    p = jax.tree.map(lambda x: torch.tensor(np.asarray(x, np.float64), requires_grad=True), params)
    mean, std = (torch.tensor(np.asarray(x, np.float64)) for x in (norm.mean, norm.std))
    k, g = torch.tensor(keys), torch.tensor(value_grads)
    h = (torch.cat([k, g], -1) - mean) / (std + EPS32)
    for block in p["blocks"]:
        pre = h @ block["A"] @ block["B"] + block["bias"]
        h = h + block["scale"][site] * pre.clamp(min=0) + block["shift"][site]
    k_tilde, g_tilde = h.split([D_IN, D_OUT], -1)
    d = -p["lr"][site] * (k * k_tilde).sum(-1, keepdim=True) * g_tilde
    s = torch.linalg.solve(k.T @ k + p["lamda"][site].exp() * torch.eye(D_IN, dtype=torch.float64), k.T @ d)
    return p, s


def test_shift_gradient_matches_torch():
    params = random_params(12, D_IN, D_OUT, N_SITES, rank=4, n_blocks=2)
    norm = random_norm(12, D_IN + D_OUT)
    keys, value_grads, mask = shift_inputs(12, rows=6, valid=4)
    weights = np.random.default_rng(12).normal(size=(D_IN, D_OUT))
    loss = lambda p: jnp.sum(weights * predict_shift(p, norm, keys, value_grads, mask, 1))
    grads = jax.jit(jax.grad(loss))(params)
    torch_params, s = torch_shift(params, norm, keys[mask], value_grads[mask], 1)
    (torch.tensor(weights) * s).sum().backward()
    want = jax.tree.map(lambda t: t.grad.numpy(), torch_params)
    for got_leaf, want_leaf in zip(jax.tree.leaves(grads), jax.tree.leaves(want)):
        np.testing.assert_allclose(got_leaf, want_leaf, rtol=2e-4, atol=2e-5 * np.abs(want_leaf).max())
    assert np.abs(want["lamda"][1]) > 0 and np.abs(want["lr"][1]) > 0
