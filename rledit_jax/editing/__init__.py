"""Editing a model with trained hypernetworks: the library behind `bin/edit`.

- `state`: `EditState` (one fixed-shape pytree: hypernetworks, normaliser statistics, edited kernels,
  history of applied shifts as low-rank factors) and the jitted pure functions `edit_batch` and
  `rollback`.
- `requests`: request files, tokenisation (as the project's edit pairs), fixed-shape micro-batches.
- `session`: `EditSession`, the convenience layer (tokenise, edit, history, rollback, scores, export).
- `scoring`: teacher-forced target probabilities and greedy continuations.
- `export`: full HF export, delta export and applying a delta to its base.
"""

from rledit_jax.editing.export import apply_delta, read_delta
from rledit_jax.editing.requests import EditBatch, Request, RequestError, make_batch, read_requests
from rledit_jax.editing.session import BatchRecord, EditSession, NonFiniteShiftError, copy_state, load_hypernet
from rledit_jax.editing.state import EditInfo, EditState, batch_factors, edit_batch, init_state, rollback

__all__ = [
    "BatchRecord",
    "EditBatch",
    "EditInfo",
    "EditSession",
    "EditState",
    "NonFiniteShiftError",
    "Request",
    "RequestError",
    "apply_delta",
    "batch_factors",
    "copy_state",
    "edit_batch",
    "init_state",
    "load_hypernet",
    "make_batch",
    "read_delta",
    "read_requests",
    "rollback",
]
