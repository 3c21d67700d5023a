"""The report's sections: each turns one input file's records (`inputs.py`) into Markdown and PNGs.

Scores (ES / GS / LS, fractions in the files) are shown in percent with two decimals; other numbers
with four significant digits. Each section writes its PNGs into `out_dir` and returns its Markdown.
"""

import os

from rledit_jax.report import plots

LOSSES = ("loss", "gen_loss", "loc_loss")
MAIN_METRIC = "f1"  # the reference's weighted F1 of the generated answers


def pct(x) -> str:
    return "–" if x is None else f"{100 * x:.2f}"


def num(x) -> str:
    return "–" if x is None else f"{x:.4g}"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _source(name: str, detail: str = "") -> str:
    return f"Source: `{name}`{detail}."


def final_scores(metrics: dict, out_dir: str):
    names = [k for k in metrics if k in plots.SCORE_KEYS or k == "LS_agreement" or "_generated_" in k]
    scores = table(["metric", "value (%)"], [[k, pct(metrics[k])] for k in names])
    facts = [
        [k, v if isinstance(v, str) else num(v)]
        for k, v in metrics.items()
        if k not in names and isinstance(v, (str, int, float))
    ]
    text = f"## Final scores\n\n{_source('metrics.json')}\n\n{scores}\n"
    evaluations = metrics.get("evaluations", [])
    if len(evaluations) > 1:
        keys = [k for k in ("ES", "GS", "LS", "LS_agreement") if k in evaluations[0]]
        rows = [[str(e["evaluation"]), str(e["after_sequences"]), *(pct(e.get(k)) for k in keys)] for e in evaluations]
        header = ["evaluation", "after training sequences", *(f"{k} (%)" for k in keys)]
        text += f"\nEvery evaluation (the last is the one above):\n\n{table(header, rows)}\n"
    if facts:
        text += f"\nRun facts:\n\n{table(['fact', 'value'], facts)}\n"
    return text


def training(rows: list[dict], out_dir: str):
    steps = max(r["step"] for r in rows) + 1
    x = [r["sequence"] * steps + r["step"] for r in rows]
    plots.training(x, {k: [r[k] for r in rows] for k in LOSSES}, os.path.join(out_dir, "train_losses.png"))
    sequences = len({r["sequence"] for r in rows})
    last = rows[-1]
    values = table(
        ["", *LOSSES], [[f"sequence {last['sequence']} step {last['step']}", *(num(last[k]) for k in LOSSES)]]
    )
    detail = f" ({len(rows)} steps: {sequences} sequences of {steps} steps; global step = sequence x {steps} + step)"
    text = (
        f"## Training\n\n{_source('train_metrics.jsonl', detail)}\n\n![training losses](train_losses.png)\n\n"
        f"Last step:\n\n{values}\n"
    )
    return text


def retention(points: list[dict], out_dir: str):
    by_eval: dict[int, list[dict]] = {}
    for p in points:
        by_eval.setdefault(p["evaluation"], []).append(p)
    images, rows = [], []
    for k, ps in sorted(by_eval.items()):
        ps = sorted(ps, key=lambda p: p["edits"])
        name = f"curve_eval{k}.png"
        plots.retention(
            [p["edits"] for p in ps],
            {s: [p["all"][s] for p in ps] for s in plots.SCORE_KEYS},
            {s: [p["first"][s] for p in ps] for s in plots.SCORE_KEYS},
            f"Retention, evaluation {k}",
            os.path.join(out_dir, name),
        )
        images.append(name)
        last = ps[-1]
        rows.append(
            [str(k), str(last["step"]), str(last["edits"])]
            + [pct(last[w][s]) for w in ("all", "first") for s in plots.SCORE_KEYS]
        )
    header = [
        "evaluation",
        "step",
        "edits",
        *(f"{s} {w} (%)" for w in ("all", "first batch") for s in plots.SCORE_KEYS),
    ]
    figures = "\n\n".join(f"![retention, evaluation {k}]({name})" for k, name in zip(sorted(by_eval), images))
    text = (
        f"## Retention curves\n\n{_source('curve.jsonl', f' ({len(points)} points, {len(by_eval)} evaluations)')} "
        "Solid: all facts edited so far; dashed: the first batch's facts.\n\n"
        f"{figures}\n\nAt the last point of each evaluation:\n\n{table(header, rows)}\n"
    )
    return text


def general(rows: list[dict], out_dir: str):
    rows = sorted(rows, key=lambda r: r["edits"])
    tasks = list(dict.fromkeys(t for r in rows for t in r["tasks"]))
    series = {}
    for task in tasks:
        at = [(r["edits"], r["tasks"][task][MAIN_METRIC]) for r in rows if MAIN_METRIC in r["tasks"].get(task, {})]
        series[task] = ([e for e, _ in at], [v for _, v in at])
    plots.general(
        series, f"{MAIN_METRIC} (weighted F1 of the generated answers)", os.path.join(out_dir, "general.png")
    )
    cells = [[str(r["edits"])] + [num(r["tasks"].get(t, {}).get(MAIN_METRIC)) for t in tasks] for r in rows]
    text = (
        f"## General ability\n\n{_source('general.jsonl', f' ({len(rows)} measurements)')} "
        f"Metric: `{MAIN_METRIC}` of each task.\n\n![general ability](general.png)\n\n"
        f"{table(['edits', *tasks], cells)}\n"
    )
    return text


def comparison(compare: dict, out_dir: str):
    methods = compare["methods"]
    names = [m["method"] for m in methods]
    plots.comparison(
        names, {s: [m[s] for m in methods] for s in plots.SCORE_KEYS}, os.path.join(out_dir, "compare.png")
    )
    gib = lambda b: None if b is None else b / 2**30
    rows = [
        [
            m["method"],
            *(pct(m[s]) for s in plots.SCORE_KEYS),
            num(m["train_seconds"]),
            num(m["edit_seconds"]),
            num(gib(m["peak_memory_bytes"])),
        ]
        for m in methods
    ]
    header = ["method", "ES (%)", "GS (%)", "LS (%)", "train (s)", "edit (s)", "peak memory (GiB)"]
    text = (
        f"## Methods compared\n\n{_source('compare.json', f' ({len(methods)} methods)')}\n\n"
        f"{table(header, rows)}\n\n![methods compared](compare.png)\n"
    )
    return text


# In report order: input file, section title (for the list of what is missing), builder.
SECTIONS = (
    ("metrics.json", "Final scores", final_scores),
    ("compare.json", "Methods compared", comparison),
    ("train_metrics.jsonl", "Training", training),
    ("curve.jsonl", "Retention curves", retention),
    ("general.jsonl", "General ability", general),
)
