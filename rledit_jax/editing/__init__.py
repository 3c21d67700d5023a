"""Editing a model with a trained hypernetwork: the library behind `bin/edit`.

- `state`: `EditState` (one fixed-shape pytree: hypernetworks, normaliser statistics, edited kernels,
  history of applied shifts as low-rank factors) and the jitted pure functions `edit_batch` and
  `rollback`.
- `requests`: request files, tokenisation (as the project's edit pairs), fixed-shape micro-batches.
- `editor`: `Editor`, the convenience layer (tokenise, edit, history, rollback, scores, export).
- `inspect`: teacher-forced target probabilities and greedy continuations.
- `export`: full HF export, delta export and applying a delta to its base.
"""

from rledit_jax.editing.editor import BatchRecord, Editor, NonFiniteShiftError, load_hypernet
from rledit_jax.editing.export import apply_delta, read_delta
from rledit_jax.editing.requests import EditBatch, Request, RequestError, make_batch, read_requests
from rledit_jax.editing.state import EditInfo, EditState, edit_batch, init_state, rollback

__all__ = [
    "BatchRecord",
    "EditBatch",
    "EditInfo",
    "EditState",
    "Editor",
    "NonFiniteShiftError",
    "Request",
    "RequestError",
    "apply_delta",
    "edit_batch",
    "init_state",
    "load_hypernet",
    "make_batch",
    "read_delta",
    "read_requests",
    "rollback",
]
