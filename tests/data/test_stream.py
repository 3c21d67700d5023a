"""Edit streams: drawing, validating and reading stream files."""

import json

import pytest

from rledit_jax.data import draw_stream, load_stream_file, validate_stream


def test_draw_stream_is_a_seeded_shuffle_without_replacement():
    steps = draw_stream(100, 4, 20, seed=0)
    assert len(steps) == 4 and all(len(step) == 20 for step in steps)
    flat = [i for step in steps for i in step]
    assert len(set(flat)) == 80 and all(0 <= i < 100 for i in flat)
    assert all(type(i) is int for i in flat)
    assert steps == draw_stream(100, 4, 20, seed=0)
    assert steps != draw_stream(100, 4, 20, seed=1)
    everything = draw_stream(12, 3, 4, seed=5)
    assert sorted(i for step in everything for i in step) == list(range(12))
    assert everything != [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]


def test_draw_stream_errors():
    with pytest.raises(ValueError, match="needs 21 distinct rows, the data has 20"):
        draw_stream(20, 7, 3, seed=0)
    with pytest.raises(ValueError, match="n_steps and n_edits must be >= 1"):
        draw_stream(20, 0, 3, seed=0)


@pytest.mark.parametrize(
    "steps,message",
    [
        ([], "expected a non-empty list of steps"),
        ([[0, 1], []], "step 1 should be a non-empty list of row indices"),
        ([[0, 1], 2], "step 1 should be a non-empty list of row indices"),
        ([[0, 1], [2, 3, 4]], "step 1 has 3 edits, step 0 has 2"),
        ([[0, 1.0]], "step 0 holds 1.0, not an integer row index"),
        ([[0, True]], "step 0 holds True, not an integer row index"),
        ([[0, "1"]], "step 0 holds '1', not an integer row index"),
        ([[0, 1], [2, 10]], r"step 1 holds row 10, outside \[0, 10\)"),
        ([[0, -1]], r"step 0 holds row -1, outside \[0, 10\)"),
    ],
)
def test_validate_stream_errors(steps, message):
    with pytest.raises(ValueError, match=message):
        validate_stream(steps, 10)


def test_validate_stream_accepts_a_good_stream():
    validate_stream([[0, 9], [3, 4]], 10)


def test_load_stream_file(tmp_path):
    path = tmp_path / "stream.json"
    path.write_text(json.dumps({"train": [[0, 1], [2, 3]], "eval": [[4, 5, 6]]}))
    assert load_stream_file(path) == {"train": [[0, 1], [2, 3]], "eval": [[4, 5, 6]]}


@pytest.mark.parametrize(
    "content,message",
    [
        ("[[0, 1]]", r"expected a JSON object with keys \['train', 'eval'\], got list"),
        ('{"train": [[0]]}', r"expected a JSON object with keys \['train', 'eval'\], got \['train'\]"),
        ('{"train": [[0]], "eval": [[1]], "test": [[2]]}', r"got \['eval', 'test', 'train'\]"),
        ('{"train": [[0]], "eval": [[1], [2, 3]]}', r"\['eval'\]: step 1 has 2 edits, step 0 has 1"),
        ('{"train": [[0], ["x"]], "eval": [[1]]}', r"\['train'\]: step 1 holds 'x'"),
        ('{"train": [[0]], "eval": [[1]]', "invalid JSON"),
    ],
)
def test_load_stream_file_errors(tmp_path, content, message):
    path = tmp_path / "stream.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_stream_file(path)


def test_load_stream_file_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="stream file not found"):
        load_stream_file(tmp_path / "none.json")
