"""`EditSession`: a model, its edit sites and a tokenizer around the jitted edit functions of `state.py`.

    session = EditSession.from_config(config)               # the LLM of config.model, its tokenizer
    hypernets = load_hypernet("hypernet.safetensors", session.layout)
    state = session.init_state(hypernets, capacity=16)
    state, record = session.edit(state, [{"prompt": "The capital of Zorvia is", "target_new": "Paris"}])
    session.target_probs(state, requests)                   # teacher-forced p(target), edited model
    state = session.rollback(state, 1)                      # exactly as before that batch
    session.export_hf(state, "edited-model")                # or export_delta(state, dir, base=...)

The session holds only static things (the spec, the model's params, the tokenizer, the batch shape).
`edit` and `rollback` consume the `EditState` they are given (its buffers are donated to the one they
return: a 6B model's edited matrices are not copied per call); the scoring and export calls only read
it. Keep an earlier state with `copy_state(state)`.
"""

import dataclasses
import json
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rledit_jax import config_validation, data, models, run
from rledit_jax.editing import export, scoring
from rledit_jax.editing import requests as req
from rledit_jax.editing import state as st
from rledit_jax.method import edit_step as es
from rledit_jax.method import reference_io
from rledit_jax.method.packing import KindLengths, Lengths
from rledit_jax.method.sites import SiteLayout, check_hypernets
from rledit_jax.method.spec import Hypernets, Spec
from rledit_jax.partitioning.mesh import make_mesh


class NonFiniteShiftError(FloatingPointError):
    """An edit produced a non-finite shift; `state` is the (unchanged) state to continue from."""

    def __init__(self, message: str, state: st.EditState):
        super().__init__(message)
        self.state = state


@dataclasses.dataclass(frozen=True)
class BatchRecord:
    """One applied batch: its id, captured rows and each site's shift Frobenius norm."""

    batch_id: int
    n_rows: int
    shift_norms: dict[str, float]


def copy_state(state: st.EditState) -> st.EditState:
    """A copy of `state` with buffers of its own, to keep while the original is edited on."""
    return jax.tree.map(jnp.copy, state)


