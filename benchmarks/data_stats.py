"""Prints record counts and GPT-2 token-length statistics of the shared editing data files.

Usage: python benchmarks/data_stats.py [--shared DIR]   (default: the checkout's sibling shared/)

Per file: records loaded, malformed rows skipped, min/mean/max of len(input_ids) per kind
(edit / equiv / unrel), and min/mean/max answer tokens (labels != -100) of the edit and unrel pairs.
"""

import argparse
from pathlib import Path

import numpy as np

from rledit_jax.data import KINDS, load_facts, load_tokenizer, tokenize_pair

DATASETS = {"zsre": "zsre", "counterfact": "counterfact"}  # sub-directory -> loader name


def _summary(values: list[int]) -> str:
    return f"{min(values)}/{np.mean(values):.1f}/{max(values)}"


def file_row(tokenizer, name: str, path: Path) -> list[str]:
    loaded = load_facts(name, path, skip_malformed=True)
    lengths = {kind: [] for kind in KINDS}
    answers = {kind: [] for kind in KINDS}
    for fact in loaded.facts:
        for kind in KINDS:
            tokens = tokenize_pair(tokenizer, getattr(fact, kind))
            lengths[kind].append(len(tokens))
            answers[kind].append(int((tokens.labels != -100).sum()))
    return [
        f"{path.parent.name}/{path.name}",
        str(len(loaded.facts)),
        str(len(loaded.skipped)),
        *(_summary(lengths[kind]) for kind in KINDS),
        _summary(answers["edit"]),
        _summary(answers["unrel"]),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    args = parser.parse_args()
    tokenizer = load_tokenizer(args.shared / "tokenizers" / "gpt2")
    header = ["file", "records", "skipped", "edit len", "equiv len", "unrel len", "edit ans", "unrel ans"]
    rows = [
        file_row(tokenizer, name, path)
        for directory, name in DATASETS.items()
        for path in sorted((args.shared / "data" / directory).glob("*.json"))
    ]
    if not rows:
        raise SystemExit(f"no zsRE or CounterFact files under {args.shared / 'data'}")
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    print("GPT-2 tokens, min/mean/max; len = len(input_ids), ans = answer tokens")
    for row in [header, ["-" * w for w in widths], *rows]:
        cells = [row[0].ljust(widths[0])] + [cell.rjust(w) for cell, w in zip(row[1:], widths[1:])]
        print("  ".join(cells))


if __name__ == "__main__":
    main()
