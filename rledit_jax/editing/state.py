"""The edit state and the jitted, pure functions that edit a model and roll edits back.

`EditState` is one pytree of fixed shape, so every call with batches of the same padded shape runs
the same compiled program. With S = `capacity` history slots, R = `max_rows` rows per batch and
`(d_in, d_out)` each site's kernel shape:

  hypernets     Hypernets(nets, norms)               the trained hypernetworks (constant) and their
                                                     normaliser statistics now (they keep updating)
  kernels       {site: [d_in, d_out] f32}            the edited matrices now
  base          {site: [d_in, d_out] f32}            the model's kernels plus every committed batch
  k_hist        {site: [S, R, d_in] f32}             factors of the batches still in history:
  c_hist        {site: [S, R, d_out] f32}              shift of a batch = K^T C
  norms_before  {(d_in, d_out): NormState [S, ...]}  normaliser statistics before each batch
  batch_ids     [S] int32, n_rows [S] int32, shift_norms [S, n_sites] f32 (||K^T C||_F per site)
  start, count  int32: history is slots start, start+1, ... (mod S), oldest first, `count` of them
  next_id       int32: the id the next applied batch gets (ids are never reused)
  n_committed   int32: batches folded into `base`, no longer in history

On a mesh (`spec.mesh`), `kernels`, `base` and the history's factors are split like the sites' kernels
(`partitioning.rules`), everything else is whole on every device (`state_shardings`).

Invariant: `kernels == replay(base, history)`, i.e. `base + S_1 + S_2 + ...` added one batch at a
time in the order they were applied, by the same expression as the edit (`edit_step.apply_factors`).
A batch's factors keep only its R captured rows (answer tokens, or every real token for
`token="all"`); dropped rows have K = 0 there, so K^T C is unchanged.

History semantics:

- `edit_batch` applies one batch and records it. When the history is full, the oldest batch is
  committed first: added to `base` and dropped from history (it can no longer be rolled back).
- `rollback(state, k)` undoes the last k batches exactly: `kernels` is recomputed by replaying the
  remaining history on `base` (the same float32 additions in the same order as when they were
  applied, so the kernels, and the logits, are those the model had before those batches), and the
  normaliser statistics are restored to those before the oldest undone batch.
- An edit whose shift, kernels or statistics are not finite is not applied: the returned state
  equals the input state and `info.applied` is False (`Editor.edit` raises).
"""

import functools

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from rledit_jax.jit import program
from rledit_jax.method import edit_step as es
from rledit_jax.method import packing, passes, shift
from rledit_jax.method.sites import check_hypernets
from rledit_jax.method.spec import Hypernets, Spec
from rledit_jax.partitioning import rules


@flax.struct.dataclass
class EditState:
    hypernets: Hypernets
    kernels: dict
    base: dict
    k_hist: dict
    c_hist: dict
    norms_before: dict
    batch_ids: jax.Array
    n_rows: jax.Array
    shift_norms: jax.Array
    start: jax.Array
    count: jax.Array
    next_id: jax.Array
    n_committed: jax.Array

    @property
    def capacity(self) -> int:
        return int(self.batch_ids.shape[0])

    @property
    def max_rows(self) -> int:
        return int(next(iter(self.k_hist.values())).shape[1])


@flax.struct.dataclass
class EditInfo:
    """What `edit_batch` did: applied (False: non-finite, state unchanged), the batch's id (-1 when
    not applied), its captured rows and each site's shift Frobenius norm `[n_sites]`."""

    applied: jax.Array
    batch_id: jax.Array
    n_rows: jax.Array
    shift_norms: jax.Array


def init_state(spec: Spec, params, hypernets: Hypernets, *, capacity: int, max_rows: int) -> EditState:
    """A fresh state: the model's kernels, empty history of `capacity` batches of `max_rows` rows.

    Every buffer is the state's own (no array of `params` or `hypernets` is shared), since the
    jitted updates consume the state they are given.
    """
    if capacity < 1 or max_rows < 1:
        raise ValueError(f"capacity and max_rows must be >= 1, got {capacity} and {max_rows}")
    layout = spec.layout
    check_hypernets(layout, hypernets)
    own = lambda tree: jax.tree.map(lambda x: jnp.array(x, copy=True), tree)
    kernels = es.base_kernels(spec, params)
    norms = hypernets.norms
    zeros = lambda *shape: jnp.zeros(shape, jnp.float32)
    state = EditState(
        hypernets=own(hypernets),
        kernels=own(kernels),
        base=own(kernels),
        k_hist={s.name: zeros(capacity, max_rows, s.shape[0]) for s in layout.sites},
        c_hist={s.name: zeros(capacity, max_rows, s.shape[1]) for s in layout.sites},
        norms_before=jax.tree.map(lambda x: jnp.zeros((capacity, *jnp.shape(x)), jnp.float32), norms),
        batch_ids=jnp.full((capacity,), -1, jnp.int32),
        n_rows=jnp.zeros((capacity,), jnp.int32),
        shift_norms=zeros(capacity, len(layout.sites)),
        start=jnp.int32(0),
        count=jnp.int32(0),
        next_id=jnp.int32(0),
        n_committed=jnp.int32(0),
    )
    return state if spec.mesh is None else jax.device_put(state, state_shardings(spec, state))


