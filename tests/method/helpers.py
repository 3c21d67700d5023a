"""Test-only reference computations built from the method's public pieces."""

import dataclasses

import jax
import jax.numpy as jnp

from rledit_jax.jit import program
from rledit_jax.method import shift, unrolled
from rledit_jax.method.spec import HParams

# The trajectory-gradient tests' hyperparameters: no clipping (a plain sum of gradients), a window of 2.
UNROLLED_HP = HParams(
    rank=8,
    n_blocks=2,
    lr=0.05,
    meta_lr=1e-3,
    loc_coef=0.6,
    reg_coef=1e-2,
    max_grad_norm=1e9,
    time_decay=0.9,
    back_depth=2,
    token="ans",
)


def predict_shift(params, norm_state, keys, value_grads, row_mask, site_index):
    """The dense shift `S = K^T @ C` `[d_in, d_out]` of `shift.shift_factors`."""
    k, c = shift.shift_factors(params, norm_state, keys, value_grads, row_mask, site_index)
    return k.T @ c


@program
def stop_carry_grads(spec, params, hypernets, batches):
    """`sum_t d loss_t / d nets` with `W_t` and the statistics before step t held constant.

    The sum of the `reference` mode's per-step gradients, unclipped (the "stop_carry" mode of the
    torch oracle): the trajectory's own gradient without what flows between steps.
    """
    spec = dataclasses.replace(spec, gradient="unrolled")
    kernels, _, outputs = unrolled.forward_trajectory(spec, params, hypernets, batches)

    def backward(carry, xs):
        kernels_next, grads = carry
        factors, norms_before, t = xs
        kernels = {s: kernels_next[s] - k.T @ c for s, (k, c) in factors.items()}
        step_loss = lambda nets: unrolled.step_objective(nets, kernels, spec, params, batches, norms_before, t)[0]
        return (kernels, jax.tree.map(jnp.add, grads, jax.grad(step_loss)(hypernets.nets))), None

    n_steps = batches.edit.input_ids.shape[0]
    zeros = jax.tree.map(jnp.zeros_like, hypernets.nets)
    xs = (outputs["factors"], outputs["norms_before"], jnp.arange(n_steps))
    (_, grads), _ = jax.lax.scan(backward, (kernels, zeros), xs, reverse=True)
    return grads
