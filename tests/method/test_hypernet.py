"""The hypernetwork against float64 numpy and torch `clamp` blocks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from rledit_jax.method import hypernet
from tests.method.np_oracle import np_hypernet, random_params


def test_hypernet_init_is_identity():
    params = hypernet.init_hypernet(jax.random.key(0), 3, 4, n_sites=2, rank=5, n_blocks=3, lr=1e-6)
    h = jax.random.normal(jax.random.key(1), (6, 7))
    np.testing.assert_array_equal(hypernet.apply_hypernet(params, h, 1), h)
    assert len(params["blocks"]) == 3
    assert params["blocks"][0]["A"].shape == (7, 5) and params["blocks"][0]["scale"].shape == (2, 7)
    np.testing.assert_array_equal(params["lr"], np.float32(1e-6))
    np.testing.assert_array_equal(params["lamda"], 0.0)


def test_hypernet_forward_matches_numpy():
    params = random_params(4, 3, 4, n_sites=3, rank=5, n_blocks=2)
    h = np.random.default_rng(4).normal(size=(6, 7))
    apply = jax.jit(hypernet.apply_hypernet)
    params64 = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
    for site in range(3):
        got = apply(params, jnp.asarray(h, jnp.float32), site)
        np.testing.assert_allclose(got, np_hypernet(params64, h, site), rtol=1e-5, atol=1e-5)


def test_hypernet_out_of_range_site_is_nan():
    params = hypernet.init_hypernet(jax.random.key(0), 2, 2, n_sites=2, rank=3, n_blocks=1, lr=1.0)
    assert np.all(np.isnan(jax.jit(hypernet.apply_hypernet)(params, jnp.ones((1, 4)), 2)))


def torch_block_grads(params, h, weights, site):
    """Gradients of sum(weights * hypernet(h)) with torch clamp(min=0), as in the reference."""
    leaves = {k: torch.tensor(np.asarray(v), requires_grad=True) for k, v in params["blocks"][0].items()}
    x = torch.tensor(np.asarray(h))
    pre = x @ leaves["A"] @ leaves["B"] + leaves["bias"]
    out = x + leaves["scale"][site] * pre.clamp(min=0) + leaves["shift"][site]
    (out * torch.tensor(np.asarray(weights))).sum().backward()
    return {k: v.grad.numpy() for k, v in leaves.items()}


@pytest.mark.parametrize("at_init", [True, False])
def test_block_gradient_matches_torch_clamp(at_init):
    if at_init:
        params = hypernet.init_hypernet(jax.random.key(5), 3, 4, n_sites=2, rank=5, n_blocks=1, lr=1.0)
    else:
        params = random_params(5, 3, 4, n_sites=2, rank=5, n_blocks=1)
    h = jax.random.normal(jax.random.key(6), (6, 7))
    weights = jax.random.normal(jax.random.key(7), (6, 7))
    grads = jax.grad(lambda p: jnp.sum(weights * hypernet.apply_hypernet(p, h, 1)))(params)
    expected = torch_block_grads(params, h, weights, 1)
    for name, want in expected.items():
        np.testing.assert_allclose(grads["blocks"][0][name], want, rtol=1e-5, atol=1e-5)
    if at_init:  # relu0'(0) = 1: B learns from the identity init (jax.nn.relu would give exactly 0).
        assert np.abs(grads["blocks"][0]["B"]).min() > 0
