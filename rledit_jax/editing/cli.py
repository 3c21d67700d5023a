"""The `bin/edit` jobs as library calls: `edit_model` (edit, report, export) and `apply_delta`.

`edit_model` checks everything it can before editing (the output path, every request line, the
hypernetwork against the config's edit sites), edits the requests in batches of `data.n_edits` in
file order, prints for every request the target's probability and a greedy continuation before and
after, and only then writes the output, atomically. Any problem stops it before anything is written.

Printed per request: `p`, the teacher-forced probability of the whole target (the product of its
tokens' probabilities given the prompt and the earlier target tokens), with the token count, and
`greedy`, the first `max_new_tokens` greedy tokens after the prompt; both on the unedited model
("before") and after all batches ("after"); `rephrase` (when given) is scored the same way.
"""

import json
import math
import os

import numpy as np

from rledit_jax import config_validation
from rledit_jax.editing import export, inspect
from rledit_jax.editing import requests as req
from rledit_jax.editing.editor import Editor, NonFiniteShiftError, load_hypernet

FORMATS = ("hf", "delta")
REPORT_FILE = "edit_report.json"


def _tokenize_all(editor: Editor, requests: list[req.Request]):
    """Edit pairs and rephrase pairs (None where absent); every problem reported at once."""
    pairs, rephrases, problems = [], [], []
    n_positions = editor.llm_config.n_positions
    for r in requests:
        try:
            pairs.append(req.tokenize_request(editor.tokenizer, r, n_positions))
            rephrases.append(
                None
                if r.rephrase is None
                else req.tokenize_request(
                    editor.tokenizer,
                    {"prompt": r.rephrase, "target_new": r.target_new},
                    n_positions,
                    f"{r.where} (rephrase)",
                )
            )
        except req.RequestError as e:
            problems.append(str(e))
    if problems:
        raise req.RequestError(f"{len(problems)} request(s) cannot be edited:\n  " + "\n  ".join(problems))
    return pairs, rephrases


def _scores(editor: Editor, state, pairs, rephrases, max_new_tokens: int) -> list[dict]:
    log_p, n_tokens = editor.target_log_probs(state, pairs)
    prompts = [p.input_ids[: p.n_prompt].tolist() for p in pairs]
    greedy = inspect.greedy(
        editor.llm_config,
        editor.params,
        editor.kernels(state),
        prompts,
        max_new_tokens=max_new_tokens,
        pad_token_id=editor.pad_token_id,
    )
    which = [i for i, r in enumerate(rephrases) if r is not None]
    re_log_p = dict(zip(which, editor.target_log_probs(state, [rephrases[i] for i in which])[0])) if which else {}
    out = []
    for i in range(len(pairs)):
        entry = {
            "p": float(np.exp(log_p[i])),
            "log_p": float(log_p[i]),
            "n_tokens": int(n_tokens[i]),
            "greedy": editor.tokenizer.decode(greedy[i]),
        }
        if i in re_log_p:
            entry["rephrase_p"] = float(np.exp(re_log_p[i]))
        out.append(entry)
    return out


