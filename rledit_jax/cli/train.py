"""bin/train: trains the hypernetworks, then evaluates lifelong editing.

  bin/train --config=configs/tiny.py --workdir=runs/tiny [--config.hparams.rank=64 ...]

`train_and_evaluate(config, workdir)` is the whole job as a library call. It builds the run
(`rledit_jax.run.setup`: every input checked before any weights load), trains for `train.sequences`
sequences of `train.steps_per_sequence` steps (one compiled program per sequence), then runs the
lifelong evaluation over `eval.steps` steps. Writes into `workdir`:

  config.json          the resolved config
  train_metrics.jsonl  one line per training step: sequence, step, loss, gen_loss, loc_loss, reg, norms
  metrics.json         ES / GS / LS of the final edited model, plus run facts
  hypernet.safetensors the trained hypernetworks and normalisers, in the reference's naming
  trace.npz            (with `trace=True`) shifts, losses and the final accumulated gradient
  checkpoints/         training state after every `checkpoint.every` sequences (see checkpoint.py);
                       a run finds the latest one there and continues from it

On several hosts (`--coordinator`, `rledit_jax.partitioning.hosts`) every host runs the same command;
process 0 writes the files above, the others theirs under `workdir/process<i>/`.
"""

import dataclasses
import json
import os
import time

import numpy as np
import tqdm
from absl import app, flags, logging
from ml_collections import config_flags

from rledit_jax import atomic, checkpoint, config_validation, data, run
from rledit_jax.cli import app as cli_app
from rledit_jax.method import evaluation, reference_io, train_step
from rledit_jax.method.spec import Hypernets
from rledit_jax.partitioning import hosts


def _write_json(path, obj):
    with atomic.atomic_open(path) as f:
        json.dump(obj, f, indent=1)


def _trace_arrays(prefix, layout, factors):
    """`{prefix/step{t}/{site}/shift: [d_in, d_out]}` from per-step factors `{site: (K [T,N,d_in], C)}`."""
    out = {}
    for site in layout.names:
        k, c = (np.asarray(x) for x in factors[site])
        for t in range(k.shape[0]):
            out[f"{prefix}/step{t}/{site}/shift"] = k[t].T @ c[t]
    return out


def _checkpointer(r: run.Run, workdir: str, resolved: dict) -> checkpoint.Checkpointer:
    kinds = {kind: getattr(r.train_batches[0], kind).input_ids.shape[-1] for kind in data.KINDS}
    return checkpoint.Checkpointer(
        os.path.join(workdir, "checkpoints"),
        every=r.config.checkpoint.every,
        keep=r.config.checkpoint.keep,
        config=resolved,
        digests=[checkpoint.sequence_digest(r.train_facts, s) for s in r.train_sequences],
        padded_lengths={**kinds, "packed": dataclasses.asdict(r.spec.lengths)},
    )


