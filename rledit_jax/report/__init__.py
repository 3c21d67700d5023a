"""Rendering a run directory into `report.md` plus PNG figures (`bin/report`).

- `inputs`: the result files a run directory may hold, their formats, reading and checking them;
- `plots`: the figures (matplotlib, Agg canvas);
- `sections`: one Markdown section (tables, figure links) per input file;
- `render`: the whole report, written atomically.
"""

from rledit_jax.report.render import render

__all__ = ["render"]
