"""A step's kind batch packed into one row of real tokens, so no pass pays for padding.

A kind batch of one step is `[M, B, L]` (M micro-batches of B right-padded rows, `data.KindBatch`).
Packed, its real tokens lie end to end in one row of `P` slots (P static: `KindLengths.tokens`, the
most real tokens any step of the run holds); each keeps its sequence id (its row `r = m * B + b`)
and position, so attention stays within a row (`models.layers.Segments`). Losses and metrics read
only answer positions (`labels != -100`), so the pack also maps each row's answer tokens to slots:

  tokens          [P]        int32   the real tokens in row-major order of (m, b, l); 0 after them
  segments        Segments   [1, P]  sequence id (-1 on unused slots) and position of every slot
  answer_slots    [M, B, A]  int32   the slot of each row's a-th answer token (A = KindLengths.answers)
  answer_valid    [M, B, A]  bool    false past a row's answer (and on padding rows)
  labels          [M, B, A]  int32   the answer tokens (-100 where not valid)
  old_labels      [M, B, A]  int32   the token each answer token competes with (CounterFact; -100
                                     where the reference's score does not count it: `compared_old`)
  token_slots     [M, B, L]  int32   the slot of every position (0 on padding), for `token="all"`
  token_valid     [M, B, L]  bool    the real positions (the attention mask)

Everything is computed on device from the padded arrays (no host round-trip inside a sequence).
"""

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rledit_jax.data.tokenization import IGNORE
from rledit_jax.method import losses
from rledit_jax.models.layers import Segments

# Packed rows are padded to a multiple of this many slots (few distinct compiled shapes).
TOKEN_MULTIPLE = 16


@dataclasses.dataclass(frozen=True)
class KindLengths:
    """Static sizes of one kind's packed steps: the longest answer and the most real tokens of a step."""

    answers: int
    tokens: int

    @classmethod
    def of(cls, kind_batch) -> "KindLengths":
        """From a kind batch with any leading axes before `[M, B, L]` (e.g. `[T, M, B, L]`)."""
        labels, mask = np.asarray(kind_batch.labels), np.asarray(kind_batch.attention_mask)
        answers = max(1, int((labels != IGNORE).sum(-1).max()))
        per_step = mask.reshape(-1, int(np.prod(mask.shape[-3:]))).sum(-1)
        return cls(answers=answers, tokens=round_up(max(1, int(per_step.max())), TOKEN_MULTIPLE))


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


class Packed(NamedTuple):
    tokens: jax.Array
    segments: Segments
    answer_slots: jax.Array
    answer_valid: jax.Array
    labels: jax.Array
    old_labels: jax.Array
    token_slots: jax.Array
    token_valid: jax.Array


@dataclasses.dataclass(frozen=True)
class Lengths:
    """The static sizes of a run's packed steps, per kind (None: a kind the programs never see)."""

    edit: KindLengths
    equiv: KindLengths | None = None
    unrel: KindLengths | None = None

    @classmethod
    def of(cls, batches) -> "Lengths":
        """From `StepBatches` (leading axis T)."""
        return cls(*(KindLengths.of(getattr(batches, kind)) for kind in ("edit", "equiv", "unrel")))


def compared_old(attention_mask, old_labels):
    """`old_labels` `[..., M, B, L]` (`data.KindBatch`'s layout) cut as the reference's `succ_ratios` cuts it.

    The reference compares a micro-batch's padded labels and old labels over the shorter of their two
    padded widths only, W = min(longest row, longest old row), and divides by the answer tokens left
    in it. Columns from W on become -100, so `losses.new_beats_old` counts exactly those tokens.
    """
    columns = jnp.arange(old_labels.shape[-1])
    # Per micro-batch (any leading axes): a row's labels are as long as the row.
    label_width = jnp.max(jnp.sum(attention_mask, axis=-1, keepdims=True), axis=-2, keepdims=True)
    old_width = jnp.max(jnp.where(old_labels != IGNORE, columns + 1, 0), axis=(-2, -1), keepdims=True)
    return jnp.where(columns < jnp.minimum(label_width, old_width), old_labels, IGNORE)


def pack(batch, lengths: KindLengths) -> Packed:
    """Packs one step's kind batch (fields `[M, B, L]`; `old_labels` only where the data has a competing
    answer, as `data.KindBatch` does); see the module docstring."""
    m, b, l = batch.input_ids.shape
    flat_mask = batch.attention_mask.reshape(-1).astype(bool)
    # Slot of every real position (row-major over m, b, l); positions past the P slots never occur
    # (P bounds every step's real tokens).
    slot_of = jnp.cumsum(flat_mask) - 1
    src = jnp.nonzero(flat_mask, size=lengths.tokens, fill_value=0)[0]
    used = jnp.arange(lengths.tokens) < jnp.sum(flat_mask)
    tokens = jnp.where(used, batch.input_ids.reshape(-1)[src], 0)
    segments = Segments(
        positions=jnp.where(used, src % l, 0).astype(jnp.int32)[None],
        ids=jnp.where(used, src // l, -1).astype(jnp.int32)[None],
    )
    positions, valid = losses.answer_positions(batch.labels, lengths.answers)  # [M, B, A]
    rows = (jnp.arange(m)[:, None, None] * b + jnp.arange(b)[None, :, None]) * l
    answer_slots = jnp.where(valid, slot_of[rows + positions], 0)
    take = lambda x: jnp.where(valid, jnp.take_along_axis(x, positions, axis=-1), IGNORE)
    old_labels = getattr(batch, "old_labels", None)
    if old_labels is not None:
        old_labels = compared_old(batch.attention_mask, old_labels)
    token_slots = jnp.where(flat_mask, slot_of, 0).reshape(m, b, l)
    return Packed(
        tokens=tokens.astype(jnp.int32),
        segments=segments,
        answer_slots=answer_slots.astype(jnp.int32),
        answer_valid=valid,
        labels=take(batch.labels),
        old_labels=jnp.full_like(valid, IGNORE, jnp.int32) if old_labels is None else take(old_labels),
        token_slots=token_slots.astype(jnp.int32),
        token_valid=flat_mask.reshape(m, b, l),
    )
