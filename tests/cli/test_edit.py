"""`bin/edit` end to end on the tiny config, and every bad input stopping before anything is written.

Oracles: torch `transformers` on the exported directory (the printed "after" probabilities) and on
the unedited tiny model saved as an HF directory (the "before" ones); the exported tensors of the
full export for apply-delta.
"""

import json
import os
import pickle

import numpy as np
import pytest
import safetensors.numpy
import torch
import transformers

from rledit_jax import data, models, run
from rledit_jax.cli import edit as cli
from rledit_jax.method import reference_io
from rledit_jax.method.sites import make_layout
from tests.cli.run_bin import run_bin
from tests.editing.test_session import random_hypernets, tiny_config
from tests.paths import ROOT

LINES = [
    '{"prompt": "The capital of Zorvia is", "target_new": "Paris", "rephrase": "Zorvia has its capital in"}',
    "",
    '{"prompt": "{} are", "subject": "Cats", "target_new": {"str": "green"}}',
    '{"prompt": "The largest river of Kelmaria is the", "target_new": "Doran river"}',
]


def write_hypernet(path, sites=None, lr=0.1, poison=None):
    config = tiny_config()
    llm_config, _ = run.load_model(config.model)
    layout = make_layout(llm_config, list(sites or config.model.edit_sites))
    state = reference_io.to_reference(random_hypernets(layout, config, lr=lr))
    if poison:
        state[poison] = np.full_like(state[poison], np.nan)
    reference_io.save_reference_file(str(path), state)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("edit")
    (root / "edits.jsonl").write_text("\n".join(LINES) + "\n")
    return root, write_hypernet(root / "hypernet.safetensors"), root / "edits.jsonl"


def bin_edit(*args):
    return run_bin("edit", *args)


def edit_args(hypernet, requests, out, *extra):
    return (
        f"--config={ROOT / 'configs' / 'tiny.py'}",
        "--config.data.n_edits=2",
        "--config.data.batch_size=2",
        f"--hypernet={hypernet}",
        f"--requests={requests}",
        f"--out={out}",
        *extra,
    )


def target_log_prob(model, prompt, target):
    tok = data.TinyTokenizer()
    p, t = tok.encode(prompt), tok.encode(" " + target)
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([p + t])).logits[0].double(), -1)
    return sum(float(logp[len(p) - 1 + j, x]) for j, x in enumerate(t))


@pytest.fixture(scope="module")
def hf_run(files):
    root, hypernet, requests = files
    result = bin_edit(*edit_args(hypernet, requests, root / "hf"))
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "hf", result.stdout


@pytest.mark.slow
def test_bin_edit_prints_and_exports_hf(files, hf_run, tmp_path):
    root, _, requests = files
    out, stdout = hf_run
    assert "3 requests in 2 batch(es) of up to 2" in stdout
    assert "batch 0 (requests 1-2)" in stdout and "batch 1 (requests 3-3)" in stdout
    for line in (1, 3, 4):
        assert f"{requests}:{line}: " in stdout
    assert stdout.count("  before p=") == 3 and stdout.count("  after  p=") == 3
    assert stdout.count("rephrase p=") == 2 and "greedy '" in stdout
    assert {"config.json", "model.safetensors", "edit_report.json"} <= set(os.listdir(out))

    report = json.loads((out / "edit_report.json").read_text())
    edited = transformers.AutoModelForCausalLM.from_pretrained(str(out), torch_dtype=torch.float32).eval()
    base_dir = tmp_path / "base"
    llm_config, params = run.load_model(tiny_config().model)
    models.save_hf(llm_config, params, str(base_dir))
    base = transformers.AutoModelForCausalLM.from_pretrained(str(base_dir), torch_dtype=torch.float32).eval()
    prompts = ["The capital of Zorvia is", "Cats are", "The largest river of Kelmaria is the"]
    targets = ["Paris", "green", "Doran river"]
    for row, prompt, target in zip(report["requests"], prompts, targets):
        assert (row["prompt"], row["target_new"]) == (prompt, target)
        assert row["before"]["log_p"] == pytest.approx(target_log_prob(base, prompt, target), abs=1e-4)
        assert row["after"]["log_p"] == pytest.approx(target_log_prob(edited, prompt, target), abs=1e-4)
        assert row["after"]["log_p"] != pytest.approx(row["before"]["log_p"], abs=1e-3)
        assert f"p={row['after']['p']:.4g} ({row['after']['n_tokens']} tokens)" in stdout
    rephrase = report["requests"][0]
    assert np.log(rephrase["after"]["rephrase_p"]) == pytest.approx(
        target_log_prob(edited, "Zorvia has its capital in", "Paris"), abs=1e-4
    )
    assert [b["requests"] for b in report["batches"]] == [[f"{requests}:1", f"{requests}:3"], [f"{requests}:4"]]


