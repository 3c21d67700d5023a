"""bin/train's evaluation outputs on the tiny config: every evaluation, the curve, general ability, the report.

Oracles: the headline evaluation rebuilt from hypernet.safetensors (the normalisers it starts from)
with `lifelong.evaluate`; `general.evaluate` (itself checked against torch in tests/general) on the
unedited model, on the model edited through the middle stop (`evaluation.edit_sequence` on the prefix),
and on the final model; the report's PNGs decoded.
"""

import json

import jax
import numpy as np
import pytest
from PIL import Image

from rledit_jax import general, lifelong, run
from rledit_jax.cli.train import train_and_evaluate
from rledit_jax.method import edit_step as es
from rledit_jax.method import evaluation, reference_io
from tests.cli.test_train import tiny_config
from tests.paths import SHARED

GENERAL = SHARED / "data" / "general"
TASKS, N_PER_TASK, N_EDITS = ("sst2", "cola"), 2, 5

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not GENERAL.is_dir(), reason=f"shared general-ability data not found at {GENERAL}"),
]


def _config():
    return tiny_config(
        **{
            "eval.steps": 4,
            "eval.curve_every": 2,
            "eval.general_path": str(GENERAL),
            "eval.general_every": 2,
            "eval.general_n": N_PER_TASK,
            "eval.general_tasks": TASKS,
            "model.tiny.n_positions": 256,  # the probe prompts are longer than the default 128 tokens
        }
    )


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("evaluation")
    metrics = train_and_evaluate(_config(), str(workdir))
    lines = lambda name: [json.loads(x) for x in (workdir / name).read_text().splitlines()]
    return workdir, metrics, {name: lines(name) for name in ("evaluations.jsonl", "curve.jsonl", "general.jsonl")}


def _general(r, kernels):
    return general.evaluate(
        r.spec.model, r.params, kernels, r.tokenizer, GENERAL, n_per_task=N_PER_TASK, tasks=TASKS
    ).scores


def test_every_evaluation_and_its_curve(outputs):
    _, metrics, files = outputs
    evaluations, curve = files["evaluations.jsonl"], files["curve.jsonl"]
    assert [e["after_sequences"] for e in evaluations] == [1, 2] and metrics["evaluations"] == evaluations
    for e in evaluations:
        points = [p for p in curve if p["evaluation"] == e["evaluation"]]
        assert [(p["step"], p["edits"]) for p in points] == [(1, 2 * N_EDITS), (3, 4 * N_EDITS)]
        assert all(points[-1]["all"][k] == e[k] for k in ("ES", "GS", "LS"))
    assert all(metrics[k] == evaluations[-1][k] for k in ("ES", "GS", "LS", "LS_agreement"))
    for name in ("ES", "GS", "LS"):
        for kind in ("exact", "f1"):
            assert 0 <= metrics[f"{name}_generated_{kind}"] <= 1


def test_headline_and_general_ability_rebuilt(outputs):
    workdir, metrics, files = outputs
    r = run.setup(_config())
    saved = reference_io.from_reference(reference_io.load_reference_file(str(workdir / "hypernet.safetensors")))
    out = lifelong.evaluate(r.eval_spec, r.params, saved, r.eval_batches)
    for name in ("ES", "GS", "LS", "LS_agreement"):
        assert float(out.scores[name]) == pytest.approx(metrics[name], abs=1e-6)

    records = files["general.jsonl"]
    assert [(g["evaluation"], g["step"], g["edits"]) for g in records] == [(1, -1, 0), (1, 1, 10), (1, 3, 20)]
    saved = reference_io.from_reference(
        reference_io.load_reference_file(str(workdir / "hypernet.safetensors"))
    )  # again:
    # the evaluation above consumed (donated) the first copy
    prefix = jax.tree.map(lambda x: x[:2], r.eval_batches)
    middle, _, _ = jax.jit(evaluation.edit_sequence, static_argnums=0)(r.eval_spec, r.params, saved, prefix)
    expected = [_general(r, es.base_kernels(r.eval_spec, r.params)), _general(r, middle), _general(r, out.kernels)]
    for record, scores in zip(records, expected):
        assert record["tasks"] == scores
    # The probability-based answers move with the edits, so a record from the wrong model would differ.
    assert len({json.dumps(r["tasks"], sort_keys=True) for r in records}) == 3
    assert metrics["general_before"] == records[0]["tasks"] and metrics["general"] == records[-1]["tasks"]


def test_report_of_the_run(outputs):
    workdir, _, _ = outputs
    text = (workdir / "report.md").read_text()
    pngs = ["train_losses.png", "curve_eval0.png", "curve_eval1.png", "general.png"]
    for png in pngs:
        image = np.asarray(Image.open(workdir / png).convert("RGB"))
        assert image.shape == (450, 800, 3) and len(np.unique(image.reshape(-1, 3), axis=0)) > 1
        assert f"]({png})" in text
    assert "Every evaluation (the last is the one above)" in text and "| LS_agreement |" in text
