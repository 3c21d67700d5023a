"""One training epoch (a sequence and one Adam step) in any gradient mode, as one jitted program."""

import jax
import optax

from rledit_jax.config_schema import GRADIENT_MODES
from rledit_jax.editor import training, unrolled
from rledit_jax.editor.sites import SiteLayout


def train_epoch(
    llm_config,
    layout: SiteLayout,
    hp: training.EditorHParams,
    lengths: training.AnswerLengths,
    gradient: str,
    keep_factors: bool,
    params,
    nets,
    opt_state,
    norms,
    batches,
):
    """One sequence and one Adam step: `(nets', opt_state', norms', clipped grads, per-step outputs)`.

    The per-step outputs hold every step's shift factors only with `keep_factors` (for traces): at
    GPT-J scale they are T x ~150 MB, which XLA then never materialises.

    `gradient="reference"` accumulates per-step gradients and clips after every step (DESIGN.md
    section 3); the unrolled modes (see `unrolled.py`) take one gradient of the whole sequence and clip
    it once.
    """
    if gradient == "reference":
        grads, norms, outputs = training.train_sequence(llm_config, layout, hp, lengths, params, nets, norms, batches)
    elif gradient in GRADIENT_MODES:
        # `grad_norm`: the sequence gradient's norm before its one clipping.
        grads, norms, outputs = unrolled.sequence_grads(
            llm_config, layout, hp, lengths, gradient, params, nets, norms, batches
        )
        grads, outputs["grad_norm"] = training.clip_accumulated(grads, hp.max_grad_norm)
    else:
        raise ValueError(f"train.gradient must be one of {GRADIENT_MODES}, got {gradient!r}")
    if not keep_factors:
        del outputs["factors"]
    updates, opt_state = training.make_optimizer(hp).update(grads, opt_state, nets)
    return optax.apply_updates(nets, updates), opt_state, norms, grads, outputs


train_epoch_jit = jax.jit(train_epoch, static_argnums=(0, 1, 2, 3, 4, 5))
