"""Training checkpoints: what `bin/train` needs to continue a killed run exactly where it stopped.

One orbax `CheckpointManager` step directory `workdir/checkpoints/<n>/` per save, where orbax's
"step" n counts the training sequences completed (= Adam steps taken), with two items:

  state  {"nets":      {(d_in, d_out): hypernet.Params}   the hypernetworks
          "opt_state": optax Adam state of the nets
          "norms":     {(d_in, d_out): NormState}}        the normaliser statistics
  meta   JSON {"sequences_done", "config": the resolved config,
               "data": {"sequence_digests": one per completed sequence, "padded_lengths": {...}}}

The frozen LLM is never saved. No random key is consumed during training (the hypernetworks are
initialised from `PRNGKey(train.seed)`, sequence e's edit stream is drawn with seed `train.seed + e`),
so the config and n fix the data position; the digests (sha256 of each completed sequence's
facts, in order) check that the resumed run would have seen the same data.

Writes are atomic: orbax writes `<step>.orbax-checkpoint-tmp*` and renames it when complete, and a
left-over temporary directory is never taken for a checkpoint. Resuming restores into the abstract
tree of the fresh run's state, after checking every array's shape and dtype against it.
"""

import dataclasses
import hashlib
import json
import os

import jax
import orbax.checkpoint as ocp
from absl import logging

from rledit_jax import atomic

# Config fields that may differ between a checkpoint and the run resuming it: they change neither
# the shapes nor the meaning of the training done so far. (eval.steps is not one of them: with
# train.schedule="evaluate_each_sequence" every evaluation's normaliser updates carry into training.)
RESUMABLE_FIELDS = (
    "train.sequences",
    "trace",
    "checkpoint.every",
    "checkpoint.keep",
    "eval.curve_every",
    "eval.generative",
    "eval.general_path",
    "eval.general_every",
    "eval.general_n",
    "eval.general_tasks",
)


def sequence_digest(facts, sequence) -> str:
    """sha256 of the facts a training sequence (steps of row indices into `facts`) edits, in order."""
    rows = [[dataclasses.asdict(facts[i]) for i in step] for step in sequence]
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_differences(saved: dict, current: dict) -> list[str]:
    """`"field: saved -> current"` for each field (dotted) that differs, except `RESUMABLE_FIELDS`."""
    saved, current = _flatten(saved), _flatten(current)
    missing = "<absent>"
    return [
        f"{k}: {saved.get(k, missing)!r} -> {current.get(k, missing)!r}"
        for k in sorted(saved.keys() | current.keys())
        if k not in RESUMABLE_FIELDS and saved.get(k, missing) != current.get(k, missing)
    ]