def edit_model(
    config,
    *,
    hypernet: str,
    requests_path: str,
    out: str,
    fmt: str = "hf",
    overwrite: bool = False,
    max_new_tokens: int = 8,
    echo=print,
) -> dict:
    """Edits the config's model with every request of `requests_path`; writes `out`; returns the report."""
    config_validation.validate(config)
    if fmt not in FORMATS:
        raise ValueError(f"--format must be one of {FORMATS}, got {fmt!r}")
    if max_new_tokens < 1:
        raise ValueError(f"--max_new_tokens must be >= 1, got {max_new_tokens}")
    out = os.path.abspath(out)
    if os.path.exists(out) and not overwrite:
        raise FileExistsError(f"output {out!r} exists; pass --overwrite to replace it")
    requests = req.read_requests(requests_path)
    editor = Editor.from_config(config)
    pairs, rephrases = _tokenize_all(editor, requests)
    nets, norms = load_hypernet(hypernet, editor.layout)

    size = editor.max_requests
    chunks = [range(i, min(len(requests), i + size)) for i in range(0, len(requests), size)]
    batches = [
        req.make_batch(
            [pairs[i] for i in c],
            batch_size=editor.batch_size,
            n_micro=editor.n_micro,
            pad_token_id=editor.pad_token_id,
            max_length=editor.llm_config.n_positions,
            min_length=editor.min_length,
        )
        for c in chunks
    ]
    max_rows = 8 * math.ceil(max(req.n_rows(b, editor.token) for b in batches) / 8)
    # bin/edit never rolls back, so the history holds one batch (older ones are committed).
    state = editor.init_state(nets, norms, capacity=1, max_rows=max_rows)
    echo(
        f"{len(requests)} requests in {len(batches)} batch(es) of up to {size}; edit sites: "
        + ", ".join(editor.layout.names)
    )
    before = _scores(editor, None, pairs, rephrases, max_new_tokens)

    records = []
    for number, (chunk, batch) in enumerate(zip(chunks, batches)):
        lines = f"requests {chunk[0] + 1}-{chunk[-1] + 1}"
        try:
            state, record = editor.edit(state, batch)
        except NonFiniteShiftError as e:
            raise FloatingPointError(f"batch {number} ({lines}): {e}; nothing was written") from None
        records.append(
            {
                "batch_id": record.batch_id,
                "requests": [requests[i].where for i in chunk],
                "n_rows": record.n_rows,
                "shift_fro_norm": record.shift_norms,
            }
        )
        echo(
            f"batch {record.batch_id} ({lines}): {record.n_rows} rows, ||shift||_F "
            + " ".join(f"{s}={v:.4g}" for s, v in record.shift_norms.items())
        )
    after = _scores(editor, state, pairs, rephrases, max_new_tokens)

    echo(
        f"p = teacher-forced probability of the whole target (product over its tokens); "
        f"greedy = the first {max_new_tokens} greedy tokens"
    )
    report_rows = []
    for r, b, a in zip(requests, before, after):
        echo(f"{r.where}: {r.prompt!r} -> {r.target_new!r}")
        for name, s in (("before", b), ("after", a)):
            rephrase = f"  rephrase p={s['rephrase_p']:.4g}" if "rephrase_p" in s else ""
            echo(f"  {name:6s} p={s['p']:.4g} ({s['n_tokens']} tokens)  greedy {s['greedy']!r}{rephrase}")
        report_rows.append(
            {
                "where": r.where,
                "prompt": r.prompt,
                "target_new": r.target_new,
                "rephrase": r.rephrase,
                "before": b,
                "after": a,
            }
        )

    report = {
        "p": "teacher-forced probability of the whole target (product of its token probabilities)",
        "hypernet": os.path.abspath(hypernet),
        "requests_file": os.path.abspath(requests_path),
        "batches": records,
        "requests": report_rows,
    }
    files = {REPORT_FILE: json.dumps(report, indent=1)}
    if fmt == "hf":
        editor.export_hf(
            state, out, overwrite=overwrite, files=files, tokenizer_dir=config.data.tokenizer_path or config.model.path
        )
        echo(f"wrote the edited model (HF directory) to {out}")
    else:
        base = export.base_description(config.model, editor.llm_config, editor.params, editor.layout.names)
        extra = {
            "edits": {
                "n_requests": len(requests),
                "n_batches": len(records),
                "hypernet": {"path": os.path.abspath(hypernet), "sha256": export.sha256_file(hypernet)},
                "requests_file": {"path": os.path.abspath(requests_path), "sha256": export.sha256_file(requests_path)},
            }
        }
        editor.export_delta(state, out, base=base, overwrite=overwrite, files=files, extra=extra)
        echo(f"wrote the edited matrices' deltas to {out}")
    return report


def apply_delta(*, delta: str, out: str, base: str | None = None, overwrite: bool = False, echo=print) -> None:
    export.apply_delta(delta, out, base=base, overwrite=overwrite)
    echo(f"wrote the edited model (HF directory) to {os.path.abspath(out)}")
