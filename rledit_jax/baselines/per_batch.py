"""The per_batch training scheme (MEND's and MALMEN's, the reference's `BaseEditor.train`).

Every training batch t of a `StepBatches` `[T, ...]` is edited on the *unedited* model (the sites'
kernels W of `params`, never the earlier batches' shifts): capture at W, update the normalisers,
predict S_t, and take the batch's own loss on W + S_t,

    sum_mb CE(equiv_t) + loc_coef * sum_mb KL(p_W || p_{W+S_t})(unrel_t),

differentiated through S_t only; that gradient, clipped to `max_grad_norm`, makes one Adam step. It
is RLEdit's training step (`method/sequence.py`) with a window of the batch alone and no L2 term:
the spec's hparams have back_depth 1 and reg_coef 0 (`methods.hparams_of`), and every step starts
from an empty accumulator and from W.
"""

import jax
import jax.numpy as jnp
import optax

from rledit_jax.jit import program
from rledit_jax.method import sequence, train_step
from rledit_jax.method.spec import Hypernets, Spec


@program(donate=("hypernets", "opt_state"))
def train_batches(spec: Spec, params, hypernets: Hypernets, opt_state, batches):
    """One Adam step per batch of `batches`, in order: `(hypernets', opt_state', per-step outputs)`.

    The per-step outputs are `sequence.sequence_step`'s (`acc_norm`: the batch gradient's norm before
    clipping); the shift factors and the clipped gradients (`grads`) only with `spec.keep_factors`.
    """
    if spec.hparams.back_depth != 1 or spec.hparams.reg_coef != 0:
        raise ValueError(f"the per_batch scheme needs back_depth=1 and reg_coef=0, got {spec.hparams}")
    optimizer = train_step.make_optimizer(spec.hparams)

    def step(state, t):
        hypernets, opt_state = state
        unedited = sequence.initial_carry(spec, params, hypernets, batches)
        carry, out = sequence.sequence_step(spec, params, hypernets.nets, batches, unedited, t)
        updates, opt_state = optimizer.update(carry.acc, opt_state, hypernets.nets)
        nets = optax.apply_updates(hypernets.nets, updates)
        return (Hypernets(nets=nets, norms=carry.norms), opt_state), {**out, "grads": carry.acc}

    (hypernets, opt_state), outputs = jax.lax.scan(
        step, (hypernets, opt_state), jnp.arange(batches.edit.input_ids.shape[0])
    )
    if not spec.keep_factors:
        del outputs["factors"], outputs["grads"]
    return hypernets, opt_state, outputs
