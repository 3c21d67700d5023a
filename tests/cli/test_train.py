"""End to end: the real tiny config, shrunk, through `train_and_evaluate` and through `bin/train`."""

import json

import numpy as np
import pytest

from rledit_jax.cli.train import train_and_evaluate
from rledit_jax.method import reference_io
from tests.cli.run_bin import run_bin
from tests.config_files import load_config, with_fields
from tests.paths import ROOT

pytestmark = pytest.mark.slow


def tiny_config(**overrides):
    config = load_config("tiny")
    config.train.sequences = 2
    config.train.steps_per_sequence = 3
    config.eval.steps = 2
    config.data.n_edits = 5
    config.data.batch_size = 2
    return with_fields(config, **overrides)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("tiny")
    metrics = train_and_evaluate(tiny_config(trace=True), str(workdir))
    return workdir, metrics


def test_outputs_and_metrics(run):
    workdir, metrics = run
    assert json.loads((workdir / "metrics.json").read_text()) == metrics
    for name in ("ES", "GS", "LS"):
        assert 0.0 <= metrics[name] <= 1.0
    lines = [json.loads(l) for l in (workdir / "train_metrics.jsonl").read_text().splitlines()]
    assert [(l["sequence"], l["step"]) for l in lines] == [(e, t) for e in range(2) for t in range(3)]
    assert all(np.isfinite(l["loss"]) and np.isfinite(l["acc_norm"]) for l in lines)
    resolved = json.loads((workdir / "config.json").read_text())
    assert resolved["train"]["steps_per_sequence"] == 3 and resolved["hparams"]["rank"] == 32


def test_trace_contents(run):
    workdir, _ = run
    trace = np.load(workdir / "trace.npz")
    site = "transformer.h.3.mlp.fc_out"
    for split, steps in (("train", 3), ("eval", 2)):
        for t in range(steps):
            assert trace[f"{split}/step{t}/{site}/shift"].shape == (256, 64)
    assert f"train/step3/{site}/shift" not in trace
    lines = [json.loads(l) for l in (workdir / "train_metrics.jsonl").read_text().splitlines()]
    last_epoch = [l for l in lines if l["sequence"] == 1]
    for t in range(3):
        np.testing.assert_allclose(trace[f"train/step{t}/gen_loss"], last_epoch[t]["gen_loss"], rtol=1e-6)
    grads = {k[len("train/grad/") :]: trace[k] for k in trace if k.startswith("train/grad/")}
    assert "(256, 64).blocks.0.B" in grads and "(256, 64).lamda.weight" in grads
    assert np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in grads.values())) <= 1.0 + 1e-5


def test_exported_hypernet_restarts_training(run, tmp_path):
    workdir, _ = run
    state = reference_io.load_reference_file(workdir / "hypernet.safetensors")
    assert state["(256, 64).normalizer.n"][0] > 0  # normaliser statistics travel with the weights
    config = tiny_config(**{"init.reference_hypernet": str(workdir / "hypernet.safetensors"), "train.sequences": 1})
    train_and_evaluate(config, str(tmp_path))
    wrong_sites = tiny_config(
        **{
            "init.reference_hypernet": str(workdir / "hypernet.safetensors"),
            "model.edit_sites": ["transformer.h.3.mlp.fc_out"],
        }
    )
    with pytest.raises(ValueError, match=r"need \{\(256, 64\): 1\}"):
        train_and_evaluate(wrong_sites, str(tmp_path / "wrong"))


def test_fixed_edit_stream_is_reproducible(tmp_path):
    stream = {
        "train": [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11, 12, 13, 14]],
        "eval": [[0, 2, 4, 6, 8], [1, 3, 5, 7, 9]],
    }
    reordered = {**stream, "train": stream["train"][::-1]}
    runs = {}
    for name, content in (("a", stream), ("b", stream), ("reordered", reordered)):
        (tmp_path / f"{name}.json").write_text(json.dumps(content))
        config = tiny_config(**{"data.stream_file": str(tmp_path / f"{name}.json")})
        metrics = train_and_evaluate(config, str(tmp_path / name))
        losses = [json.loads(l)["gen_loss"] for l in (tmp_path / name / "train_metrics.jsonl").open()]
        runs[name] = (losses, metrics["ES"])
    assert runs["a"] == runs["b"]
    # Step 0 of the reordered stream edits the facts that step 2 of the original edits.
    assert runs["reordered"][0][0] != runs["a"][0][0]
    (tmp_path / "short.json").write_text(json.dumps({**stream, "train": stream["train"][:2]}))
    bad = tiny_config(**{"data.stream_file": str(tmp_path / "short.json")})
    with pytest.raises(ValueError, match="multiple of train.steps_per_sequence=3"):
        train_and_evaluate(bad, str(tmp_path / "bad"))


def test_bin_train_cli(tmp_path):
    result = run_bin(
        "train",
        f"--config={ROOT / 'configs' / 'tiny.py'}",
        f"--workdir={tmp_path}",
        "--config.train.sequences=1",
        "--config.train.steps_per_sequence=2",
        "--config.eval.steps=2",
        "--config.data.n_edits=4",
        "--config.hparams.rank=8",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ES=" in result.stdout
    assert json.loads((tmp_path / "config.json").read_text())["hparams"]["rank"] == 8
    unknown = run_bin(
        "train", f"--config={ROOT / 'configs' / 'tiny.py'}", f"--workdir={tmp_path}/x", "--config.hparams.rnak=8"
    )
    assert unknown.returncode != 0 and "rnak" in unknown.stderr
