"""bin/compare end to end on the tiny default (shrunk): every method on one stream, one table."""

import json

import pytest

from rledit_jax import config_schema
from rledit_jax.report import inputs
from tests.cli.run_bin import run_bin
from tests.paths import ROOT

pytestmark = pytest.mark.slow

SHRINK = {
    "train.sequences": 1,
    "train.steps_per_sequence": 2,
    "eval.steps": 2,
    "data.n_edits": 4,
    "baselines.ft.steps": 2,
    "baselines.retrain.every": 2,
}


def test_bin_compare_tables_every_method(tmp_path):
    workdir = tmp_path / "compare"
    overrides = [f"--config.{k}={v}" for k, v in SHRINK.items()]
    result = run_bin("compare", f"--config={ROOT / 'configs' / 'tiny.py'}", *overrides, f"--workdir={workdir}")
    assert result.returncode == 0, result.stderr[-3000:]

    methods = list(config_schema.METHODS)
    table = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| method | ES (%) | GS (%) | LS (%) | train (s) | edit (s) | peak memory")
    assert [line.split("|")[1].strip() for line in table[2:]] == methods
    assert "\n".join(table) in (workdir / "compare.md").read_text()

    compare = inputs.read_file(str(workdir / "compare.json"), inputs.FILES["compare.json"])
    assert [m["method"] for m in compare["methods"]] == methods
    assert compare["stream"] == {"train batches": 2, "eval steps": 2, "edits per step": 4, "facts edited": 8}
    for row in compare["methods"]:
        metrics = json.loads((workdir / row["method"] / "metrics.json").read_text())
        assert {k: metrics[k] for k in ("ES", "GS", "LS", "edit_seconds")} == {
            k: row[k] for k in ("ES", "GS", "LS", "edit_seconds")
        }
        assert metrics["n_eval_facts"] == 8 and row["peak_memory_bytes"] > 0
        trained = row["method"] not in ("ridge", "ft")
        assert (row["train_seconds"] is not None) == trained
        resolved = json.loads((workdir / row["method"] / "config.json").read_text())
        assert resolved["method"] == row["method"] and resolved["eval"]["steps"] == 2
    # Written whole or not at all: no temporary file is left beside the results.
    assert not [p.name for p in workdir.iterdir() if p.name.startswith(".")]


def test_bin_compare_unknown_method_is_one_line(tmp_path):
    config = f"--config={ROOT / 'configs' / 'tiny.py'}"
    result = run_bin("compare", config, "--methods=rledit,sgd", f"--workdir={tmp_path}")
    assert result.returncode == 2
    assert "unknown: ['sgd']" in result.stderr and "Traceback" not in result.stderr
    assert not list(tmp_path.iterdir())
