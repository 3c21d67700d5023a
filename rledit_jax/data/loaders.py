"""Reading zsRE, CounterFact and FEVER editing files into `Fact`s.

A file is a JSON list of row objects, or JSON lines (one object per line) when its name ends in
`.jsonl`. Accepted row formats:

- zsRE, MEND/ROME (`src, rephrase, alt, loc, loc_ans`, ...) or the reference's (`src, rephrase, ans,
  loc, loc_ans`): new answer `ans` if present, else `alt`; edit = (src, new), equiv = (rephrase, new),
  unrel = (loc + "?", loc_ans). The "?" is the reference's.
- CounterFact, ROME (`requested_rewrite{prompt, subject, target_new.str, target_true.str}`,
  `paraphrase_prompts`, `neighborhood_prompts`) or EasyEdit (`prompt, target_new, ground_truth,
  rephrase_prompt, locality_prompt, locality_ground_truth`): edit = (prompt, new; old = true),
  equiv = (paraphrase, new; old = true), unrel = (neighbour, true; old = new). The EasyEdit unrel
  answer is `locality_ground_truth`.
- FEVER, the reference's (`prompt, equiv_prompt` list, `unrel_prompt, alt, unrel_ans`).

Where a row offers a list (ROME paraphrases and neighbours, FEVER paraphrases), one item is drawn
with `numpy.random.default_rng([seed, row_index])`, so the draw depends on that row alone.
"""

import json
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from rledit_jax.data.records import Fact, LoadedFacts, Pair

Choose = Callable[[list[str]], str]


class _MalformedRow(Exception):
    """A row problem; the message names the key but not the file or row."""


def _value(row: Mapping, key: str) -> object:
    """The value at `key`; dots descend into nested objects ("requested_rewrite.subject")."""
    value: object = row
    walked: list[str] = []
    for part in key.split("."):
        if not isinstance(value, Mapping):
            raise _MalformedRow(f"key {'.'.join(walked)!r} should be an object, got {type(value).__name__}")
        walked.append(part)
        if part not in value:
            raise _MalformedRow(f"key {'.'.join(walked)!r} is missing")
        value = value[part]
    return value


def _check_text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise _MalformedRow(f"{what} should be a string, got {type(value).__name__}")
    if not value.strip():
        raise _MalformedRow(f"{what} is an empty string")
    return value


def _text(row: Mapping, key: str) -> str:
    return _check_text(_value(row, key), f"key {key!r}")


def _texts(row: Mapping, key: str) -> list[str]:
    value = _value(row, key)
    if not isinstance(value, list):
        raise _MalformedRow(f"key {key!r} should be a list, got {type(value).__name__}")
    if not value:
        raise _MalformedRow(f"key {key!r} is an empty list")
    return [_check_text(item, f"key {key!r} item {i}") for i, item in enumerate(value)]


def _zsre(row: Mapping, choose: Choose) -> Fact:
    if "ans" not in row and "alt" not in row:
        raise _MalformedRow("key 'ans' (reference format) or 'alt' (MEND format) is missing")
    new = _text(row, "ans" if "ans" in row else "alt")
    return Fact(
        edit=Pair(_text(row, "src"), new),
        equiv=Pair(_text(row, "rephrase"), new),
        unrel=Pair(_text(row, "loc") + "?", _text(row, "loc_ans")),
    )


def _counterfact_rome(row: Mapping, choose: Choose) -> Fact:
    template = _text(row, "requested_rewrite.prompt")
    if template.count("{}") != 1:
        raise _MalformedRow("key 'requested_rewrite.prompt' should hold exactly one '{}' for the subject")
    prompt = template.replace("{}", _text(row, "requested_rewrite.subject"))
    new = _text(row, "requested_rewrite.target_new.str")
    true = _text(row, "requested_rewrite.target_true.str")
    paraphrases = _texts(row, "paraphrase_prompts")
    neighbours = _texts(row, "neighborhood_prompts")
    return Fact(
        edit=Pair(prompt, new, true),
        equiv=Pair(choose(paraphrases), new, true),
        unrel=Pair(choose(neighbours), true, new),
    )


def _counterfact_easyedit(row: Mapping, choose: Choose) -> Fact:
    new = _text(row, "target_new")
    true = _text(row, "ground_truth")
    return Fact(
        edit=Pair(_text(row, "prompt"), new, true),
        equiv=Pair(_text(row, "rephrase_prompt"), new, true),
        unrel=Pair(_text(row, "locality_prompt"), _text(row, "locality_ground_truth"), new),
    )


def _counterfact(row: Mapping, choose: Choose) -> Fact:
    parse = _counterfact_rome if "requested_rewrite" in row else _counterfact_easyedit
    return parse(row, choose)


def _fever(row: Mapping, choose: Choose) -> Fact:
    alt = _text(row, "alt")
    return Fact(
        edit=Pair(_text(row, "prompt"), alt),
        equiv=Pair(choose(_texts(row, "equiv_prompt")), alt),
        unrel=Pair(_text(row, "unrel_prompt"), _text(row, "unrel_ans")),
    )


_PARSERS: dict[str, Callable[[Mapping, Choose], Fact]] = {
    "zsre": _zsre,
    "counterfact": _counterfact,
    "fever": _fever,
}


def _seeded_chooser(seed: int, row_index: int) -> Choose:
    rng = np.random.default_rng([seed, row_index])
    return lambda items: items[int(rng.integers(len(items)))]


def _read_rows(path: Path) -> list[object]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        rows = []
        for line_number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"{path} line {line_number}: invalid JSON ({error.msg})") from None
    else:
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: invalid JSON ({error}); JSON-lines files must be named *.jsonl") from None
        if not isinstance(rows, list):
            raise ValueError(f"{path}: expected a JSON list of records, got a JSON {type(rows).__name__}")
    if not rows:
        raise ValueError(f"{path}: the file holds no records")
    return rows


def load_facts(name: str, path: str | Path, *, skip_malformed: bool = False, seed: int = 0) -> LoadedFacts:
    """Reads dataset `name` ("zsre", "counterfact" or "fever") from `path`.

    A malformed row (missing key, wrong type, empty string or list) raises a ValueError naming the
    file, row index and key, or with `skip_malformed=True` is left out and its message recorded.
    """
    if name not in _PARSERS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(_PARSERS)}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{name} data file not found: {path}")
    parse = _PARSERS[name]
    facts, row_indices, skipped = [], [], []
    for index, row in enumerate(_read_rows(path)):
        try:
            if not isinstance(row, Mapping):
                raise _MalformedRow(f"expected a JSON object, got {type(row).__name__}")
            fact = parse(row, _seeded_chooser(seed, index))
        except _MalformedRow as problem:
            message = f"{path} row {index}: {problem}"
            if not skip_malformed:
                raise ValueError(f"{message} (--config.data.skip_malformed=True skips and counts such rows)") from None
            skipped.append(message)
            continue
        facts.append(fact)
        row_indices.append(index)
    return LoadedFacts(facts=facts, row_indices=row_indices, skipped=skipped)
