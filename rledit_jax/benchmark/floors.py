"""The LLM passes a training step and an edit step cannot avoid, as functions to compile and time.

Both run on the step's real batches and shapes (DESIGN.md section 3): the capture's forward+backward
over the edit batch, and for a training step also the fresh unrel forward at W_t and the window's
forward+backward on the shifted model. The benchmark's ratios divide by their times.
"""

import jax
import jax.numpy as jnp

from rledit_jax import models
from rledit_jax.jit import program
from rledit_jax.method import edit_step as es
from rledit_jax.method import losses, sequence
from rledit_jax.method.spec import Spec


@program
def capture_floor(spec: Spec, params, kernels, batch):
    """Forward+backward over the edit batch (M*B rows), gradient w.r.t. zero probes at the sites.

    Returns the value-gradients and the keys (what a capture must produce), unmasked and ungathered.
    """
    flat = es.flatten_micro_batches(batch)
    n, l = flat["input_ids"].shape
    m, b, _ = batch.input_ids.shape
    model = spec.model
    shapes = models.site_shapes(model)
    zero = {s: jnp.zeros((n, l, shapes[s][1]), jnp.dtype(model.dtype)) for s in spec.layout.names}
    edited = models.set_sites(model, params, kernels)

    def probed_loss(p):
        logits, keys = models.forward_with_probes(model, edited, p, flat["input_ids"], flat["attention_mask"])
        ce = losses.micro_batch_cross_entropy(logits.reshape(m, b, l, -1), flat["labels"].reshape(m, b, l))
        return jnp.sum(ce), keys

    grads, keys = jax.grad(probed_loss, has_aux=True)(zero)
    return grads, keys


@program
def train_step_floor(spec: Spec, t, params, kernels, batches):
    """The LLM passes of training step `t`: capture, fresh unrel forward, window fwd+bwd."""
    depth = spec.hparams.back_depth
    grads_v, keys = capture_floor(spec, params, kernels, es.at_step(batches.edit, t))
    fresh = sequence.unrel_answer_logits(spec, params, kernels, es.at_step(batches.unrel, t))
    idx = jnp.maximum(t - jnp.arange(depth), 0)
    equiv_w = jax.tree.map(lambda x: x[idx], batches.equiv)
    unrel_w = jax.tree.map(lambda x: x[idx], batches.unrel)
    pre_logits = jnp.broadcast_to(fresh[None], (depth, *fresh.shape))
    _, w_valid = losses.answer_positions(unrel_w.labels, spec.lengths.unrel)

    def window_loss(k):
        shifted = models.set_sites(spec.model, params, k)
        gen = jnp.sum(losses.micro_batch_cross_entropy(es.forward_kind(spec.model, shifted, equiv_w), equiv_w.labels))
        post = sequence.unrel_answer_logits(spec, params, k, unrel_w)
        return gen + jnp.sum(losses.micro_batch_kl(pre_logits, post, w_valid))

    grads_k = jax.grad(window_loss)(kernels)
    return grads_v, keys, grads_k
