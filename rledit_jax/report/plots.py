"""The report's figures, drawn with matplotlib's Agg canvas (no pyplot, no global backend) and written
atomically as PNGs of `SIZE` inches at `DPI` (800 x 450 pixels)."""

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from rledit_jax import atomic

SIZE, DPI = (8.0, 4.5), 100
SCORE_KEYS = ("ES", "GS", "LS")
COLORS = dict(zip(SCORE_KEYS, ("tab:blue", "tab:orange", "tab:green")))


def _save(fig: Figure, path: str) -> None:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)


def _axes(title: str, xlabel: str, ylabel: str):
    fig = Figure(figsize=SIZE, dpi=DPI)
    ax = fig.add_subplot()
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    return fig, ax


def training(steps: list[int], losses: dict[str, list[float]], path: str) -> None:
    """One line per loss over global training steps."""
    fig, ax = _axes("Training losses", "global step (sequence x steps per sequence + step)", "loss")
    for name, values in losses.items():
        ax.plot(steps, values, label=name)
    ax.legend()
    _save(fig, path)


def retention(edits: list[int], all_facts: dict, first_batch: dict, title: str, path: str) -> None:
    """ES / GS / LS over edits: all facts edited so far (solid), the first batch's facts (dashed)."""
    fig, ax = _axes(title, "facts edited", "score")
    for key in SCORE_KEYS:
        ax.plot(edits, all_facts[key], color=COLORS[key], marker=".", label=f"{key}, all edited")
        ax.plot(edits, first_batch[key], color=COLORS[key], linestyle="--", label=f"{key}, first batch")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(ncol=2, fontsize="small")
    _save(fig, path)


def general(series: dict[str, tuple[list[int], list[float]]], ylabel: str, path: str) -> None:
    """One line per task: `{task: (edits, values)}`."""
    fig, ax = _axes("General ability", "facts edited", ylabel)
    for task, (edits, values) in series.items():
        ax.plot(edits, values, marker="o", label=task)
    ax.legend(ncol=2, fontsize="small")
    _save(fig, path)


def comparison(methods: list[str], scores: dict[str, list[float]], path: str) -> None:
    """Grouped bars: per method, its ES / GS / LS."""
    fig, ax = _axes("Methods compared", "method", "score")
    width = 0.8 / len(SCORE_KEYS)
    for i, key in enumerate(SCORE_KEYS):
        ax.bar([m + (i - 1) * width for m in range(len(methods))], scores[key], width, color=COLORS[key], label=key)
    ax.set_xticks(range(len(methods)), methods)
    ax.set_ylim(0, 1.05)
    ax.legend()
    _save(fig, path)
