"""How close each numeric check of the suite comes to its tolerance, recorded on request.

    RLEDIT_MARGINS=margins.jsonl make test      # then: python tools/margins.py margins.jsonl

`check(what, measured, tolerance)` is how a test asserts a measured error against its tolerance: it
prints both (shown with `pytest -s`) and, when `RLEDIT_MARGINS` names a file, appends one JSON line
`{"test", "what", "measured", "tolerance", "margin"}` there (margin = measured / tolerance; workers
append whole lines). `record_allclose` does the same for `np.testing.assert_allclose` and
`torch.testing.assert_close`, which `tests/conftest.py` wraps while `RLEDIT_MARGINS` is set, so every
tolerance of the suite is measured, not only those written with `check`.
"""

import json
import os

import numpy as np

ENV = "RLEDIT_MARGINS"


def _current_test() -> str:
    return os.environ.get("PYTEST_CURRENT_TEST", "?").rsplit(" ", 1)[0]


def record(what: str, measured: float, tolerance: float) -> None:
    """Appends a margin line to `$RLEDIT_MARGINS` (nothing when unset)."""
    path = os.environ.get(ENV)
    if not path:
        return
    margin = measured / tolerance if tolerance > 0 else (0.0 if measured == 0 else float("inf"))
    line = {"test": _current_test(), "what": what, "measured": measured, "tolerance": tolerance, "margin": margin}
    with open(path, "a") as f:
        f.write(json.dumps(line) + "\n")


def check(what: str, measured: float, tolerance: float) -> None:
    """Asserts `measured <= tolerance`, printing and recording both."""
    measured, tolerance = float(measured), float(tolerance)
    print(f"{what}: {measured:.2e} (tolerance {tolerance:.2e})")
    record(what, measured, tolerance)
    assert measured <= tolerance, f"{what}: {measured:.2e} exceeds the tolerance {tolerance:.2e}"


def record_allclose(actual, desired, rtol: float, atol: float, what: str) -> None:
    """The margin of an `allclose`-style check: the largest `|a - d| / (atol + rtol |d|)` (1 at the bound)."""
    # torch tensors (torch.testing.assert_close) may require grad: read their values only.
    a, d = (np.asarray(x.detach() if hasattr(x, "detach") else x, np.float64) for x in (actual, desired))
    bound = atol + rtol * np.abs(d)
    diff = np.abs(a - d)
    finite = np.isfinite(a) & np.isfinite(d)
    if not finite.any():
        return
    if np.all(bound[finite] == 0):
        record(what, float(diff[finite].max()), 0.0)
        return
    ratio = np.where(bound > 0, diff / np.where(bound > 0, bound, 1.0), np.where(diff > 0, np.inf, 0.0))
    record(what, float(ratio[finite].max()), 1.0)
