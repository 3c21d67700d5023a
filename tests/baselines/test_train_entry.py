"""`bin/train`'s library call runs any method: a per_batch-trained MEND writes its results and its
network in the reference's naming (imported back as in `test_interop.py`)."""

import json

import numpy as np
import pytest

from rledit_jax.cli.train import train_and_evaluate
from rledit_jax.method import reference_io
from tests.cli.test_train import tiny_config

pytestmark = pytest.mark.slow

# MEND's network fields, apart from RLEdit's (the tiny config: rank 32, 2 blocks).
MEND = {"baselines.mend.rank": 16, "baselines.mend.n_blocks": 1}


def test_train_entry_runs_mend_per_batch(tmp_path):
    metrics = train_and_evaluate(tiny_config(method="mend", **MEND), str(tmp_path / "mend"))
    assert json.loads((tmp_path / "mend" / "metrics.json").read_text()) == metrics
    assert metrics["method"] == "mend" and metrics["train_seconds"] > 0
    lines = [json.loads(line) for line in (tmp_path / "mend" / "train_metrics.jsonl").read_text().splitlines()]
    # per_batch: one line (and one Adam step) per training batch of every sequence.
    assert [(line["sequence"], line["step"]) for line in lines] == [(e, t) for e in range(2) for t in range(3)]
    assert all(np.isfinite(line["loss"]) for line in lines)

    exported = tmp_path / "mend" / "hypernet.safetensors"
    state = reference_io.load_reference_file(exported)
    assert "(256, 64).blocks.1.A" not in state  # one block (baselines.mend.n_blocks)
    assert state["(256, 64).blocks.0.A"].shape == (320, 16)  # baselines.mend.rank
