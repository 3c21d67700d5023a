#!/usr/bin/env python3
"""Summarises the margins a test run recorded (tests/margins.py): the checks closest to their tolerance.

    RLEDIT_MARGINS=margins.jsonl make test
    python tools/margins.py margins.jsonl [--above 0.1] [--compare other.jsonl]

One row per test and check (its worst record): measured, tolerance and margin = measured / tolerance;
rows at or above `--above` (default 0.1: within 10x of the tolerance) are listed, worst first. With
`--compare`, a second run's margin (e.g. under `XLA_FLAGS=--xla_cpu_max_isa=AVX2`) is shown beside.
"""

import argparse
import json
import re


def worst(path: str) -> dict[tuple[str, str], dict]:
    """`{(test, check): its record with the largest margin}`; digits in check names (steps, seeds) folded."""
    out: dict[tuple[str, str], dict] = {}
    with open(path) as f:
        for line in f:
            rec = json.loads(line)
            key = (rec["test"], re.sub(r"\d+", "#", rec["what"]))
            if key not in out or rec["margin"] > out[key]["margin"]:
                out[key] = rec
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path")
    parser.add_argument("--above", type=float, default=0.1)
    parser.add_argument("--compare")
    args = parser.parse_args()
    runs = [worst(args.path)] + ([worst(args.compare)] if args.compare else [])
    keys = sorted(set().union(*runs), key=lambda k: -max(r.get(k, {"margin": 0})["margin"] for r in runs))
    print(f"{sum(len(r) for r in runs[:1])} checks in {args.path}; margin = measured / tolerance")
    header = "| test | check | measured | tolerance | margin |" + (" margin (compared) |" if args.compare else "")
    print(header)
    print("|" + " --- |" * (header.count("|") - 1))
    for key in keys:
        if max(r.get(key, {"margin": 0})["margin"] for r in runs) < args.above:
            break
        rec = runs[0].get(key) or runs[1][key]
        row = f"| {key[0]} | {key[1]} | {rec['measured']:.2e} | {rec['tolerance']:.2e} | "
        row += " | ".join(f"{r[key]['margin']:.3f}" if key in r else "-" for r in runs) + " |"
        print(row)


if __name__ == "__main__":
    main()
