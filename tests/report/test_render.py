"""`report.render` on a synthetic run directory written here in the documented formats."""

import json

import numpy as np
import pytest
from PIL import Image

from rledit_jax import report

STEPS = 3  # steps per training sequence


def _lines(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def write_run(d, skip=()):
    files = {
        "train_metrics.jsonl": [
            {
                "sequence": s,
                "step": t,
                "loss": 3.0 - 0.1 * (s * STEPS + t),
                "gen_loss": 2.0 - 0.05 * t,
                "loc_loss": 0.25 + 0.01 * s,
                "reg": 1e-4,
                "grad_norm": 0.5,
                "acc_norm": 0.7,
            }
            for s in range(2)
            for t in range(STEPS)
        ],
        "curve.jsonl": [
            {
                "evaluation": e,
                "step": t,
                "edits": 20 * (t + 1),
                "all": {"ES": 0.9 - 0.1 * t, "GS": 0.8 - 0.1 * t, "LS": 0.7},
                "first": {"ES": 0.95 - 0.2 * t, "GS": 0.85 - 0.2 * t, "LS": 0.6},
            }
            for e in range(2)
            for t in range(3)
        ],
        "general.jsonl": [
            {"edits": n, "tasks": {"sst2": {"f1": 0.61 - n / 1000, "mcc": 0.2}, "mmlu": {"f1": 0.3125, "mcc": 0.0}}}
            for n in (0, 100, 200)
        ],
    }
    for name, rows in files.items():
        if name not in skip:
            _lines(d / name, rows)
    if "metrics.json" not in skip:
        (d / "metrics.json").write_text(json.dumps({"ES": 0.875, "GS": 0.8125, "LS": 0.4375, "train_seconds": 12.5}))
    if "compare.json" not in skip:
        methods = [
            {
                "method": "RLEdit",
                "ES": 0.9123,
                "GS": 0.8456,
                "LS": 0.5,
                "train_seconds": 3600.0,
                "edit_seconds": 42.0,
                "peak_memory_bytes": 3 * 2**30,
            },
            {
                "method": "MEND",
                "ES": 0.25,
                "GS": 0.2,
                "LS": 0.1,
                "train_seconds": None,
                "edit_seconds": 7.5,
                "peak_memory_bytes": None,
            },
        ]
        (d / "compare.json").write_text(json.dumps({"methods": methods}))


PNGS = ["train_losses.png", "curve_eval0.png", "curve_eval1.png", "general.png", "compare.png"]


def _check_png(path):
    image = np.asarray(Image.open(path).convert("RGB"))
    assert image.shape == (450, 800, 3)
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 1


def test_full_report(tmp_path):
    write_run(tmp_path)
    path = report.render(str(tmp_path))
    text = (tmp_path / "report.md").read_text()
    assert path == str(tmp_path / "report.md")
    for png in PNGS:
        _check_png(tmp_path / png)
        assert f"]({png})" in text
    for title, source in [
        ("## Final scores", "metrics.json"),
        ("## Methods compared", "compare.json"),
        ("## Training", "train_metrics.jsonl"),
        ("## Retention curves", "curve.jsonl"),
        ("## General ability", "general.jsonl"),
    ]:
        section = text.split(title, 1)[1].split("\n## ", 1)[0]
        assert f"Source: `{source}`" in section
    assert "Not in this run directory" not in text
    # metrics.json in percent, run facts as they are
    assert "| ES | 87.50 |" in text and "| GS | 81.25 |" in text and "| LS | 43.75 |" in text
    assert "| train_seconds | 12.5 |" in text
    # compare.json: 3 GiB, a null as a dash
    assert "| RLEdit | 91.23 | 84.56 | 50.00 | 3600 | 42 | 3 |" in text
    assert "| MEND | 25.00 | 20.00 | 10.00 | – | 7.5 | – |" in text
    # training: 2 sequences of 3 steps; the last step's losses (global step 5)
    assert "6 steps: 2 sequences of 3 steps" in text
    assert "| sequence 1 step 2 | 2.5 | 1.9 | 0.26 |" in text
    # retention: the last point of each evaluation (edits 60)
    assert "| 1 | 2 | 60 | 70.00 | 60.00 | 70.00 | 55.00 | 45.00 | 60.00 |" in text
    # general: f1 per task and measurement
    assert "| edits | sst2 | mmlu |" in text and "| 200 | 0.41 | 0.3125 |" in text


@pytest.mark.parametrize(
    "missing", ["train_metrics.jsonl", "curve.jsonl", "general.jsonl", "metrics.json", "compare.json"]
)
def test_a_missing_file_omits_its_section(tmp_path, missing):
    write_run(tmp_path, skip=(missing,))
    report.render(str(tmp_path))
    text = (tmp_path / "report.md").read_text()
    assert f"- `{missing}` not found" in text
    assert f"Source: `{missing}`" not in text
    assert sum("Source: `" in line for line in text.splitlines()) == 4


def test_an_empty_run_directory(tmp_path):
    report.render(str(tmp_path))
    text = (tmp_path / "report.md").read_text()
    assert text.count("not found") == 5 and not list(tmp_path.glob("*.png"))
    _lines(tmp_path / "curve.jsonl", [])
    report.render(str(tmp_path))
    assert "- `curve.jsonl` holds no records" in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("curve.jsonl", '{"evaluation": 0}\n\n{oops\n', r"curve.jsonl line 1: key 'step' is missing"),
        ("train_metrics.jsonl", "\n{oops\n", r"train_metrics.jsonl line 2: invalid JSON"),
        (
            "general.jsonl",
            '{"edits": 1, "tasks": {"sst2": {"f1": "high"}}}\n',
            r"line 1 key 'tasks' key 'sst2' key 'f1' should be a number",
        ),
        ("metrics.json", '{"ES": 1, "GS": true, "LS": 0}', r"metrics.json key 'GS' should be a number"),
        ("compare.json", '{"methods": [{"method": "x"}]}', r"compare.json key 'methods' item 0: key 'ES' is missing"),
    ],
)
def test_malformed_inputs(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(ValueError, match=message):
        report.render(str(tmp_path))
    assert not (tmp_path / "report.md").exists()


def test_no_such_directory(tmp_path):
    with pytest.raises(ValueError, match="run directory not found"):
        report.render(str(tmp_path / "absent"))


def test_compare_without_methods(tmp_path):
    (tmp_path / "compare.json").write_text('{"methods": []}')
    report.render(str(tmp_path))
    assert "- `compare.json` holds no records" in (tmp_path / "report.md").read_text()
