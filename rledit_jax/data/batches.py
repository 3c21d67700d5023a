"""Edit streams -> fixed-shape, scan-ready token batches.

For each kind (edit / equiv / unrel), a `KindBatch` holds numpy int32 arrays

    input_ids, attention_mask, labels, old_labels   [T, n_micro, batch_size, L]
    fact_index                                      [T, n_micro, batch_size]

T steps, n_micro = ceil(n_edits / batch_size) micro-batches per step, L per kind. Within a step each
kind is sorted by token length on its own (longest first, stable on ties, as the reference), then
cut into micro-batches; the last one is ragged when batch_size does not divide n_edits. So row r of
an edit micro-batch and row r of the equiv micro-batch are usually different facts: `fact_index`
says which fact each row holds (-1 for padding rows). Sequences are right-padded with the
tokenizer's pad id; padding positions and padding rows have attention_mask 0 and labels -100.

old_labels (CounterFact's competing answers) is the micro-batch as the reference collates it: each
row's `tokenization` old_labels right-padded with 0 to the micro-batch's longest (the reference pads
every key but labels with 0, and its `succ_ratios` compares against that 0 where a row's old answer
is shorter than the new one), then -100 to L (cut at L: the metric never reads past the labels'
width). It is all -100 for pairs without an old answer and for padding rows.

L is the longest sequence of that kind over the whole stream rounded up to `pad_to_multiple` (capped
at `max_length`), so shapes only change when the data does.
"""

import math

import jax
import numpy as np
from flax import struct

from rledit_jax.data.records import Fact
from rledit_jax.data.stream import validate_stream
from rledit_jax.data.tokenization import IGNORE, TokenizedPair, left_truncate, tokenize_pair
from rledit_jax.data.tokenizer import Tokenizer

KINDS = ("edit", "equiv", "unrel")


@struct.dataclass
class KindBatch:
    input_ids: np.ndarray
    attention_mask: np.ndarray
    labels: np.ndarray
    old_labels: np.ndarray
    fact_index: np.ndarray
    # Distinct (fact, kind) pairs whose prompt was left-truncated to fit max_length.
    n_truncated: int = struct.field(pytree_node=False)


@struct.dataclass
class StepBatches:
    edit: KindBatch
    equiv: KindBatch
    unrel: KindBatch

    @property
    def n_truncated(self) -> int:
        return self.edit.n_truncated + self.equiv.n_truncated + self.unrel.n_truncated

    def step(self, t: int) -> "StepBatches":
        """Step t alone: every array loses its leading T axis."""
        return jax.tree.map(lambda x: x[t], self)


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def tokenize_kind(
    tokenizer: Tokenizer,
    facts: list[Fact],
    indices: set[int],
    kind: str,
    max_length: int,
    truncate: bool,
) -> tuple[dict[int, TokenizedPair], int]:
    pairs, n_truncated = {}, 0
    for i in sorted(indices):
        pair = getattr(facts[i], kind)
        tokens = tokenize_pair(tokenizer, pair)
        if len(tokens) > max_length:
            if not truncate:
                raise ValueError(
                    f"fact {i} {kind} pair is {len(tokens)} tokens, over max_length {max_length} "
                    f"(prompt {pair.prompt!r}); --config.data.truncate=True left-truncates such prompts"
                )
            tokens = left_truncate(tokens, max_length, len(tokenizer.prompt_prefix_ids))
            n_truncated += 1
        pairs[i] = tokens
    return pairs, n_truncated


def assemble_kind_batch(
    steps: list[list[int]],
    pairs: dict[int, TokenizedPair],
    batch_size: int,
    length: int,
    pad_token_id: int,
    n_truncated: int,
) -> KindBatch:
    """One kind's `[T, n_micro, batch_size, length]` arrays from tokenised pairs keyed by fact index:
    each step's pairs sorted longest first (stable), cut into micro-batches, right-padded."""
    n_steps, n_edits = len(steps), len(steps[0])
    n_micro = math.ceil(n_edits / batch_size)
    shape = (n_steps, n_micro * batch_size, length)
    input_ids = np.full(shape, pad_token_id, np.int32)
    attention_mask = np.zeros(shape, np.int32)
    labels = np.full(shape, IGNORE, np.int32)
    old_labels = np.full(shape, IGNORE, np.int32)
    fact_index = np.full(shape[:2], -1, np.int32)
    for t, step in enumerate(steps):
        order = sorted(step, key=lambda j: -len(pairs[j]))
        for row, i in enumerate(order):
            tokens = pairs[i]
            n = len(tokens)
            input_ids[t, row, :n] = tokens.input_ids
            attention_mask[t, row, :n] = 1
            labels[t, row, :n] = tokens.labels
            fact_index[t, row] = i
        for first in range(0, len(order), batch_size):
            micro = [pairs[i].old_labels for i in order[first : first + batch_size]]
            width = max((len(o) for o in micro if o is not None), default=0)
            for row, old in enumerate(micro, start=first):
                if old is not None:
                    padded = np.concatenate([old, np.zeros(width - len(old), np.int32)])[:length]
                    old_labels[t, row, : len(padded)] = padded
    split = (n_steps, n_micro, batch_size)
    return KindBatch(
        input_ids=input_ids.reshape(*split, length),
        attention_mask=attention_mask.reshape(*split, length),
        labels=labels.reshape(*split, length),
        old_labels=old_labels.reshape(*split, length),
        fact_index=fact_index.reshape(split),
        n_truncated=n_truncated,
    )


def build_step_batches(
    tokenizer: Tokenizer,
    facts: list[Fact],
    steps: list[list[int]],
    *,
    batch_size: int,
    max_length: int,
    pad_to_multiple: int = 8,
    truncate: bool = False,
) -> StepBatches:
    """Tokenises the facts named by `steps` (T lists of n_edits indices into `facts`) and stacks them.

    A pair longer than `max_length` raises a ValueError, or with `truncate=True` has its prompt
    left-truncated (answer kept whole); truncations are counted in `KindBatch.n_truncated`.
    """
    if batch_size < 1 or max_length < 1 or pad_to_multiple < 1:
        raise ValueError(
            f"batch_size, max_length and pad_to_multiple must be >= 1, got "
            f"{batch_size}, {max_length}, {pad_to_multiple}"
        )
    validate_stream(steps, len(facts))
    used = {i for step in steps for i in step}
    kinds = {}
    for kind in KINDS:
        pairs, n_truncated = tokenize_kind(tokenizer, facts, used, kind, max_length, truncate)
        length = min(_round_up(max(len(p) for p in pairs.values()), pad_to_multiple), max_length)
        kinds[kind] = assemble_kind_batch(steps, pairs, batch_size, length, tokenizer.pad_token_id, n_truncated)
    return StepBatches(**kinds)
