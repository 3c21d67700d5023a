"""bin/train: trains the hypernetworks and evaluates lifelong editing, on the reference's schedule.

  bin/train --config=configs/tiny.py --workdir=runs/tiny [--config.hparams.rank=64 ...]

`train_and_evaluate(config, workdir)` is the whole job as a library call (for a `config.method` that
is not trained by sequences and then frozen, `baselines.lifelong.run_method`'s). It builds the run
(`rledit_jax.run.setup`: every input checked before any weights load), then, per `train.schedule`:

  evaluate_each_sequence  the reference's `RLEDIT.run`: for each of `train.sequences` sequences, train
                          on it (one compiled program, one Adam step), then run the lifelong evaluation
                          over `eval.steps` steps, whose normaliser updates carry into the next sequence
  evaluate_at_end         train on every sequence, then evaluate once

The last evaluation is the headline. It alone also decodes every eval fact's answer (`eval.generative`)
and scores general ability (`eval.general_path`: before editing, every `eval.general_every` steps and
at the end). Writes into `workdir`:

  config.json          the resolved config
  train_metrics.jsonl  one line per training step: sequence, step, loss, gen_loss, loc_loss, reg, norms
  evaluations.jsonl    one line per evaluation: evaluation, after_sequences, ES, GS, LS, LS_agreement, seconds
  curve.jsonl          retention-curve points (`eval.curve_every`): evaluation, step, edits, all, first
  general.jsonl        general-ability scores: evaluation, step (-1 = before editing), edits, tasks
  metrics.json         the headline evaluation's scores (README "Evaluation and metrics"), every evaluation's
                       scores ("evaluations"), the general-ability scores and run facts
  hypernet.safetensors the trained hypernetworks, with the normalisers the last evaluation starts
                       from, in the reference's naming
  trace.npz            (with `trace=True`) shifts, losses and the final accumulated gradient
  checkpoints/         training state after every `checkpoint.every` sequences (and their evaluations;
                       see checkpoint.py); a run finds the latest one there and continues from it
  report.md, *.png     bin/report's rendering of the above

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

from rledit_jax import atomic, checkpoint, config_validation, data, report, run
from rledit_jax.baselines import lifelong as baseline_runs
from rledit_jax.baselines import methods
from rledit_jax.cli import app as cli_app
from rledit_jax.cli import evaluation_phase
from rledit_jax.method import reference_io, train_step
from rledit_jax.method.spec import Hypernets
from rledit_jax.partitioning import hosts


def _read_lines(path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


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


def _finish(r: run.Run, workdir, out, grads, hypernets, evaluated: list, train_seconds: float) -> dict:
    """Writes metrics.json (and trace.npz) after the headline evaluation `evaluated[-1]`; returns the metrics.

    `out`, `grads`: the last training sequence's outputs in this process (None when the checkpoint held
    every sequence).
    """
    config, last, trace = r.config, evaluated[-1], {}
    if config.trace and out is None:
        logging.warning("training was complete in the checkpoint: trace.npz holds the evaluation only")
    elif config.trace:
        trace.update(_trace_arrays("train", r.spec.layout, out["factors"]))
        for t in range(config.train.steps_per_sequence):
            trace[f"train/step{t}/gen_loss"] = np.asarray(out["gen_loss"][t])
            trace[f"train/step{t}/loc_loss"] = np.asarray(out["loc_loss"][t])
        ref_grads = reference_io.to_reference(hypernets.replace(nets=grads))
        trace.update({f"train/grad/{k}": v for k, v in ref_grads.items() if ".normalizer." not in k})
    metrics = {k: v for k, v in last.record.items() if k not in ("evaluation", "after_sequences", "seconds")}
    metrics.update(last.extra)
    metrics.update(
        evaluations=_read_lines(os.path.join(workdir, "evaluations.jsonl")),
        train_seconds=train_seconds,
        eval_seconds=sum(e.record["seconds"] for e in evaluated),
        n_train_facts=len(r.train_facts),
        n_eval_facts=len(r.eval_facts),
        n_skipped_rows=r.n_skipped,
        n_truncated=r.n_truncated,
    )
    atomic.write_json(os.path.join(workdir, "metrics.json"), metrics)
    if config.trace:
        trace.update(_trace_arrays("eval", r.spec.layout, last.out.factors))
        with atomic.atomic_path(os.path.join(workdir, "trace.npz")) as tmp:
            np.savez(tmp, **trace)
    logging.info("ES %.4f  GS %.4f  LS %.4f", metrics["ES"], metrics["GS"], metrics["LS"])
    return metrics


def train_and_evaluate(config, workdir: str) -> dict:
    """Runs the job described by `config`; returns the final metrics (also in `workdir/metrics.json`)."""
    r = run.setup(config)
    if not methods.sequence_trained(config):
        metrics = baseline_runs.run_method(r, workdir)
        report.render(workdir)
        return metrics
    # This process's files go to `workdir` (process 0) or below it; the checkpoints are shared by all.
    ckpt_dir, workdir = workdir, hosts.output_dir(workdir)
    os.makedirs(workdir, exist_ok=True)
    resolved = json.loads(config.to_json())
    ckpt = _checkpointer(r, ckpt_dir, resolved)
    paths = {name: os.path.join(workdir, name) for name in ("train_metrics.jsonl", "evaluations.jsonl", "curve.jsonl")}
    steps, n_sequences = config.train.steps_per_sequence, len(r.train_batches)
    each = config.train.schedule == "evaluate_each_sequence"
    out, grads, train_seconds, evaluated, headline = None, None, 0.0, [], None
    state = {"nets": r.hypernets.nets, "opt_state": r.opt_state, "norms": r.hypernets.norms}
    done, state = ckpt.restore(state)
    hypernets, opt_state = Hypernets(nets=state["nets"], norms=state["norms"]), state["opt_state"]
    atomic.write_json(os.path.join(workdir, "config.json"), resolved)
    # Lines after the checkpoint are dropped: this run writes them again.
    checkpoint.rewind_lines(paths["train_metrics.jsonl"], "sequence", done, steps)
    for name in ("evaluations.jsonl", "curve.jsonl"):
        checkpoint.rewind_lines(paths[name], "evaluation", done if each else 0)
    if each and done == n_sequences:
        logging.info("the checkpoint holds the complete run; its metrics are in %s", workdir)
        report.render(workdir)
        with open(os.path.join(workdir, "metrics.json")) as f:
            return json.load(f)

    def save_hypernets():
        reference_io.save_reference_file(
            os.path.join(workdir, "hypernet.safetensors"), reference_io.to_reference(hypernets)
        )

    with ckpt, open(paths["train_metrics.jsonl"], "a") as metrics_file:
        for e in tqdm.trange(done, n_sequences, desc="train sequences", unit="seq"):
            start = time.time()
            hypernets, opt_state, grads, out = train_step.train_sequence_and_update(
                r.spec, r.params, hypernets, opt_state, r.train_batches[e]
            )
            scalars = {k: np.asarray(v) for k, v in out.items() if k != "factors"}
            for t in range(steps):
                # Per-step values, and per-sequence ones (the unrolled modes' gradient norm) repeated.
                row = {"sequence": e, "step": t, **{k: float(v[t] if v.ndim else v) for k, v in scalars.items()}}
                metrics_file.write(json.dumps(row) + "\n")
            metrics_file.flush()
            train_seconds += time.time() - start
            if not np.isfinite(scalars["loss"]).all():
                raise FloatingPointError(
                    f"non-finite training loss in sequence {e}; see {paths['train_metrics.jsonl']}"
                )
            if each:
                if e == n_sequences - 1:
                    save_hypernets()
                evaluated.append(
                    evaluation_phase.evaluate(r, hypernets, workdir, e, e + 1, headline=e == n_sequences - 1)
                )
                hypernets = evaluated[-1].out.hypernets
                if e == n_sequences - 1:
                    headline = _finish(r, workdir, out, grads, hypernets, evaluated, train_seconds)
            state = {"nets": hypernets.nets, "opt_state": opt_state, "norms": hypernets.norms}
            ckpt.save(e + 1, state, final=e + 1 == n_sequences)
    if not each:
        save_hypernets()
        evaluated.append(evaluation_phase.evaluate(r, hypernets, workdir, 0, n_sequences, headline=True))
        hypernets = evaluated[-1].out.hypernets
        headline = _finish(r, workdir, out, grads, hypernets, evaluated, train_seconds)
    report.render(workdir)
    return headline


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
