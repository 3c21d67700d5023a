"""Float64 numpy implementations of DESIGN.md section 3 (normaliser merge, hypernetwork, direct shift)
and random inputs for them: the oracles of the method's unit tests.
"""

import jax
import jax.numpy as jnp
import numpy as np

from rledit_jax.method import normalizer

EPS32 = float(np.finfo(np.float32).eps)


def np_merge(stats, rows):
    """DESIGN section 3 merge of the (valid) `rows` into (n, mean, m2, std), in float64."""
    n, mean, m2, std = stats
    m = len(rows)
    if m == 0:
        return stats
    var_b = rows.var(0, ddof=1) if m > 1 else np.zeros_like(mean)
    delta = rows.mean(0) - mean
    n_new = n + m
    mean = mean + m * delta / n_new
    m2 = m2 + m * var_b + n * m * delta**2 / n_new
    return n_new, mean, m2, np.sqrt(m2 / (n_new - 1 + EPS32))


def np_hypernet(params, h, site):
    for block in params["blocks"]:
        pre = h @ block["A"] @ block["B"] + block["bias"]
        h = h + block["scale"][site] * np.maximum(pre, 0.0) + block["shift"][site]
    return h


def np_direct_shift(params, stats, keys, value_grads, site):
    """S = (K^T K + e^lamda I)^-1 K^T D over the valid rows only, in float64."""
    params = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
    _, mean, _, std = (np.asarray(s, np.float64) for s in stats)
    d_in = keys.shape[1]
    h = (np.concatenate([keys, value_grads], 1) - mean) / (std + EPS32)
    out = np_hypernet(params, h, site)
    k_tilde, g_tilde = out[:, :d_in], out[:, d_in:]
    d = -params["lr"][site] * np.sum(keys * k_tilde, 1, keepdims=True) * g_tilde
    gram = keys.T @ keys + np.exp(params["lamda"][site]) * np.eye(d_in)
    return np.linalg.solve(gram, keys.T @ d)


def random_params(seed, d_in, d_out, n_sites, rank, n_blocks):
    """Hypernetwork params with every leaf random (B, bias, scale, shift, lr, lamda per site)."""
    rng = np.random.default_rng(seed)
    width = d_in + d_out
    blocks = [
        {
            "A": rng.normal(size=(width, rank)),
            "B": rng.normal(size=(rank, width)) / rank,
            "bias": 0.3 * rng.normal(size=width),
            "scale": 1 + 0.3 * rng.normal(size=(n_sites, width)),
            "shift": 0.3 * rng.normal(size=(n_sites, width)),
        }
        for _ in range(n_blocks)
    ]
    params = {"blocks": blocks, "lr": rng.uniform(0.5, 2.0, n_sites), "lamda": rng.uniform(-1, 1, n_sites)}
    return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)


def random_norm(seed, width):
    rng = np.random.default_rng(seed)
    return normalizer.NormState(
        n=jnp.float32(17.0),
        mean=jnp.asarray(rng.normal(size=width), jnp.float32),
        m2=jnp.asarray(rng.uniform(1, 2, width), jnp.float32),
        std=jnp.asarray(rng.uniform(0.5, 2, width), jnp.float32),
    )


def as_tuple(state):
    return tuple(np.asarray(x, np.float64) for x in (state.n, state.mean, state.m2, state.std))