def state_shardings(spec: Spec, state: EditState) -> EditState:
    """The sharding of every buffer of `state` on `spec.mesh` (see the module docstring)."""
    named = lambda pspec: rules.named(spec.mesh, pspec)
    kernels = {s: named(rules.site_spec(spec.model, s)) for s in spec.layout.names}
    factor = {s: rules.factor_specs(spec.model, s) for s in spec.layout.names}
    return jax.tree.map(lambda _: named(P()), state).replace(
        kernels=kernels,
        base=kernels,
        k_hist={s: named(P(None, *k)) for s, (k, _) in factor.items()},
        c_hist={s: named(P(None, *c)) for s, (_, c) in factor.items()},
    )


def _slot_factors(state: EditState, slot):
    return {s: (state.k_hist[s][slot], state.c_hist[s][slot]) for s in state.k_hist}


def _all_finite(tree):
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def _compact(factors, mask, max_rows: int):
    """Keeps the `mask` rows of every site's factors, in order, zero-padded to `max_rows` rows."""
    idx = jnp.nonzero(mask, size=max_rows, fill_value=mask.shape[0])[0]
    take = lambda x: jnp.take(x, idx, axis=0, mode="fill", fill_value=0.0)
    return {s: (take(k), take(c)) for s, (k, c) in factors.items()}


@program(donate=("state",))
def edit_batch(spec: Spec, params, state: EditState, batch):
    """Edits one batch `[M, B, L]` (fields input_ids, attention_mask, labels): `(state', EditInfo)`.

    `state` is consumed (its buffers are donated to `state'`). The edit is `edit_step.edit_step`
    (capture at the current kernels, update the normalisers, predict every site's shift), as in the
    evaluation loop; the shift is then kept as factors of the batch's captured rows and recorded in
    the history.
    """
    _, hypernets, factors = es.edit_step(spec, params, state.hypernets, state.kernels, batch)
    mask = passes.capture_rows(packing.pack(batch, spec.lengths.edit), spec.hparams.token)[1].reshape(-1)
    rows = jnp.sum(mask, dtype=jnp.int32)
    compact = _compact(factors, mask, state.max_rows)
    kernels = es.apply_factors(state.kernels, compact)
    norms_f = jnp.stack([jnp.sqrt(jnp.maximum(shift.shift_sq_norm(*compact[s]), 0.0)) for s in spec.layout.names])
    applied = _all_finite((compact, kernels, hypernets.norms, norms_f)) & (rows <= state.max_rows)

    def commit(state):
        capacity = state.capacity
        full = state.count == capacity
        # A full history first commits its oldest batch (slot `start`) into `base`.
        base = jax.lax.cond(
            full, lambda b: es.apply_factors(b, _slot_factors(state, state.start)), lambda b: dict(b), state.base
        )
        slot = (state.start + state.count) % capacity  # == start when full
        put = lambda buf, value: jax.lax.dynamic_update_index_in_dim(buf, value, slot, 0)
        return state.replace(
            hypernets=hypernets,
            kernels=kernels,
            base=base,
            k_hist={s: put(state.k_hist[s], compact[s][0]) for s in compact},
            c_hist={s: put(state.c_hist[s], compact[s][1]) for s in compact},
            norms_before=jax.tree.map(put, state.norms_before, state.hypernets.norms),
            batch_ids=put(state.batch_ids, state.next_id),
            n_rows=put(state.n_rows, rows),
            shift_norms=put(state.shift_norms, norms_f),
            start=jnp.where(full, (state.start + 1) % capacity, state.start),
            count=jnp.where(full, state.count, state.count + 1),
            next_id=state.next_id + 1,
            n_committed=state.n_committed + full.astype(jnp.int32),
        )

    info = EditInfo(applied=applied, batch_id=jnp.where(applied, state.next_id, -1), n_rows=rows, shift_norms=norms_f)
    state = jax.lax.cond(applied, commit, lambda s: s, state)
    if spec.mesh is not None:  # The state keeps its shardings (so the next call runs the same program).
        state = jax.lax.with_sharding_constraint(state, state_shardings(spec, state))
    return state, info


def replay(state: EditState, n):
    """`base` plus the oldest `n` (traced) history batches, added one at a time in applied order."""

    def add(i, kernels):
        return es.apply_factors(kernels, _slot_factors(state, (state.start + i) % state.capacity))

    return jax.lax.fori_loop(0, n, add, dict(state.base))


@functools.partial(jax.jit, donate_argnames="state")
def rollback(state: EditState, k) -> EditState:
    """Undoes the last `k` batches (1 <= k <= count; `EditSession.rollback` checks): kernels replayed
    from `base` and the remaining history, normaliser statistics as before the oldest undone batch.

    `state` is consumed (its buffers are donated)."""
    keep = state.count - k
    slot = (state.start + keep) % state.capacity
    return state.replace(
        kernels=replay(state, keep),
        hypernets=state.hypernets.replace(norms=jax.tree.map(lambda x: x[slot], state.norms_before)),
        count=keep,
        batch_ids=jnp.where(_in_history(state, keep), state.batch_ids, -1),
    )


def _in_history(state: EditState, count):
    """`[S]` bool: slots holding one of the oldest `count` batches of the history."""
    age = (jnp.arange(state.capacity) - state.start) % state.capacity
    return age < count


def history_slots(state: EditState) -> list[int]:
    """Slots of the batches in history, oldest first (host)."""
    start, count = int(state.start), int(state.count)
    return [(start + i) % state.capacity for i in range(count)]


def batch_factors(state: EditState, batch_id: int) -> dict:
    """`{site: (K [R, d_in], C [R, d_out])}` of a batch still in history (shift = K^T C)."""
    ids = np.asarray(state.batch_ids)
    for slot in history_slots(state):
        if ids[slot] == batch_id:
            return _slot_factors(state, slot)
    raise KeyError(f"batch {batch_id} is not in the history (ids {[int(ids[s]) for s in history_slots(state)]})")
