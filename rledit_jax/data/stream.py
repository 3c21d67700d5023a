"""Edit streams: which dataset rows are edited at which step.

A stream is `steps: list[list[int]]`, T steps of n_edits row indices each (indices into the facts
list a loader returned). A stream file is JSON `{"train": steps, "eval": steps}`.
"""

import json
from pathlib import Path

import numpy as np

STREAM_SPLITS = ("train", "eval")


def draw_stream(n_rows: int, n_steps: int, n_edits: int, seed: int) -> list[list[int]]:
    """`n_steps` steps of `n_edits` distinct rows, a seeded shuffle of `range(n_rows)`."""
    if n_steps < 1 or n_edits < 1:
        raise ValueError(f"n_steps and n_edits must be >= 1, got {n_steps} and {n_edits}")
    if n_steps * n_edits > n_rows:
        raise ValueError(
            f"a stream of {n_steps} steps x {n_edits} edits needs {n_steps * n_edits} distinct rows, "
            f"the data has {n_rows}"
        )
    order = np.random.default_rng(seed).permutation(n_rows)[: n_steps * n_edits]
    return order.reshape(n_steps, n_edits).tolist()


def _check_shape(steps: object, what: str) -> list[list[int]]:
    if not isinstance(steps, list) or not steps:
        raise ValueError(f"{what}: expected a non-empty list of steps")
    n_edits = None
    for t, step in enumerate(steps):
        if not isinstance(step, list) or not step:
            raise ValueError(f"{what}: step {t} should be a non-empty list of row indices")
        if n_edits is None:
            n_edits = len(step)
        if len(step) != n_edits:
            raise ValueError(f"{what}: step {t} has {len(step)} edits, step 0 has {n_edits}")
        for i in step:
            # bool is an int subclass; reject it along with floats and strings.
            if not isinstance(i, int) or isinstance(i, bool):
                raise ValueError(f"{what}: step {t} holds {i!r}, not an integer row index")
    return steps


def validate_stream(steps: list[list[int]], n_rows: int, what: str = "stream") -> None:
    """Raises ValueError unless `steps` is T equal-length lists of indices in [0, n_rows)."""
    for t, step in enumerate(_check_shape(steps, what)):
        for i in step:
            if not 0 <= i < n_rows:
                raise ValueError(f"{what}: step {t} holds row {i}, outside [0, {n_rows})")


def load_stream_file(path: str | Path) -> dict[str, list[list[int]]]:
    """Reads `{"train": steps, "eval": steps}`; row ranges are checked later by `validate_stream`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"stream file not found: {path}")
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: invalid JSON ({error})") from None
    if not isinstance(content, dict) or sorted(content) != sorted(STREAM_SPLITS):
        found = sorted(content) if isinstance(content, dict) else type(content).__name__
        raise ValueError(f"{path}: expected a JSON object with keys {list(STREAM_SPLITS)}, got {found}")
    return {split: _check_shape(content[split], f"{path} [{split!r}]") for split in STREAM_SPLITS}
