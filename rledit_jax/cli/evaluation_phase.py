"""bin/train's evaluations: one lifelong evaluation of the run with its output lines.

`evaluate(r, hypernets, workdir, index, after, headline)` runs evaluation `index` (after `after` training
sequences) through `lifelong.evaluate` and appends its line to workdir/evaluations.jsonl and its curve
points to curve.jsonl. The headline evaluation (the run's last) also writes general.jsonl (with
`eval.general_path`: before editing, at every `eval.general_every`-th step and at the end) and scores
generated answers (`eval.generative`). Formats: `rledit_jax/report/inputs.py`.
"""

import dataclasses
import json
import os
import time

import numpy as np

from rledit_jax import atomic, general, generative, lifelong, run
from rledit_jax.method import edit_step as es
from rledit_jax.method.spec import Hypernets


def append_lines(path, records):
    with open(path, "a") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)


def _general_scorer(r: run.Run):
    """`score(kernels, step)`: a general.jsonl record of the model as edited through `step` (-1: unedited)."""
    cfg = r.config.eval
    stop_ids = general.stop_ids_of(r.config.model.path) if r.config.model.path else ()
    edits = lifelong.edits_through(r.eval_batches)

    def score(kernels, step):
        result = general.evaluate(
            r.spec.model,
            r.params,
            kernels,
            r.tokenizer,
            cfg.general_path,
            n_per_task=cfg.general_n,
            tasks=cfg.general_tasks,
            stop_ids=stop_ids,
        )
        return {"step": step, "edits": int(edits[step]) if step >= 0 else 0, "tasks": result.scores}

    return score


@dataclasses.dataclass
class Evaluation:
    record: dict  # its evaluations.jsonl line
    out: object  # evaluation.Lifelong
    extra: dict  # the headline's generative scores, general-ability scores and their seconds


def evaluate(r: run.Run, hypernets: Hypernets, workdir: str, index: int, after: int, headline: bool):
    """Evaluation `index` (after `after` training sequences); appends its evaluations/curve lines."""
    cfg = r.config.eval
    score_general = _general_scorer(r) if headline and cfg.general_path else None
    records, general_seconds = [], [0.0]

    def at_stop(kernels, step):
        start = time.time()
        records.append(score_general(kernels, step))
        general_seconds[0] += time.time() - start

    if score_general:
        at_stop(es.base_kernels(r.eval_spec, r.params), -1)
    general_before, start = general_seconds[0], time.time()
    out = lifelong.evaluate(
        r.eval_spec,
        r.params,
        hypernets,
        r.eval_batches,
        stop_every=cfg.general_every if score_general else 0,
        at_stop=at_stop,
        desc=f"evaluation {index}",
    )
    seconds = time.time() - start - (general_seconds[0] - general_before)
    record = {"evaluation": index, "after_sequences": after, **{k: float(v) for k, v in out.scores.items()}}
    record["seconds"] = seconds
    append_lines(os.path.join(workdir, "evaluations.jsonl"), [record])
    if out.curve is not None:
        points = lifelong.curve_records(out.curve, r.eval_batches)
        append_lines(os.path.join(workdir, "curve.jsonl"), [{"evaluation": index, **p} for p in points])
    extra = {}
    if headline and score_general:
        at_stop(out.kernels, r.eval_batches.edit.input_ids.shape[0] - 1)
        with atomic.atomic_open(os.path.join(workdir, "general.jsonl")) as f:
            f.writelines(json.dumps({"evaluation": index, **g}) + "\n" for g in records)
        extra.update(
            general_before=records[0]["tasks"], general=records[-1]["tasks"], general_seconds=general_seconds[0]
        )
    elif headline and os.path.exists(os.path.join(workdir, "general.jsonl")):
        os.remove(os.path.join(workdir, "general.jsonl"))  # an earlier run's, with other settings
    if headline and cfg.generative:
        start = time.time()
        facts = sorted({int(i) for i in np.asarray(r.eval_batches.edit.fact_index).ravel() if i >= 0})
        extra.update(
            generative.generative_scores(
                r.spec.model, r.params, out.kernels, r.tokenizer, r.eval_facts, facts, truncate=r.config.data.truncate
            )
        )
        extra["generative_seconds"] = time.time() - start
    return Evaluation(record, out, extra)
