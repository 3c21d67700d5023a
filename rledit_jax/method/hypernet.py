"""The RLEdit hypernetwork of one site weight shape `(d_in, d_out)` (DESIGN.md section 3 "Hypernetwork").

All sites of a shape share one network; site `i` of the group selects its own rows of the per-site
tables. With width = d_in + d_out, the params pytree (all in the working float, float32) is

  {"blocks": [{"A":     [width, rank],
               "B":     [rank, width],
               "bias":  [width],
               "scale": [n_sites, width],
               "shift": [n_sites, width]}, ...],   # a list of n_blocks dicts, applied in order
   "lr":    [n_sites],                             # per-site step size of the value difference
   "lamda": [n_sites]}                             # per-site log ridge (spelled as in the reference)

A block maps `h` [N, width] to `h + scale_i * relu0(h @ A @ B + bias) + shift_i`.
"""

from typing import Any

import jax
import jax.numpy as jnp

from rledit_jax.dtypes import working_float

Params = dict[str, Any]  # Layout in the module docstring.


def init_hypernet(key: jax.Array, d_in: int, d_out: int, n_sites: int, rank: int, n_blocks: int, lr: float) -> Params:
    """A ~ N(0, 1), B = 0, bias = 0, scale = 1, shift = 0, lr = `lr`, lamda = 0: the identity map."""
    width = d_in + d_out
    f = working_float()
    blocks = [
        {
            "A": jax.random.normal(k, (width, rank), f),
            "B": jnp.zeros((rank, width), f),
            "bias": jnp.zeros((width,), f),
            "scale": jnp.ones((n_sites, width), f),
            "shift": jnp.zeros((n_sites, width), f),
        }
        for k in jax.random.split(key, n_blocks)
    ]
    return {
        "blocks": blocks,
        "lr": jnp.full((n_sites,), lr, f),
        "lamda": jnp.zeros((n_sites,), f),
    }


def relu0(x: jax.Array) -> jax.Array:
    """max(x, 0) with gradient 1 at exactly 0, like torch `clamp(min=0)`.

    At init every pre-activation is exactly 0 (B = 0, bias = 0); with `jax.nn.relu` (gradient 0 there)
    B, bias and shift would never learn (DESIGN "Known reference quirks").
    """
    return jnp.where(x >= 0, x, 0.0)


def site_row(table: jax.Array, site_index: jax.Array) -> jax.Array:
    """Row `site_index` (a traced int) of a per-site table; an out-of-range index yields NaN, not a clamp."""
    return jnp.take(table, site_index, axis=0, mode="fill", fill_value=jnp.nan)


def apply_hypernet(params: Params, h: jax.Array, site_index: jax.Array) -> jax.Array:
    """Runs the blocks on `h` [N, width] for site `site_index` of the group; returns [N, width]."""
    for block in params["blocks"]:
        pre = h @ block["A"] @ block["B"] + block["bias"]
        h = h + site_row(block["scale"], site_index) * relu0(pre) + site_row(block["shift"], site_index)
    return h