def _leaf_name(path) -> str:
    parts = []
    for key in path:
        for attr in ("key", "idx", "name"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
    return ".".join(parts)


def _check_arrays(directory, stored, abstract):
    """Raises if the stored arrays' names, shapes or dtypes are not those of `abstract`."""
    found = {leaf.name: (tuple(leaf.shape), str(leaf.dtype)) for leaf in jax.tree.leaves(stored)}
    wanted = {
        _leaf_name(path): (tuple(leaf.shape), str(leaf.dtype))
        for path, leaf in jax.tree_util.tree_leaves_with_path(abstract)
    }
    problems = [
        f"{name}: stored {found.get(name, '<absent>')}, expected {wanted.get(name, '<absent>')}"
        for name in sorted(found.keys() | wanted.keys())
        if found.get(name) != wanted.get(name)
    ]
    if problems:
        raise ValueError(
            f"{directory} does not hold this run's training state (shape, dtype):\n  " + "\n  ".join(problems)
        )


class Checkpointer:
    """Saves and restores the training state of one `bin/train` run (see the module docstring).

    `config`: the resolved config as a JSON dict; `digests`: `sequence_digest` of every training
    sequence of this run; `padded_lengths`: the static sizes of the compiled training program.
    """

    def __init__(
        self, directory: str, *, every: int, keep: int, config: dict, digests: list[str], padded_lengths: dict
    ):
        if every < 1 or keep < 1:
            raise ValueError(f"checkpoint.every and checkpoint.keep must be >= 1, got {every} and {keep}")
        self.directory = os.path.abspath(directory)
        self.every = every
        self.config, self.digests, self.padded_lengths = config, digests, padded_lengths
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
            item_handlers={"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()},
        )

    def latest(self) -> int | None:
        """The sequences done of the newest complete checkpoint, or None."""
        return self._manager.latest_step()

    def save(self, done: int, state: dict, *, final: bool = False) -> bool:
        """Saves `state` after `done` sequences when `done` is a multiple of `every`, or `final`."""
        if done % self.every and not final:
            return False
        meta = {
            "sequences_done": done,
            "config": self.config,
            "data": {"sequence_digests": self.digests[:done], "padded_lengths": self.padded_lengths},
        }
        self._manager.save(
            done, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        )
        return True

    def restore(self, fresh_state: dict) -> tuple[int, dict]:
        """`(sequences done, state)` from the latest checkpoint, or `(0, fresh_state)` when there is none.

        Stops with a ValueError when the checkpoint was made with a different config (other than
        `RESUMABLE_FIELDS`), on different data, for more sequences than `train.sequences`, or holds
        arrays of other shapes or dtypes than `fresh_state`.
        """
        done = self.latest()
        if done is None:
            return 0, fresh_state
        where = os.path.join(self.directory, str(done))
        meta = self._manager.restore(done, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
        differences = config_differences(meta["config"], self.config)
        if differences:
            raise ValueError(
                f"checkpoint {where} was made with a different config:\n  "
                + "\n  ".join(differences)
                + f"\nOnly {', '.join(RESUMABLE_FIELDS)} may change when resuming; "
                "use another workdir (or delete its checkpoints/) to start over."
            )
        if done > len(self.digests):
            raise ValueError(
                f"checkpoint {where} has {done} training sequences done, more than train.sequences={len(self.digests)}"
            )
        saved = meta["data"]["sequence_digests"]
        changed = [e for e, (a, b) in enumerate(zip(saved, self.digests)) if a != b]
        if changed:
            raise ValueError(
                f"checkpoint {where}: training sequences {changed} of this config edit other facts than "
                "those the checkpoint was trained on (the dataset files changed, or, with synthetic facts, "
                "train.sequences changed: their train/eval split depends on it); use another workdir."
            )
        if meta["data"]["padded_lengths"] != self.padded_lengths:
            logging.warning(
                "padded lengths changed from %s to %s: training continues on the same facts, but not "
                "bitwise as an uninterrupted run would",
                meta["data"]["padded_lengths"],
                self.padded_lengths,
            )
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, fresh_state)
        _check_arrays(where, self._manager.item_metadata(done)["state"].tree, abstract)
        state = self._manager.restore(done, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))).state
        logging.info("resumed from %s (%d training sequences done)", where, done)
        return done, state

    def close(self):
        """Waits for a save in flight to be complete, then releases the manager."""
        self._manager.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def rewind_lines(path: str, key: str, done: int, per_item: int | None = None):
    """Keeps the lines of JSON lines file `path` whose `key` is below `done`, drops the rest.

    Lines written after the checkpoint a run resumes from are written again by it, so none is doubled.
    With `per_item`, a kept count other than `done * per_item` is logged.
    """
    kept = []
    if os.path.exists(path):
        with open(path) as f:
            kept = [line for line in f if line.strip() and json.loads(line)[key] < done]
    if per_item is not None and len(kept) != done * per_item:
        logging.warning(
            "%s holds %d lines of the %d %s done, expected %d", path, len(kept), done, key, done * per_item
        )
    with atomic.atomic_open(path) as f:
        f.writelines(kept)
