"""Reading a run directory's result files, each optional, checked line by line.

    train_metrics.jsonl  one object per training step: {"sequence": int, "step": int, "loss",
                         "gen_loss", "loc_loss": numbers, ...} (bin/train also writes reg, grad_norm,
                         acc_norm; they are kept but not required)
    curve.jsonl          one object per retention-curve point: {"evaluation": int (0-based), "step":
                         int, "edits": int (facts edited so far), "all": {"ES", "GS", "LS"}, "first":
                         {"ES", "GS", "LS"}} (all facts edited so far / the first batch's facts)
    general.jsonl        one object per general-ability measurement: {"edits": int, "tasks":
                         {task: {metric: number}}}
    metrics.json         {"ES", "GS", "LS": numbers, other run facts: any JSON}
    compare.json         {"methods": [{"method": str, "ES", "GS", "LS": numbers, "train_seconds",
                         "edit_seconds", "peak_memory_bytes": numbers or null}]}

`read(workdir)` returns `{name: records}` for the files present (a JSON lines file: its list of
objects; blank lines skipped). A file that is not valid JSON or lacks a key raises ValueError naming
the file and line.
"""

import dataclasses
import json
import os


@dataclasses.dataclass(frozen=True)
class Each:
    """An object whose every value matches `spec`."""

    spec: object


@dataclasses.dataclass(frozen=True)
class Nullable:
    spec: object


SCORES = {"ES": float, "GS": float, "LS": float}
FILES = {
    "train_metrics.jsonl": {"sequence": int, "step": int, "loss": float, "gen_loss": float, "loc_loss": float},
    "curve.jsonl": {"evaluation": int, "step": int, "edits": int, "all": SCORES, "first": SCORES},
    "general.jsonl": {"edits": int, "tasks": Each(Each(float))},
    "metrics.json": SCORES,
    "compare.json": {
        "methods": [
            {
                "method": str,
                **SCORES,
                "train_seconds": Nullable(float),
                "edit_seconds": Nullable(float),
                "peak_memory_bytes": Nullable(float),
            }
        ]
    },
}
_NAMES = {int: "an integer", float: "a number", str: "a string", dict: "an object", list: "a list"}


def _check(value, spec, where: str) -> None:
    if isinstance(spec, Nullable):
        if value is not None:
            _check(value, spec.spec, where)
        return
    kind = dict if isinstance(spec, (dict, Each)) else list if isinstance(spec, list) else spec
    ok = isinstance(value, kind) and not isinstance(value, bool)
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok:
        raise ValueError(f"{where} should be {_NAMES[kind]}, got {json.dumps(value)[:40]}")
    if isinstance(spec, dict):
        for key, sub in spec.items():
            if key not in value:
                raise ValueError(f"{where}: key {key!r} is missing")
            _check(value[key], sub, f"{where} key {key!r}")
    elif isinstance(spec, Each):
        for key, item in value.items():
            _check(item, spec.spec, f"{where} key {key!r}")
    elif isinstance(spec, list):
        for i, item in enumerate(value):
            _check(item, spec[0], f"{where} item {i}")


def _parse(text: str, where: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{where}: invalid JSON ({error.msg} at column {error.colno})") from None


def read_file(path: str, spec) -> list | dict:
    """A JSON lines file's checked objects, or a JSON file's checked object."""
    name = os.path.basename(path)
    with open(path, encoding="utf-8") as f:
        if not name.endswith(".jsonl"):
            value = _parse(f.read(), path)
            _check(value, spec, path)
            return value
        records = []
        for n, line in enumerate(f, start=1):
            if line.strip():
                where = f"{path} line {n}"
                records.append(_parse(line, where))
                _check(records[-1], spec, where)
        return records


def read(workdir: str) -> dict:
    if not os.path.isdir(workdir):
        raise ValueError(f"run directory not found: {workdir}")
    paths = {name: os.path.join(workdir, name) for name in FILES}
    return {name: read_file(path, FILES[name]) for name, path in paths.items() if os.path.isfile(path)}
