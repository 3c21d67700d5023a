"""From the keys and value-gradients of one edit site to its weight shift (DESIGN.md section 3).

Inputs for site `site_index` of a shape group `(d_in, d_out)`, N rows (answer positions, padded):
  keys         K  [N, d_in]    inputs of the site's linear
  value_grads  G  [N, d_out]   gradients of the loss w.r.t. the site's output
  row_mask        [N] bool     false on padding rows, which contribute nothing

The shift `S` [d_in, d_out] (added to a kernel stored `[d_in, d_out]`) is kept as low-rank factors
`S = K^T @ C` with `K` [N, d_in] (masked rows zeroed) and `C` [N, d_out]; it is never formed in a
compiled program (`edit_step.apply_factors` adds it to a kernel). Two ways to form it from the
network's output, by `Spec.shift` (`FACTORS`): "solve" (RLEdit, MALMEN: `shift_factors`) and "sum"
(MEND: `sum_factors`).
"""

import jax
import jax.numpy as jnp
from jax.scipy.linalg import cho_factor, cho_solve

from rledit_jax.dtypes import working_float
from rledit_jax.method.hypernet import Params, apply_hypernet, site_row
from rledit_jax.method.normalizer import NormState, normalize


def _network_rows(params: Params, norm_state: NormState, keys, value_grads, row_mask, site_index):
    """`(k, k~, g~, valid)`: the masked raw keys [N, d_in], the network's output on the normalised rows
    `[k; g]` split into k~ [N, d_in] and g~ [N, d_out], and the row mask as a column [N, 1]."""
    if keys.ndim != 2 or value_grads.shape[0] != keys.shape[0] or row_mask.shape != keys.shape[:1]:
        raise ValueError(
            f"expected keys [N, d_in], value_grads [N, d_out], row_mask [N]; got {keys.shape}, "
            f"{value_grads.shape}, {row_mask.shape}"
        )
    valid = row_mask[:, None]
    k = jnp.where(valid, keys.astype(working_float()), 0.0)
    g = jnp.where(valid, value_grads.astype(working_float()), 0.0)
    h = apply_hypernet(params, normalize(norm_state, jnp.concatenate([k, g], axis=-1)), site_index)
    k_tilde, g_tilde = jnp.split(h, [k.shape[1]], axis=-1)
    return k, k_tilde, g_tilde, valid


def shift_factors(
    params: Params,
    norm_state: NormState,
    keys: jax.Array,
    value_grads: jax.Array,
    row_mask: jax.Array,
    site_index: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """Returns `(K, C)`, float32 [N, d_in] and [N, d_out], with `S = K^T @ C`.

    DESIGN section 3 "Hypernetwork" and "Shift":
      (k~, g~) = split(hypernet(normalize([k; g])));  d_j = -lr_i * <k_j, k~_j> * g~_j  (raw key k_j)
      S = (K^T K + e^lamda_i I)^-1 K^T D = K^T (K K^T + e^lamda_i I)^-1 D      (push-through identity)
    so C = (K K^T + e^lamda_i I)^-1 D: an N x N SPD solve instead of a d_in x d_in one, and rank S <= N.
    Masked rows of K and D are zero, so they drop out of both forms.
    """
    k, k_tilde, g_tilde, valid = _network_rows(params, norm_state, keys, value_grads, row_mask, site_index)
    coeff = -site_row(params["lr"], site_index) * jnp.sum(k * k_tilde, axis=-1, keepdims=True)
    d = jnp.where(valid, coeff * g_tilde, 0.0)
    # The solve amplifies the Gram matrix's rounding error by its condition number, so the Gram matrix
    # is computed in full float32 even where the default matmul precision is TF32/bf16 passes.
    gram = jnp.matmul(k, k.T, precision=jax.lax.Precision.HIGHEST)
    gram = gram + jnp.exp(site_row(params["lamda"], site_index)) * jnp.eye(k.shape[0], dtype=k.dtype)
    c = cho_solve(cho_factor(gram), d)
    return k, c


def sum_factors(
    params: Params,
    norm_state: NormState,
    keys: jax.Array,
    value_grads: jax.Array,
    row_mask: jax.Array,
    site_index: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """MEND's shift `S = -lr_i * sum_j k~_j g~_j^T` (DESIGN.md section 4b; no solve, `lamda` unused) as
    factors `(K~, -lr_i G~)` [N, d_in], [N, d_out], masked rows zero. Arguments as `shift_factors`'."""
    _, k_tilde, g_tilde, valid = _network_rows(params, norm_state, keys, value_grads, row_mask, site_index)
    lr = site_row(params["lr"], site_index)
    return jnp.where(valid, k_tilde, 0.0), jnp.where(valid, -lr * g_tilde, 0.0)


# `Spec.shift` -> how a site's shift is formed from the network's output.
FACTORS = {"solve": shift_factors, "sum": sum_factors}


def shift_sq_norm(k: jax.Array, c: jax.Array) -> jax.Array:
    """`||K^T C||_F^2 = sum((K K^T) * (C C^T))`, without forming the `d_in x d_out` matrix.

    The Gram matrices are computed in full float32 (HIGHEST), like the solve's, whatever the default
    matmul precision: this norm enters the L2 term and the edit library's reports.
    """
    gram = lambda x: jnp.matmul(x, x.T, precision=jax.lax.Precision.HIGHEST)
    return jnp.sum(gram(k) * gram(c))