@pytest.mark.slow
def test_delta_export_then_bin_edit_apply_delta_equals_hf_export(files):
    root, hypernet, requests = files
    config = tiny_config()
    config.data.n_edits = config.data.batch_size = 2
    for fmt in ("hf", "delta"):
        cli.edit_model(
            config,
            hypernet=str(hypernet),
            requests_path=str(requests),
            out=str(root / f"lib-{fmt}"),
            fmt=fmt,
            echo=lambda _: None,
        )
    delta = root / "lib-delta"
    manifest = json.loads((delta / "manifest.json").read_text())
    assert manifest["base"]["kind"] == "tiny" and manifest["base"]["tiny"]["seed"] == 0
    assert [s["tensor"] for s in manifest["sites"]] == [
        "transformer.h.2.mlp.fc_out.weight",
        "transformer.h.3.mlp.fc_out.weight",
    ]
    assert manifest["edits"]["n_requests"] == 3 and manifest["edits"]["n_batches"] == 2
    assert sorted(os.listdir(delta)) == ["delta.safetensors", "edit_report.json", "manifest.json"]

    result = bin_edit("apply-delta", f"--delta={delta}", f"--out={root / 'applied'}")
    assert result.returncode == 0, result.stderr[-3000:]
    full = safetensors.numpy.load_file(root / "lib-hf" / "model.safetensors")
    applied = safetensors.numpy.load_file(root / "applied" / "model.safetensors")
    assert full.keys() == applied.keys()
    for name in full:
        np.testing.assert_array_equal(applied[name], full[name], err_msg=name)
    again = bin_edit("apply-delta", f"--delta={delta}", f"--out={root / 'applied'}")
    assert again.returncode == 2 and "exists; pass --overwrite" in again.stderr


