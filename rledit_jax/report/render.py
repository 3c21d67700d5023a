"""`render(workdir)`: a run directory's result files (`inputs.py`) to `workdir/report.md` and PNGs beside it.

A missing (or empty) input omits its section; the report lists what was absent.
"""

import os

from rledit_jax import atomic
from rledit_jax.report import inputs
from rledit_jax.report.sections import SECTIONS


def _empty(records) -> bool:
    """A JSON lines file without objects, or a compare.json without methods."""
    return records == [] or (isinstance(records, dict) and records.get("methods") == [])


def render(workdir: str) -> str:
    """Writes the report; returns the path of report.md."""
    found = inputs.read(workdir)
    parts, absent = [], []
    for name, title, build in SECTIONS:
        if name not in found:
            absent.append(f'- `{name}` not found: no "{title}" section.')
        elif _empty(found[name]):
            absent.append(f'- `{name}` holds no records: no "{title}" section.')
        else:
            parts.append(build(found[name], workdir))
    head = (
        f"# Run report: {os.path.basename(os.path.abspath(workdir))}\n\n"
        f"Rendered by `bin/report` from the files in `{os.path.abspath(workdir)}`; each section names the file "
        "its numbers come from.\n"
    )
    if absent:
        parts.append("## Not in this run directory\n\n" + "\n".join(absent) + "\n")
    path = os.path.join(workdir, "report.md")
    with atomic.atomic_open(path) as f:
        f.write("\n".join([head, *parts]))
    return path
