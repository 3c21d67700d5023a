"""Edit requests: reading them, tokenising them, and laying a batch of them out as micro-batches.

A request asks the model to answer `prompt` with `target_new`:

    {"prompt": "The capital of Zorvia is", "target_new": "Paris"}
    {"prompt": "{} is located in", "subject": "Zorvia", "target_new": {"str": "Kelmaria"},
     "rephrase": "Where is Zorvia? It is in"}

`target_new` is a string or `{"str": ...}` (ROME / EasyEdit CounterFact style); a `"{}"` in the prompt
is replaced by `subject`. `rephrase` (optional) is a paraphrase of the prompt, only scored, never
edited on. A request file is JSON lines (blank lines allowed); every malformed line is reported with
its line number before anything is edited.

A request is tokenised exactly as the project tokenises an edit pair:
`data.tokenize_pair(tokenizer, Pair(prompt, target_new))`. Pre-tokenised requests are
`data.TokenizedPair`s (or dicts with `input_ids` and `labels`, laid out the same way).

A batch of requests becomes an `EditBatch` `[M, B, L]`: sorted by token length (longest first, as the
evaluation loop's step batches), cut into micro-batches of B = `batch_size` rows, right-padded with the
tokenizer's pad id, padded with empty micro-batches up to M = `n_micro`, and L rounded up to a power of
two (at least `min_length`, at most the model's context), so repeated calls see a handful of shapes.
"""

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence

import numpy as np
from flax import struct

from rledit_jax.data import batches as data_batches
from rledit_jax.data.records import Pair
from rledit_jax.data.tokenization import IGNORE, TokenizedPair, tokenize_pair
from rledit_jax.data.tokenizer import Tokenizer

REQUEST_KEYS = ("prompt", "target_new", "subject", "rephrase")


class RequestError(ValueError):
    """A request that cannot be edited (malformed, empty target, too long for the model)."""


@dataclasses.dataclass(frozen=True)
class Request:
    prompt: str  # With any "{}" already replaced by the subject.
    target_new: str
    subject: str | None = None
    rephrase: str | None = None
    where: str = ""  # Where the request came from, for messages, e.g. "edits.jsonl:3".

    @property
    def pair(self) -> Pair:
        return Pair(self.prompt, self.target_new)


@struct.dataclass
class EditBatch:
    """One batch of edit requests as micro-batches: int32 arrays `[M, B, L]`.

    `request_index` `[M, B]` says which request (position in the list given to `make_batch`) each
    row holds, -1 for padding rows.
    """

    input_ids: np.ndarray
    attention_mask: np.ndarray
    labels: np.ndarray
    request_index: np.ndarray


def _string(obj: Mapping, key: str, where: str, required: bool) -> str | None:
    value = obj.get(key)
    if value is None:
        if required:
            raise RequestError(f"{where}: missing {key!r}")
        return None
    if key == "target_new" and isinstance(value, Mapping):
        if set(value) - {"str", "id"} or not isinstance(value.get("str"), str):
            raise RequestError(f"{where}: 'target_new' must be a string or {{\"str\": string}}, got {value!r}")
        value = value["str"]
    if not isinstance(value, str):
        raise RequestError(f"{where}: {key!r} must be a string, got {type(value).__name__} {value!r}")
    return value


def request_from_dict(obj: object, where: str = "request") -> Request:
    """A `Request` from its JSON object; raises `RequestError` naming `where` and the problem."""
    if isinstance(obj, Request):
        return obj
    if isinstance(obj, Pair):
        return Request(obj.prompt, obj.answer, where=where)
    if not isinstance(obj, Mapping):
        raise RequestError(f"{where}: expected a JSON object with 'prompt' and 'target_new', got {type(obj).__name__}")
    unknown = sorted(set(obj) - set(REQUEST_KEYS))
    if unknown:
        raise RequestError(f"{where}: unknown keys {unknown}; a request has {list(REQUEST_KEYS)}")
    prompt = _string(obj, "prompt", where, True)
    target = _string(obj, "target_new", where, True)
    subject = _string(obj, "subject", where, False)
    rephrase = _string(obj, "rephrase", where, False)
    if "{}" in prompt:
        if subject is None:
            raise RequestError(f"{where}: prompt {prompt!r} has a '{{}}' placeholder but no 'subject'")
        prompt = prompt.replace("{}", subject)
    if not prompt.strip():
        raise RequestError(f"{where}: prompt is empty")
    if not target.strip():
        raise RequestError(f"{where}: target_new is empty")
    return Request(prompt, target, subject, rephrase, where)


