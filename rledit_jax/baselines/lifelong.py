"""One method's whole job on a run: train (if the method is trained), edit the eval stream step after
step, score the final model, and write the results.

    metrics = run_method(r, workdir)    # r: a `run.Run` whose config.method names the method

Writes into `workdir`: `config.json` (the resolved config), `train_metrics.jsonl` (a trained method's
steps, `bin/train`'s format; retrained methods add `retraining` and count `sequence` on over the
retrainings), `hypernet.safetensors` (a trained, frozen network, in the reference's naming) and
`metrics.json`: ES / GS / LS / LS_agreement, `train_seconds` (None for untrained methods), `edit_seconds` (the
lifelong editing and the final scoring), `compile_seconds`, `peak_memory_bytes` (the largest
program's, `meter.py`) and the run's facts. `bin/train` runs this for every method but the
sequence-trained ones (`methods.sequence_trained`), `bin/compare` for every method.
"""

import json
import os

from rledit_jax import atomic, run
from rledit_jax.baselines import finetune, methods, retrain, training
from rledit_jax.baselines.meter import Meter
from rledit_jax.method import evaluation, reference_io


def _scores(r: run.Run, meter: Meter, workdir: str, metrics_file) -> dict:
    """Trains the method's network (if any), edits the eval stream and scores it: `{ES, GS, LS, LS_agreement}`."""
    config = r.config
    method = methods.METHODS[config.method]
    if method.shift is None:
        ft = finetune.FTSpec(r.eval_spec, steps=config.baselines.ft.steps, lr=config.baselines.ft.lr)
        kernels, _ = meter("edit", finetune.edit_sequence, ft, r.params, r.eval_batches)
    elif method.retrain:
        kernels = retrain.edit_lifelong(r, meter, metrics_file)
    else:
        hypernets = r.hypernets
        if method.trained:
            scheme = methods.scheme_of(config)
            hypernets, _ = training.train(
                meter, scheme, r.spec, r.params, hypernets, r.opt_state, r.train_batches, metrics_file
            )
            path = os.path.join(workdir, "hypernet.safetensors")
            reference_io.save_reference_file(path, reference_io.to_reference(hypernets))
        return meter("edit", evaluation.evaluate, r.eval_spec, r.params, hypernets, r.eval_batches).scores
    return meter("edit", evaluation.score, r.eval_spec, r.params, kernels, r.eval_batches)[0]


def run_method(r: run.Run, workdir: str) -> dict:
    """Runs `r.config.method` on `r` (see the module docstring); returns the metrics."""
    os.makedirs(workdir, exist_ok=True)
    atomic.write_json(os.path.join(workdir, "config.json"), json.loads(r.config.to_json()))
    meter = Meter()
    # A log, written as the steps run (as bin/train's): a failed run leaves the steps that led to it.
    with open(os.path.join(workdir, "train_metrics.jsonl"), "w") as metrics_file:
        scores = _scores(r, meter, workdir, metrics_file)
    metrics = {k: float(v) for k, v in scores.items()}
    metrics.update(
        method=r.config.method,
        train_seconds=meter.seconds["train"] if methods.METHODS[r.config.method].trained else None,
        edit_seconds=meter.seconds["edit"],
        compile_seconds=meter.seconds["compile"],
        peak_memory_bytes=meter.peak_bytes,
        n_train_facts=len(r.train_facts),
        n_eval_facts=len(r.eval_facts),
        n_skipped_rows=r.n_skipped,
        n_truncated=r.n_truncated,
    )
    atomic.write_json(os.path.join(workdir, "metrics.json"), metrics)
    return metrics
