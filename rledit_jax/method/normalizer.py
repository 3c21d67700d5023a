"""Running mean/std of the hypernetwork input, carried as state (DESIGN.md section 3 "Normaliser").

One `NormState` per hypernetwork (i.e. per site weight shape) over rows of width `d_in + d_out`
(the concatenation `[k; g]`). Layout, all float32:

  n     []       number of rows merged so far
  mean  [width]  running mean
  m2    [width]  running sum "M" of DESIGN section 3 (called `var` in reference checkpoints)
  std   [width]  sqrt(M / (n - 1 + eps))

The state is never differentiated and never reset; `update` merges one micro-batch of rows.
"""

import flax.struct
import jax
import jax.numpy as jnp

from rledit_jax.dtypes import working_float

EPS = float(jnp.finfo(jnp.float32).eps)


@flax.struct.dataclass
class NormState:
    n: jax.Array
    mean: jax.Array
    m2: jax.Array
    std: jax.Array


def init(width: int) -> NormState:
    """All-zero statistics for rows of `width` features (each field its own buffer: they are donated)."""
    zeros = lambda: jnp.zeros((width,), working_float())
    return NormState(n=jnp.zeros((), working_float()), mean=zeros(), m2=zeros(), std=zeros())


def update(state: NormState, x: jax.Array, row_mask: jax.Array) -> NormState:
    """Merges the rows of `x` [R, width] where `row_mask` [R] (bool) is true.

    With m valid rows (reference semantics, DESIGN section 3):
      delta = mean_b - mean;  mean += m*delta/(n+m);  M += m*var_b + n*m*delta^2/(n+m);
      n += m;  std = sqrt(M/(n-1+eps))
    where var_b is the unbiased variance of the valid rows (so m*var_b is not their sum of squares).

    Divergences from the reference (DESIGN "Known reference quirks"):
      * m = 1: var_b := 0 (the reference's unbiased variance of one row is NaN, forever after);
      * m = 0: the state is returned unchanged (no division by zero; std is not recomputed either).
    Masked rows have no influence, even when they hold inf/NaN.
    """
    valid = row_mask[:, None]
    x = jnp.where(valid, x.astype(working_float()), 0.0)
    m = jnp.sum(row_mask, dtype=working_float())
    mean_b = jnp.sum(x, axis=0) / jnp.maximum(m, 1.0)
    sq_dev = jnp.sum(jnp.where(valid, (x - mean_b) ** 2, 0.0), axis=0)
    # Unbiased variance; for m = 1 the sum of squared deviations is exactly 0, so var_b = 0.
    var_b = sq_dev / jnp.maximum(m - 1.0, 1.0)

    n = state.n + m
    safe_n = jnp.maximum(n, 1.0)  # Differs from n only when m = n = 0, a branch discarded below.
    delta = mean_b - state.mean
    m2 = state.m2 + m * var_b + state.n * m * delta**2 / safe_n
    merged = NormState(
        n=n,
        mean=state.mean + m * delta / safe_n,
        m2=m2,
        std=_sqrt0(m2 / (safe_n - 1.0 + EPS)),
    )
    return jax.tree.map(lambda new, old: jnp.where(m > 0, new, old), merged, state)


def _sqrt0(x):
    """sqrt with gradient 0 (not inf) at 0: a column without spread (e.g. after a single row) must not
    turn the second-order trajectory gradient into NaN."""
    positive = x > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1.0)), 0.0)


def normalize(state: NormState, x: jax.Array) -> jax.Array:
    """(x - mean) / (std + eps), broadcast over the leading axes of `x` [..., width]."""
    return (x - state.mean) / (state.std + EPS)
