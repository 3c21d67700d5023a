"""bin/edit: edits a model with a trained hypernetwork, or applies a delta export to its base model.

  bin/edit --config=configs/tiny.py --hypernet=runs/tiny/hypernet.safetensors \
      --requests=edits.jsonl --out=edited [--format=hf|delta] [--overwrite]
  bin/edit apply-delta --delta=edited-delta --out=edited [--base=/models/gpt-j-6b|tiny] [--overwrite]

--requests is JSON lines, one {"prompt": ..., "target_new": ...} per line (optional "subject",
"rephrase"). --format=hf writes an HF directory `transformers` loads; --format=delta only the edited
matrices' deltas and a manifest.

The jobs as library calls: `edit_model` (edit, report, export) and `apply_delta`.

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
from absl import app, flags
from ml_collections import config_flags

from rledit_jax import config_validation
from rledit_jax.cli import app as cli_app
from rledit_jax.editing import export
from rledit_jax.editing import requests as req
from rledit_jax.editing.session import EditSession, NonFiniteShiftError, load_hypernet

FORMATS = ("hf", "delta")
REPORT_FILE = "edit_report.json"


def _tokenize_all(session: EditSession, requests: list[req.Request]):
    """Edit pairs and rephrase pairs (None where absent); every problem reported at once."""
    pairs, rephrases, problems = [], [], []
    max_length = session.llm_config.max_length
    for r in requests:
        try:
            pairs.append(req.tokenize_request(session.tokenizer, r, max_length))
            rephrases.append(
                None
                if r.rephrase is None
                else req.tokenize_request(
                    session.tokenizer,
                    {"prompt": r.rephrase, "target_new": r.target_new},
                    max_length,
                    f"{r.where} (rephrase)",
                )
            )
        except req.RequestError as e:
            problems.append(str(e))
    if problems:
        raise req.RequestError(f"{len(problems)} request(s) cannot be edited:\n  " + "\n  ".join(problems))
    return pairs, rephrases


def _scores(session: EditSession, state, pairs, rephrases, max_new_tokens: int) -> list[dict]:
    log_p, n_tokens = session.target_log_probs(state, pairs)
    prompts = [p.input_ids[: p.n_prompt].tolist() for p in pairs]
    greedy = session.greedy_ids(state, prompts, max_new_tokens)
    which = [i for i, r in enumerate(rephrases) if r is not None]
    re_log_p = dict(zip(which, session.target_log_probs(state, [rephrases[i] for i in which])[0])) if which else {}
    out = []
    for i in range(len(pairs)):
        entry = {
            "p": float(np.exp(log_p[i])),
            "log_p": float(log_p[i]),
            "n_tokens": int(n_tokens[i]),
            "greedy": session.tokenizer.decode(greedy[i]),
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
    session = EditSession.from_config(config)
    pairs, rephrases = _tokenize_all(session, requests)
    hypernets = load_hypernet(hypernet, session.layout)

    size = session.max_requests
    chunks = [range(i, min(len(requests), i + size)) for i in range(0, len(requests), size)]
    batches = [
        req.make_batch(
            [pairs[i] for i in c],
            batch_size=session.batch_size,
            n_micro=session.n_micro,
            pad_token_id=session.pad_token_id,
            max_length=session.llm_config.max_length,
            min_length=session.min_length,
        )
        for c in chunks
    ]
    max_rows = 8 * math.ceil(max(req.n_rows(b, session.spec.hparams.token) for b in batches) / 8)
    # bin/edit never rolls back, so the history holds one batch (older ones are committed).
    state = session.init_state(hypernets, capacity=1, max_rows=max_rows)
    echo(
        f"{len(requests)} requests in {len(batches)} batch(es) of up to {size}; edit sites: "
        + ", ".join(session.layout.names)
    )
    before = _scores(session, None, pairs, rephrases, max_new_tokens)

    records = []
    for number, (chunk, batch) in enumerate(zip(chunks, batches)):
        lines = f"requests {chunk[0] + 1}-{chunk[-1] + 1}"
        try:
            state, record = session.edit(state, batch)
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
    after = _scores(session, state, pairs, rephrases, max_new_tokens)

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
        session.export_hf(
            state, out, overwrite=overwrite, files=files, tokenizer_dir=config.data.tokenizer_path or config.model.path
        )
        echo(f"wrote the edited model (HF directory) to {out}")
    else:
        base = export.base_description(config.model, session.llm_config, session.params, session.layout.names)
        extra = {
            "edits": {
                "n_requests": len(requests),
                "n_batches": len(records),
                "hypernet": {"path": os.path.abspath(hypernet), "sha256": export.sha256_file(hypernet)},
                "requests_file": {"path": os.path.abspath(requests_path), "sha256": export.sha256_file(requests_path)},
            }
        }
        session.export_delta(state, out, base=base, overwrite=overwrite, files=files, extra=extra)
        echo(f"wrote the edited matrices' deltas to {out}")
    return report


def apply_delta(*, delta: str, out: str, base: str | None = None, overwrite: bool = False, echo=print) -> None:
    export.apply_delta(delta, out, base=base, overwrite=overwrite)
    echo(f"wrote the edited model (HF directory) to {os.path.abspath(out)}")


def _require(*names):
    missing = [f"--{n}" for n in names if getattr(flags.FLAGS, n) is None]
    if missing:
        raise app.UsageError(f"missing {', '.join(missing)}")


def _main(argv):
    f = flags.FLAGS
    if argv[1:] == ["apply-delta"]:
        _require("delta", "out")
        apply_delta(delta=f.delta, out=f.out, base=f.base, overwrite=f.overwrite)
    elif len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; the only subcommand is apply-delta")
    else:
        _require("config", "hypernet", "requests", "out")
        config_validation.validate(f.config)
        cli_app.set_matmul_precision(f.config)
        edit_model(
            f.config,
            hypernet=f.hypernet,
            requests_path=f.requests,
            out=f.out,
            fmt=f.format,
            overwrite=f.overwrite,
            max_new_tokens=f.max_new_tokens,
        )


def main():
    config_flags.DEFINE_config_file(
        "config",
        None,
        "Config file (get_config()); its model, edit sites, tokenizer and data.n_edits / data.batch_size are used.",
        lock_config=True,
    )
    flags.DEFINE_string(
        "hypernet",
        None,
        "Trained hypernetwork in the reference naming (hypernet.safetensors of bin/train, .npz, or a reference .pth).",
    )
    flags.DEFINE_string("requests", None, "Edit requests, JSON lines.")
    flags.DEFINE_string("out", None, "Output directory (must not exist unless --overwrite).")
    flags.DEFINE_enum("format", "hf", list(FORMATS), "hf: full HF model; delta: edited matrices only.")
    flags.DEFINE_bool("overwrite", False, "Replace an existing --out.")
    flags.DEFINE_integer("max_new_tokens", 8, "Greedy tokens printed per request.", lower_bound=1)
    flags.DEFINE_string("delta", None, "apply-delta: a directory written with --format=delta.")
    flags.DEFINE_string(
        "base",
        None,
        "apply-delta: the base model directory, or 'tiny' (default: the base named in the delta's manifest).",
    )
    cli_app.run(_main, program="bin/edit")
