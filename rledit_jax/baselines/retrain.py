"""Lifelong editing with retraining (the paper's MALMEN* and MEND*, the reference's
`run_sequential_retrain`): before eval steps 0, k, 2k, ... (k = `baselines.retrain.every`) a fresh
network is trained, in the method's scheme, on the training stream and on the model *as edited so
far*; it then edits the next k eval steps (its normalisers updating) and is dropped.

Retraining r starts from `init_hypernets(fold_in(PRNGKey(train.seed), r))` (the reference's fresh
networks are unseeded) and only ever sees the run's training batches: the eval facts are edited and
scored, never trained on. Edited kernels stay float32 between retrainings (`models.set_sites`).
"""

import jax
import tqdm

from rledit_jax import models
from rledit_jax.baselines import methods, training
from rledit_jax.jit import program
from rledit_jax.method import edit_step as es
from rledit_jax.method import evaluation
from rledit_jax.method.spec import init_hypernets
from rledit_jax.method.train_step import make_optimizer


@program(donate=("hypernets",))
def edit_steps(spec, params, hypernets, batches):
    """Edits the steps of `batches` in order from the sites' kernels in `params`: `(kernels, hypernets')`."""
    kernels, hypernets, _ = evaluation.edit_sequence(spec, params, hypernets, batches)
    return kernels, hypernets


def fresh_hypernets(r, retraining: int):
    """The network retraining `retraining` starts from, and its Adam state."""
    key = jax.random.fold_in(jax.random.PRNGKey(r.config.train.seed), retraining)
    hypernets = init_hypernets(key, r.spec.layout, r.spec.hparams)
    return hypernets, make_optimizer(r.spec.hparams).init(hypernets.nets)


def edit_lifelong(r, meter, metrics_file):
    """Retrains and edits the run's eval stream; returns the final kernels `{site: [d_in, d_out]}`."""
    every, scheme = r.config.baselines.retrain.every, methods.scheme_of(r.config)
    kernels = es.base_kernels(r.eval_spec, r.params)
    n_steps, n_sequences = r.eval_batches.edit.input_ids.shape[0], len(r.train_batches)
    for retraining, start in enumerate(tqdm.trange(0, n_steps, every, desc="retrain and edit", unit="retraining")):
        edited = models.set_sites(r.spec.model, r.params, kernels)
        hypernets, opt_state = fresh_hypernets(r, retraining)
        hypernets, _ = training.train(
            meter,
            scheme,
            r.spec,
            edited,
            hypernets,
            opt_state,
            r.train_batches,
            metrics_file,
            retraining=retraining,
            sequence=retraining * n_sequences,
        )
        steps = jax.tree.map(lambda x, s=start: x[s : s + every], r.eval_batches)
        kernels, _ = meter("edit", edit_steps, r.eval_spec, edited, hypernets, steps)
    return kernels