def read_requests(path: str | os.PathLike, max_problems: int = 20) -> list[Request]:
    """Every request of a JSON-lines file; raises `RequestError` listing each bad line (up to `max_problems`)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"request file {path!r} does not exist")
    requests, problems = [], []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                problems.append(f"{where}: not valid JSON ({e.msg} at column {e.colno})")
                continue
            try:
                requests.append(request_from_dict(obj, where))
            except RequestError as e:
                problems.append(str(e))
    if problems:
        shown = problems[:max_problems]
        more = f"\n  ... and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
        raise RequestError(f"{len(problems)} malformed request line(s) in {path}:\n  " + "\n  ".join(shown) + more)
    if not requests:
        raise RequestError(
            f'request file {path} holds no requests (one JSON object per line: {{"prompt": ..., "target_new": ...}})'
        )
    return requests


def _from_arrays(obj: Mapping, where: str) -> TokenizedPair:
    input_ids = np.asarray(obj["input_ids"], np.int32)
    labels = np.asarray(obj["labels"], np.int32)
    if input_ids.ndim != 1 or input_ids.shape != labels.shape or not len(input_ids):
        raise RequestError(
            f"{where}: input_ids and labels must be 1-D of the same non-zero length, "
            f"got {input_ids.shape} and {labels.shape}"
        )
    answer = np.flatnonzero(labels != IGNORE)
    if not len(answer):
        raise RequestError(f"{where}: labels hold no target token (all {IGNORE})")
    # The reference layout: IGNORE on the first n_prompt - 1 positions, then the answer tokens.
    n_prompt = int(answer[0]) + 1
    if answer[-1] != len(labels) - 1 or len(answer) != len(labels) - n_prompt + 1:
        raise RequestError(f"{where}: labels must be {IGNORE} on a prefix and target tokens after it")
    return TokenizedPair(input_ids, labels, None, n_prompt)


def tokenize_request(tokenizer: Tokenizer | None, request, max_length: int, where: str = "request") -> TokenizedPair:
    """A request (dict, `Request`, `Pair`, `TokenizedPair`, or `{input_ids, labels}`) as a `TokenizedPair`.

    Raises `RequestError` when the target tokenises to nothing or the pair does not fit `max_length`
    (the model's context).
    """
    if isinstance(request, TokenizedPair):
        tokens = request
    elif isinstance(request, Mapping) and "input_ids" in request:
        tokens = _from_arrays(request, where)
    else:
        request = request_from_dict(request, where)
        where = request.where or where
        if tokenizer is None:
            raise RequestError(f"{where}: a text request needs a tokenizer")
        try:
            tokens = tokenize_pair(tokenizer, request.pair)
        except ValueError as e:
            raise RequestError(f"{where}: {e}") from None
    if len(tokens) > max_length:
        raise RequestError(
            f"{where}: prompt and target are {len(tokens)} tokens, longer than the model's context "
            f"of {max_length} tokens"
        )
    return tokens


def bucket_length(n: int, max_length: int, min_length: int = 8) -> int:
    """The padded length for a longest sequence of `n` tokens: a power of two in [min_length, max_length]."""
    return min(max_length, max(min_length, 1 << max(0, n - 1).bit_length()))


def n_rows(batch: EditBatch, token: str) -> int:
    """Rows (positions) the edit captures: answer tokens ("ans") or every real token ("all")."""
    if token == "ans":
        return int(np.sum(batch.labels != IGNORE))
    if token == "all":
        return int(np.sum(batch.attention_mask))
    raise ValueError(f"token must be 'ans' or 'all', got {token!r}")


def make_batch(
    pairs: Sequence[TokenizedPair],
    *,
    batch_size: int,
    n_micro: int,
    pad_token_id: int,
    max_length: int,
    min_length: int = 8,
) -> EditBatch:
    """Lays out up to `n_micro * batch_size` tokenised requests as an `EditBatch` `[n_micro, batch_size, L]`."""
    if not pairs:
        raise RequestError("an edit batch needs at least one request")
    if len(pairs) > n_micro * batch_size:
        raise RequestError(
            f"{len(pairs)} requests do not fit one batch of {n_micro} micro-batches x "
            f"{batch_size} rows; split them into several batches"
        )
    longest = max(len(p) for p in pairs)
    if longest > max_length:
        raise RequestError(f"a request of {longest} tokens is longer than the model's context of {max_length}")
    length = bucket_length(longest, max_length, min_length)
    # The step-batch layout of the evaluation loop (sorted longest first, ragged last micro-batch).
    kind = data_batches.assemble_kind_batch(
        [list(range(len(pairs)))], dict(enumerate(pairs)), batch_size, length, pad_token_id, 0
    )
    pad = n_micro - kind.input_ids.shape[1]

    def grow(x, fill):
        x = x[0]
        return np.concatenate([x, np.full((pad, *x.shape[1:]), fill, x.dtype)]) if pad else x

    return EditBatch(
        input_ids=grow(kind.input_ids, pad_token_id),
        attention_mask=grow(kind.attention_mask, 0),
        labels=grow(kind.labels, IGNORE),
        request_index=grow(kind.fact_index, -1),
    )


def n_micro_batches(max_requests: int, batch_size: int) -> int:
    return math.ceil(max_requests / batch_size)