def train_and_evaluate(config, workdir: str) -> dict:
    """Runs the job described by `config`; returns the final metrics (also in `workdir/metrics.json`)."""
    r = run.setup(config)
    # This process's files go to `workdir` (process 0) or below it; the checkpoints are shared by all.
    ckpt_dir, workdir = workdir, hosts.output_dir(workdir)
    os.makedirs(workdir, exist_ok=True)
    resolved = json.loads(config.to_json())
    ckpt = _checkpointer(r, ckpt_dir, resolved)
    metrics_path = os.path.join(workdir, "train_metrics.jsonl")
    steps = config.train.steps_per_sequence
    trace, out = {}, None
    start = time.time()
    state = {"nets": r.hypernets.nets, "opt_state": r.opt_state, "norms": r.hypernets.norms}
    done, state = ckpt.restore(state)
    hypernets, opt_state = Hypernets(nets=state["nets"], norms=state["norms"]), state["opt_state"]
    _write_json(os.path.join(workdir, "config.json"), resolved)
    # Lines of the sequences after the checkpoint are dropped: this run writes them again.
    checkpoint.rewind_metrics(metrics_path, done, steps)
    with ckpt, open(metrics_path, "a") as metrics_file:
        for e in tqdm.trange(done, len(r.train_batches), desc="train sequences", unit="seq"):
            hypernets, opt_state, grads, out = train_step.train_sequence_and_update(
                r.spec, r.params, hypernets, opt_state, r.train_batches[e]
            )
            scalars = {k: np.asarray(v) for k, v in out.items() if k != "factors"}
            for t in range(steps):
                # Per-step values, and per-sequence ones (the unrolled modes' gradient norm) repeated.
                row = {"sequence": e, "step": t, **{k: float(v[t] if v.ndim else v) for k, v in scalars.items()}}
                metrics_file.write(json.dumps(row) + "\n")
            metrics_file.flush()
            if not np.isfinite(scalars["loss"]).all():
                raise FloatingPointError(f"non-finite training loss in sequence {e}; see {metrics_path}")
            state = {"nets": hypernets.nets, "opt_state": opt_state, "norms": hypernets.norms}
            ckpt.save(e + 1, state, final=e + 1 == len(r.train_batches))
    train_seconds = time.time() - start
    if config.trace and out is None:
        logging.warning("training was complete in the checkpoint: trace.npz holds the evaluation only")
    elif config.trace:
        trace.update(_trace_arrays("train", r.spec.layout, out["factors"]))
        for t in range(steps):
            trace[f"train/step{t}/gen_loss"] = scalars["gen_loss"][t]
            trace[f"train/step{t}/loc_loss"] = scalars["loc_loss"][t]
        ref_grads = reference_io.to_reference(hypernets.replace(nets=grads))
        trace.update({f"train/grad/{k}": v for k, v in ref_grads.items() if ".normalizer." not in k})

    reference_io.save_reference_file(
        os.path.join(workdir, "hypernet.safetensors"), reference_io.to_reference(hypernets)
    )

    start = time.time()
    scores, _, _, eval_factors = evaluation.evaluate(r.eval_spec, r.params, hypernets, r.eval_batches)
    metrics = {k: float(v) for k, v in scores.items()}
    metrics.update(
        train_seconds=train_seconds,
        eval_seconds=time.time() - start,
        n_train_facts=len(r.train_facts),
        n_eval_facts=len(r.eval_facts),
        n_skipped_rows=r.n_skipped,
        n_truncated=r.n_truncated,
    )
    _write_json(os.path.join(workdir, "metrics.json"), metrics)
    if config.trace:
        trace.update(_trace_arrays("eval", r.spec.layout, eval_factors))
        with atomic.atomic_path(os.path.join(workdir, "trace.npz")) as tmp:
            np.savez(tmp, **trace)
    logging.info("ES %.4f  GS %.4f  LS %.4f", metrics["ES"], metrics["GS"], metrics["LS"])
    return metrics


def _main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    hosts.initialize(flags.FLAGS.coordinator, flags.FLAGS.num_processes, flags.FLAGS.process_id)
    config_validation.validate(flags.FLAGS.config)
    cli_app.set_matmul_precision(flags.FLAGS.config)
    metrics = train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir)
    print(" ".join(f"{k}={metrics[k]:.4f}" for k in ("ES", "GS", "LS")))


def main():
    config_flags.DEFINE_config_file("config", None, "Config file (get_config()).", lock_config=True)
    flags.DEFINE_string("workdir", None, "Directory for metrics, the trained hypernetwork and traces.")
    flags.DEFINE_string("coordinator", None, "HOST:PORT of process 0 to run on several hosts, or auto (hosts.py).")
    flags.DEFINE_integer("num_processes", None, "With --coordinator HOST:PORT: the number of processes.")
    flags.DEFINE_integer("process_id", None, "With --coordinator HOST:PORT: this process's index, 0 .. n - 1.")
    flags.mark_flags_as_required(["config", "workdir"])
    cli_app.run(_main, program="bin/train")
