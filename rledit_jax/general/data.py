"""The test examples of a task: `DATA_DIR/{task}.json`, a JSON list of records (see `tasks.py`).

As the reference's `load_data_split` (`glue_eval/useful_functions.py`): the first 10 records are the
few-shot pool (unused at zero shots), the tests are the `n_tests` records after them.
"""

import json
from pathlib import Path

FEW_SHOT_POOL = 10


def load_tests(data_dir: str | Path, task: str, n_tests: int) -> list[dict]:
    path = Path(data_dir) / f"{task}.json"
    with open(path) as f:
        records = json.load(f)
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise ValueError(f"{path}: expected a JSON list of objects")
    available = len(records) - FEW_SHOT_POOL
    if not 0 < n_tests <= available:
        raise ValueError(f"{path}: {n_tests} tests asked for, between 1 and {available} available")
    return records[FEW_SHOT_POOL : FEW_SHOT_POOL + n_tests]
