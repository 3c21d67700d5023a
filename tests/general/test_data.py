"""The test split of a task file and where generation stops."""

import json

import pytest

from rledit_jax.general import data, stop_ids_of
from rledit_jax.general.stopping import cut_at_stop
from tests.paths import SHARED


def test_tests_follow_the_ten_few_shot_records(tmp_path):
    records = [{"sentence": str(i), "label": i % 2} for i in range(13)]
    (tmp_path / "sst2.json").write_text(json.dumps(records))
    assert data.load_tests(tmp_path, "sst2", 3) == records[10:13]
    with pytest.raises(ValueError, match="4 tests asked for, between 1 and 3 available"):
        data.load_tests(tmp_path, "sst2", 4)
    (tmp_path / "cola.json").write_text(json.dumps({"not": "a list"}))
    with pytest.raises(ValueError, match="cola.json: expected a JSON list of objects"):
        data.load_tests(tmp_path, "cola", 1)
    with pytest.raises(FileNotFoundError):
        data.load_tests(tmp_path, "mrpc", 1)


def test_real_split_sizes():
    path = SHARED / "data" / "general"
    if not path.is_dir():
        pytest.skip(f"shared data not found at {path}")
    rows = json.loads((path / "mrpc.json").read_text())  # 258 records (SOURCES.md)
    assert data.load_tests(path, "mrpc", 100) == rows[10:110]
    assert len(data.load_tests(path, "mrpc", 248)) == 248


def test_stop_ids(tmp_path):
    assert stop_ids_of(tmp_path) == ()
    (tmp_path / "config.json").write_text(json.dumps({"eos_token_id": 50256}))
    assert stop_ids_of(tmp_path) == (50256,)
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [128001, 128009]}))
    assert stop_ids_of(tmp_path) == (128001, 128009)
    assert cut_at_stop([5, 7, 128009, 3, 128001], (128001, 128009)) == [5, 7, 128009]
    assert cut_at_stop([5, 7], (0,)) == [5, 7]
