"""One training sequence and its Adam step, in any gradient mode, as one compiled program."""

import optax

from rledit_jax.jit import program
from rledit_jax.method import sequence, unrolled
from rledit_jax.method.spec import HParams, Hypernets, Spec
from rledit_jax.partitioning import constraints


def make_optimizer(hparams: HParams):
    # torch.optim.Adam's defaults, as the reference uses.
    return optax.adam(hparams.meta_lr, b1=0.9, b2=0.999, eps=1e-8)


@program(donate=("hypernets", "opt_state"))
def train_sequence_and_update(spec: Spec, params, hypernets: Hypernets, opt_state, batches):
    """One sequence and one Adam step: `(hypernets', opt_state', clipped grads, per-step outputs)`.

    `hypernets` and `opt_state` are donated. The per-step outputs hold every step's shift factors
    only with `spec.keep_factors` (for traces): at GPT-J scale they are T x ~150 MB, which XLA then
    never materialises.

    `spec.gradient="reference"` accumulates per-step gradients and clips after every step (DESIGN.md
    section 3); the unrolled modes (see `unrolled.py`) take one gradient of the whole sequence and
    clip it once.
    """
    if spec.gradient == "reference":
        grads, hypernets, outputs = sequence.train_sequence(spec, params, hypernets, batches)
    else:
        grads, hypernets, outputs = unrolled.sequence_grads(spec, params, hypernets, batches)
        # `grad_norm`: the sequence gradient's norm before its one clipping.
        grads, outputs["grad_norm"] = sequence.clip_accumulated(grads, spec.hparams.max_grad_norm)
    if not spec.keep_factors:
        del outputs["factors"]
    updates, opt_state = make_optimizer(spec.hparams).update(grads, opt_state, hypernets.nets)
    hypernets = hypernets.replace(nets=optax.apply_updates(hypernets.nets, updates))
    return *constraints.whole(spec, (hypernets, opt_state, grads)), outputs
