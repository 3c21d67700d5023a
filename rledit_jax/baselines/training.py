"""A hypernetwork method's training over the run's training stream, in its scheme.

The stream is the run's training sequences (`run.Run.train_batches`, each `[steps, ...]`), one
compiled call each: "sequence" makes one Adam step per sequence (RLEdit's `train_step`), "per_batch"
one per batch (`per_batch.py`). Every step's losses and norms are written as a line of
`train_metrics.jsonl` (the format of `bin/train`'s, `report/inputs.py`).
"""

import json

import numpy as np
import tqdm

from rledit_jax.baselines import per_batch
from rledit_jax.method import train_step

PROGRAMS = {"sequence": train_step.train_sequence_and_update, "per_batch": per_batch.train_batches}


def train(meter, scheme: str, spec, params, hypernets, opt_state, train_batches, metrics_file, **line):
    """Trains on every sequence of `train_batches` in order on the model `params`; returns
    `(hypernets', opt_state')` (`hypernets` and `opt_state` are donated). `line` fields (e.g. the
    retraining's index) are added to every metrics line; `sequence` counts on from `line["sequence"]`."""
    program = PROGRAMS[scheme]
    first = line.pop("sequence", 0)
    for e in tqdm.trange(len(train_batches), desc=f"train ({scheme})", unit="seq", leave=False):
        hypernets, opt_state, *_, out = meter("train", program, spec, params, hypernets, opt_state, train_batches[e])
        scalars = {k: np.asarray(v) for k, v in out.items() if k != "factors"}
        for t in range(train_batches[e].edit.input_ids.shape[0]):
            values = {k: float(v[t] if v.ndim else v) for k, v in scalars.items()}
            metrics_file.write(json.dumps({**line, "sequence": first + e, "step": t, **values}) + "\n")
        metrics_file.flush()
        if not np.isfinite(scalars["loss"]).all():
            raise FloatingPointError(f"non-finite training loss in sequence {first + e}; see {metrics_file.name}")
    return hypernets, opt_state
