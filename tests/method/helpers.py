"""Test-only reference computations built from the method's public pieces."""

import dataclasses

import jax
import jax.numpy as jnp

from rledit_jax.jit import program
from rledit_jax.method import edit_step, sequence, shift, unrolled
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

    def step(carry, t):
        kernels, norms, rings, grads = carry
        rings = rings.push(spec, params, batches, t)

        def step_loss(nets):
            return unrolled.step_objective(nets, kernels, spec, params, batches, norms, rings, t)

        (_, (kernels_next, _, norms_next)), g = jax.value_and_grad(step_loss, has_aux=True)(hypernets.nets)
        return (kernels_next, norms_next, rings, jax.tree.map(jnp.add, grads, g)), None

    init = (
        edit_step.base_kernels(spec, params),
        hypernets.norms,
        sequence.Rings.empty(spec, params, batches),
        jax.tree.map(jnp.zeros_like, hypernets.nets),
    )
    (_, _, _, grads), _ = jax.lax.scan(step, init, jnp.arange(batches.edit.input_ids.shape[0]))
    return grads
