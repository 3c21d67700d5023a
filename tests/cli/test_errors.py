"""Every entry point answers bad input with one line and exit code 2, a runtime failure with exit 1.

Runs the real `bin/` scripts; `--debug` adds the Python traceback.
"""

import re

import pytest

from tests.cli.run_bin import run_bin
from tests.paths import ROOT, SHARED

TINY = f"--config={ROOT / 'configs' / 'tiny.py'}"
SHORT = ("--config.train.sequences=1", "--config.train.steps_per_sequence=2", "--config.eval.steps=2")
pytestmark = pytest.mark.slow


def not_json(tmp_path):
    path = tmp_path / "facts.json"
    path.write_text("{not json")
    return f"--config.data.train_path={path}", f"--config.data.eval_path={path}"


CASES = {
    "train: data file not JSON": (
        "train",
        not_json,
        2,
        r"facts\.json: invalid JSON \(Expecting property name",
    ),
    "train: unknown edit site": (
        "train",
        lambda _: ("--config.model.edit_sites=('transformer.h.9.mlp.fc_out',)",),
        2,
        r"config field model\.edit_sites: unknown edit site 'transformer\.h\.9\.mlp\.fc_out'",
    ),
    "train: nan learning rate": (
        "train",
        lambda _: ("--config.hparams.lr=nan",),
        2,
        r"config field hparams\.lr=nan: must be a finite number > 0",
    ),
    "train: non-finite loss": (
        "train",
        lambda _: ("--config.hparams.lr=1e30",),
        1,
        r"non-finite training loss in sequence 0; see .*train_metrics\.jsonl",
    ),
    "train: flag value": ("train", lambda _: ("--config.hparams.rank=abc",), 2, r"flag --config\.hparams\.rank=abc"),
    "train: unknown flag": ("train", lambda _: ("--config.hparams.rnak=8",), 2, r"rnak"),
    "train: stray argument": ("train", lambda _: ("extra",), 2, r"unexpected arguments: \['extra'\]"),
    "plan: unknown model": ("plan", lambda _: ("--model=gpt-x",), 2, r"unknown model 'gpt-x'; known: \[.*'gpt-j-6b'"),
    "plan: bad steps": ("plan", lambda _: ("--steps=10,x",), 2, r"--steps must be a comma-separated list of positive"),
    "plan: bad mode": ("plan", lambda _: ("--modes=full",), 2, r"--modes: unknown gradient modes \['full'\]"),
    "bench: bad config": (
        "bench",
        lambda _: ("--config.data.batch_size=0",),
        2,
        r"data\.batch_size=0: must be an int",
    ),
    "edit: missing flags": ("edit", lambda _: (), 2, r"missing --hypernet, --requests, --out"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_one_line_and_exit_code(tmp_path, case):
    script, extra, code, message = CASES[case]
    workdir = () if script != "train" else (f"--workdir={tmp_path / 'run'}",)
    result = run_bin(script, TINY, *workdir, *SHORT[: 3 if script == "train" else 0], *extra(tmp_path))
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode == code, result.stderr[-2000:]
    assert last.startswith(f"bin/{script}: error: ") and re.search(message, last), last
    assert "Traceback" not in result.stderr


def test_malformed_shared_row_names_file_row_key_and_the_relaxing_flag(tmp_path):
    train, evals = SHARED / "data" / "zsre" / "zsre_train.json", SHARED / "data" / "zsre" / "zsre_eval.json"
    if not train.is_file():
        pytest.skip(f"shared data not found at {train}")
    result = run_bin(
        "train",
        TINY,
        f"--workdir={tmp_path / 'run'}",
        *SHORT,
        f"--config.data.train_path={train}",
        f"--config.data.eval_path={evals}",
        f"--config.data.tokenizer_path={SHARED / 'tokenizers' / 'gpt2'}",
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"bin/train: error: {train} row 166: key 'alt' is an empty string "
        "(--config.data.skip_malformed=True skips and counts such rows)"
    )
    assert not (tmp_path / "run").exists()


def test_debug_shows_the_traceback(tmp_path):
    result = run_bin("train", TINY, f"--workdir={tmp_path}", "--config.hparams.lr=nan", "--debug")
    assert result.returncode == 2 and "Traceback" in result.stderr and "ConfigError" in result.stderr