@pytest.mark.slow
def test_bin_edit_bad_input_exits_with_message(files, tmp_path):
    _, hypernet, _ = files
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "target_new": "b"}\nnot json\n\n{"prompt": "x"}\n')
    result = bin_edit(*edit_args(hypernet, bad, tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[0] == f"bin/edit: error: 2 malformed request line(s) in {bad}:"
    assert f"{bad}:2: not valid JSON" in result.stderr and f"{bad}:4: missing 'target_new'" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()
    usage = bin_edit("apply-delta", f"--out={tmp_path / 'out'}")
    assert usage.returncode == 2 and "missing --delta" in usage.stderr


# ------------------------------------------------------------------- bad inputs, in process


class Marker:
    """Unpickling this runs code (writes a file); weights_only loading must refuse it."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def bad_hypernet(tmp_path, kind):
    if kind == "other_sites":
        return write_hypernet(tmp_path / "h.safetensors", sites=["transformer.h.3.mlp.fc_out"])
    if kind == "other_shapes":
        return write_hypernet(
            tmp_path / "h.safetensors", sites=["transformer.h.2.attn.q_proj", "transformer.h.3.attn.q_proj"]
        )
    if kind == "nan":
        return write_hypernet(tmp_path / "h.safetensors", poison="(256, 64).blocks.0.A")
    if kind == "huge_lr":
        return write_hypernet(tmp_path / "h.safetensors", lr=3e38)
    if kind == "pickle":
        path = tmp_path / "h.pth"
        with open(path, "wb") as f:
            pickle.dump({"(256, 64).lr.weight": Marker(tmp_path / "pwned")}, f, protocol=2)
        return path
    if kind == "damaged":
        path = tmp_path / "h.safetensors"
        path.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
        return path
    if kind == "trained_elsewhere":  # right shapes, but bin/train's config.json names other sites
        (tmp_path / "config.json").write_text(
            json.dumps({"model": {"edit_sites": ["transformer.h.0.mlp.fc_out", "transformer.h.1.mlp.fc_out"]}})
        )
        return write_hypernet(tmp_path / "h.safetensors")
    if kind == "missing":
        return tmp_path / "nope.safetensors"
    raise AssertionError(kind)


REQUEST_CASES = {
    "empty": ("\n\n", r"holds no requests"),
    "malformed": (
        '[1, 2]\n{"prompt": 3, "target_new": "a"}\n{"prompt": "a", "target_new": "b", "traget": 1}\n',
        r"(?s)3 malformed request line\(s\).*:1: expected a JSON object.*:2: 'prompt' must be a string"
        r".*:3: unknown keys \['traget'\]",
    ),
    "empty_target": (
        '{"prompt": "Cats are", "target_new": "green"}\n{"prompt": "Cats are", "target_new": "  "}\n',
        r"requests.jsonl:2: target_new is empty",
    ),
    "too_long": (
        '{"prompt": "Cats are", "target_new": "green"}\n{"prompt": "' + "the " * 130 + '", "target_new": "green"}\n',
        r"1 request\(s\) cannot be edited:\n  .*requests.jsonl:2: prompt and target are 13\d tokens, "
        r"longer than the model's context of 128 tokens",
    ),
    "placeholder": (
        '{"prompt": "{} are", "target_new": "green"}\n',
        r"requests.jsonl:1: .*placeholder but no 'subject'",
    ),
}
HYPERNET_CASES = {
    "other_sites": r"holds hypernetworks for .* \{\(256, 64\): 1\}, but the edit sites .* need \{\(256, 64\): 2\}",
    "other_shapes": r"holds hypernetworks for .* \{\(64, 64\): 2\}, but .* need \{\(256, 64\): 2\}",
    "nan": r"holds non-finite values",
    "huge_lr": r"batch 0 \(requests 1-1\): the edit produced a non-finite shift.*nothing was written",
    "pickle": r"cannot read hypernetwork .*h.pth: .*Unpickl",
    "damaged": r"cannot read hypernetwork",
    "missing": r"does not exist",
    "trained_elsewhere": (
        r"was trained for the edit sites \['transformer.h.0.mlp.fc_out', .*set --config.model.edit_sites"
    ),
}


def run_in_process(tmp_path, requests_text, hypernet, **kwargs):
    requests = tmp_path / "requests.jsonl"
    requests.write_text(requests_text)
    config = tiny_config()
    return cli.edit_model(
        config,
        hypernet=str(hypernet),
        requests_path=str(requests),
        out=str(tmp_path / "out"),
        echo=lambda _: None,
        **kwargs,
    )


@pytest.mark.parametrize("case", sorted(REQUEST_CASES))
def test_bad_requests_stop_before_writing(files, tmp_path, case):
    text, message = REQUEST_CASES[case]
    with pytest.raises(ValueError, match=message):
        run_in_process(tmp_path, text, files[1])
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", sorted(HYPERNET_CASES))
def test_bad_hypernetworks_stop_before_writing(tmp_path, case):
    hypernet = bad_hypernet(tmp_path, case)
    with pytest.raises((ValueError, FloatingPointError, FileNotFoundError), match=HYPERNET_CASES[case]):
        run_in_process(tmp_path, '{"prompt": "Cats are", "target_new": "green"}\n', hypernet)
    assert not (tmp_path / "out").exists() and not (tmp_path / "pwned").exists()
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".out")]


def test_existing_output_is_refused_and_interrupted_export_leaves_nothing(files, tmp_path, monkeypatch):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="exists; pass --overwrite"):
        run_in_process(tmp_path, '{"prompt": "Cats are", "target_new": "green"}\n', files[1])
    assert os.listdir(tmp_path / "out") == ["keep.txt"]

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.numpy, "save_file", interrupted)
    for fmt in ("hf", "delta"):
        with pytest.raises(KeyboardInterrupt):
            run_in_process(
                tmp_path, '{"prompt": "Cats are", "target_new": "green"}\n', files[1], fmt=fmt, overwrite=True
            )
        assert os.listdir(tmp_path / "out") == ["keep.txt"]
        assert not [n for n in os.listdir(tmp_path) if n.startswith(".out")]
