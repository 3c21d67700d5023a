"""ft: fine-tuning the edit sites' kernels on each edit batch (the comparison's lower bound).

For every eval step in order, from the kernels the earlier steps left: `steps` Adam steps (a fresh
Adam, torch's defaults, learning rate `lr`) on the step's edit loss, the sum over its micro-batches
of the mean CE of the edit pairs' answer tokens (the capture's loss, `passes.capture`). Kernels
`{site: [d_in, d_out]}` float32; a step batch `[M, B, L]` packed as everywhere (`packing.py`).
"""

import dataclasses

import jax
import jax.numpy as jnp
import optax

from rledit_jax.jit import program
from rledit_jax.method import edit_step as es
from rledit_jax.method import losses, packing, passes
from rledit_jax.method.spec import Spec


@dataclasses.dataclass(frozen=True)
class FTSpec:
    """The static argument of ft's program: the method's spec (model, sites, packed sizes) and its Adam."""

    spec: Spec
    steps: int  # Adam steps per edit batch (`baselines.ft.steps`)
    lr: float  # their learning rate (`baselines.ft.lr`)


def edit_loss(spec: Spec, params, kernels, hidden, packed):
    """Sum over micro-batches of the mean answer CE of a packed edit batch from its prefix `hidden`."""
    logits = passes.answer_logits(spec, params, kernels, hidden, packed)
    return jnp.sum(losses.micro_batch_cross_entropy(logits, packed.labels))


def finetune_step(ft: FTSpec, params, kernels, batch):
    """`ft.steps` Adam steps on one edit batch: `(kernels', edit loss before each step [steps])`."""
    spec = ft.spec
    packed = packing.pack(batch, spec.lengths.edit)
    hidden = passes.prefix(spec, params, packed)
    optimizer = optax.adam(ft.lr, b1=0.9, b2=0.999, eps=1e-8)

    def adam_step(state, _):
        kernels, opt_state = state
        loss, grads = jax.value_and_grad(lambda k: edit_loss(spec, params, k, hidden, packed))(kernels)
        updates, opt_state = optimizer.update(grads, opt_state, kernels)
        return (optax.apply_updates(kernels, updates), opt_state), loss

    (kernels, _), step_losses = jax.lax.scan(adam_step, (kernels, optimizer.init(kernels)), None, length=ft.steps)
    return kernels, step_losses


@program
def edit_sequence(ft: FTSpec, params, batches):
    """Fine-tunes on every eval step in order from the base kernels: `(kernels, losses [T, steps])`."""

    def step(kernels, t):
        return finetune_step(ft, params, kernels, es.at_step(batches.edit, t))

    n_steps = batches.edit.input_ids.shape[0]
    return jax.lax.scan(step, es.base_kernels(ft.spec, params), jnp.arange(n_steps))