def _trained_sites(path: str) -> list[str] | None:
    """The edit sites in the `config.json` that bin/train writes beside `hypernet.safetensors`, if any."""
    config_file = os.path.join(os.path.dirname(os.path.abspath(path)), "config.json")
    try:
        with open(config_file) as f:
            sites = json.load(f)["model"]["edit_sites"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return sites if isinstance(sites, list) and all(isinstance(s, str) for s in sites) else None


def load_hypernet(path: str | os.PathLike, layout: SiteLayout) -> Hypernets:
    """The hypernetworks of a file in the reference naming (`hypernet.safetensors` of bin/train,
    `.npz`, or a reference `.pth` read with `weights_only=True`), checked against `layout`."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"hypernetwork file {path!r} does not exist")
    try:
        hypernets = reference_io.from_reference(reference_io.load_reference_file(path))
    except ValueError as e:
        raise ValueError(f"cannot read hypernetwork {path}: {e}") from None
    except Exception as e:  # A damaged file: safetensors / numpy / torch parse errors.
        raise ValueError(f"cannot read hypernetwork {path}: {type(e).__name__}: {e}") from None
    check_hypernets(layout, hypernets, source=f"hypernetwork {path}")
    trained_for = _trained_sites(path)
    if trained_for is not None and tuple(trained_for) != layout.names:
        raise ValueError(
            f"hypernetwork {path} was trained for the edit sites {trained_for} (the bin/train "
            f"config.json beside it), not {list(layout.names)}; set --config.model.edit_sites to match"
        )
    bad = [
        jax.tree_util.keystr(p)
        for p, x in jax.tree_util.tree_leaves_with_path(hypernets)
        if not np.all(np.isfinite(np.asarray(x)))
    ]
    if bad:
        raise ValueError(f"hypernetwork {path} holds non-finite values in {bad[:5]}")
    return hypernets


@dataclasses.dataclass(frozen=True, eq=False)
class EditSession:
    # The edit program's spec: the model, the edit sites, `hparams.token` (rows captured per example);
    # its packed sizes are set per batch (`batch_spec`).
    spec: Spec
    params: dict
    tokenizer: object | None = None
    # Rows per micro-batch and requests per batch (config.data.batch_size / n_edits).
    batch_size: int = 4
    max_requests: int = 20
    # Shortest padded length; longer batches pad to the next power of two.
    min_length: int = 8
    # Answer tokens a request's target may have: the rows an edit captures per request.
    max_answer_tokens: int = 16

    @classmethod
    def from_config(cls, config, *, model=None) -> "EditSession":
        """The session of a project config: model (`model.path` or the tiny one), tokenizer, sites.

        `model`: an already loaded `(llm_config, params)` (as `run.load_model` returns).
        """
        config_validation.validate(config)
        mesh = make_mesh(config.mesh)
        llm_config, params = model or run.load_model(config.model, mesh)
        # The packed sizes are those of each batch (`batch_spec`).
        spec = run.make_spec(config, llm_config, Lengths(edit=KindLengths(answers=1, tokens=1)), mesh)
        return cls(
            spec,
            params,
            run.load_tokenizer(config),
            batch_size=config.data.batch_size,
            max_requests=config.data.n_edits,
        )

    @property
    def llm_config(self):
        return self.spec.model

    @property
    def layout(self) -> SiteLayout:
        return self.spec.layout

    @property
    def n_micro(self) -> int:
        return req.n_micro_batches(self.max_requests, self.batch_size)

    @property
    def pad_token_id(self) -> int:
        return self.tokenizer.pad_token_id if self.tokenizer is not None else 0

    def batch_spec(self, batch: req.EditBatch) -> Spec:
        """The spec that edits `batch`: decided by its padded shape alone, so batches of one shape share
        one compiled program (the capture keeps `max_answer_tokens` answer rows per request)."""
        m, b, l = batch.input_ids.shape
        lengths = KindLengths(answers=self.max_answer_tokens, tokens=m * b * l)
        return dataclasses.replace(self.spec, lengths=Lengths(edit=lengths))

    # ------------------------------------------------------------------------------------ state

    def init_state(self, hypernets: Hypernets, *, capacity: int = 16, max_rows: int | None = None) -> st.EditState:
        """A fresh state with room for `capacity` batches of history, `max_rows` captured rows each.

        `max_rows` defaults to `max_answer_tokens` per request ("ans") or 64 per request ("all").
        History memory per site is `capacity * max_rows * (d_in + d_out) * 4` bytes.
        """
        if max_rows is None:
            max_rows = self.max_requests * (self.max_answer_tokens if self.spec.hparams.token == "ans" else 64)
        return st.init_state(self.spec, self.params, hypernets, capacity=capacity, max_rows=max_rows)

    def tokenize(self, requests: Sequence, where: str = "request") -> list[data.TokenizedPair]:
        return [
            req.tokenize_request(self.tokenizer, r, self.llm_config.max_length, f"{where} {i}")
            for i, r in enumerate(requests)
        ]

    def make_batch(self, requests: Sequence) -> req.EditBatch:
        """Tokenises requests (or takes tokenised ones) and lays them out `[n_micro, batch_size, L]`."""
        if len(requests) > self.max_requests:
            raise req.RequestError(
                f"{len(requests)} requests, more than one batch of max_requests="
                f"{self.max_requests} (data.n_edits); split them into several batches"
            )
        return req.make_batch(
            self.tokenize(requests),
            batch_size=self.batch_size,
            n_micro=self.n_micro,
            pad_token_id=self.pad_token_id,
            max_length=self.llm_config.max_length,
            min_length=self.min_length,
        )

    def edit(self, state: st.EditState, requests) -> tuple[st.EditState, BatchRecord]:
        """Applies one batch (a list of requests, or an `EditBatch`); returns the new state and its record.

        `state` is consumed. Raises `NonFiniteShiftError` (carrying the unchanged state) when the
        shift is not finite.
        """
        batch = requests if isinstance(requests, req.EditBatch) else self.make_batch(requests)
        longest = int((np.asarray(batch.labels) != data.IGNORE).sum(-1).max())
        if longest > self.max_answer_tokens:
            raise req.RequestError(
                f"a target of {longest} tokens, more than the session's max_answer_tokens={self.max_answer_tokens}"
            )
        rows = req.n_rows(batch, self.spec.hparams.token)
        if rows > state.max_rows:
            raise req.RequestError(
                f"the batch captures {rows} rows, more than the state's max_rows={state.max_rows}; "
                "create the state with a larger max_rows or edit fewer/shorter targets per batch"
            )
        new, info = st.edit_batch(self.batch_spec(batch), self.params, state, batch)
        if not bool(info.applied):
            raise NonFiniteShiftError(
                "the edit produced a non-finite shift, kernel or normaliser statistic; the batch was not applied", new
            )
        return new, self._record(int(info.batch_id), int(info.n_rows), np.asarray(info.shift_norms))

    def _record(self, batch_id, n_rows, norms) -> BatchRecord:
        return BatchRecord(batch_id, n_rows, dict(zip(self.layout.names, (float(x) for x in norms))))

    def history(self, state: st.EditState) -> list[BatchRecord]:
        """The batches that can be rolled back, oldest first."""
        ids, rows, norms = (np.asarray(x) for x in (state.batch_ids, state.n_rows, state.shift_norms))
        return [self._record(int(ids[s]), int(rows[s]), norms[s]) for s in st.history_slots(state)]

    def rollback(self, state: st.EditState, k: int = 1) -> st.EditState:
        """Undoes the last `k` batches: kernels and normaliser statistics as before them. `state` is consumed."""
        count = int(state.count)
        if not 1 <= k <= count:
            committed = int(state.n_committed)
            raise ValueError(
                f"can roll back 1..{count} batches, not {k}"
                + (
                    f" ({committed} older batches were committed when the history of "
                    f"{state.capacity} batches was full)"
                    if committed
                    else ""
                )
            )
        return st.rollback(state, np.int32(k))

    # ------------------------------------------------------------------------------- inspecting

    def kernels(self, state: st.EditState | None) -> dict:
        """The edit sites' kernels of `state`, or the unedited ones (float32) for None."""
        if state is None:
            return es.base_kernels(self.spec, self.params)
        return state.kernels

    def edited_params(self, state: st.EditState) -> dict:
        return models.set_sites(self.llm_config, self.params, state.kernels)

    def target_log_probs(self, state: st.EditState | None, requests) -> tuple[np.ndarray, np.ndarray]:
        """Per request: the target's teacher-forced log-probability (sum over its tokens) and its
        token count, on the edited model (`state` None: the unedited one)."""
        return scoring.target_log_probs(
            self.llm_config, self.params, self.kernels(state), self.tokenize(requests), pad_token_id=self.pad_token_id
        )

    def target_probs(self, state: st.EditState | None, requests) -> np.ndarray:
        """Per request: the probability of the whole target (product of its tokens' probabilities)."""
        return np.exp(self.target_log_probs(state, requests)[0])

    def greedy_ids(self, state: st.EditState | None, prompts: Sequence[Sequence[int]], max_new_tokens: int = 8):
        """Greedy continuations (new token ids) of tokenised prompts."""
        return scoring.greedy(
            self.llm_config,
            self.params,
            self.kernels(state),
            prompts,
            max_new_tokens=max_new_tokens,
            pad_token_id=self.pad_token_id,
        )

    def generate(self, state: st.EditState | None, prompts: Sequence[str], max_new_tokens: int = 8) -> list[str]:
        """Greedy continuations (decoded new tokens) of text prompts."""
        ids = [list(self.tokenizer.prompt_prefix_ids) + self.tokenizer.encode(p) for p in prompts]
        return [self.tokenizer.decode(o) for o in self.greedy_ids(state, ids, max_new_tokens)]

    # -------------------------------------------------------------------------------- shipping

    def export_hf(self, state: st.EditState, out: str, **options) -> None:
        """The edited model as an HF directory (`transformers.AutoModelForCausalLM.from_pretrained`);
        `options`: those of `export.export_hf` (overwrite, tokenizer_dir, files)."""
        export.export_hf(self.llm_config, self.params, state.kernels, out, **options)

    def export_delta(self, state: st.EditState, out: str, *, base: dict, **options) -> dict:
        """Only the edited matrices' deltas (HF names and layout) and a manifest; `options`: those of
        `export.export_delta` (overwrite, files, extra)."""
        return export.export_delta(self.llm_config, self.params, state.kernels, out, base=base, **options)
