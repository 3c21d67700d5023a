"""build_step_batches: composition, order, padding, shapes, over-long pairs, and use under jit/scan.

A one-token-per-character tokenizer is the oracle: a pair (prompt, answer) is
len(prompt) + len(answer) tokens long, and its expected ids are written out here.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rledit_jax.data import Fact, Pair, StepBatches, build_step_batches
from tests.char_tokenizer import CharTokenizer

PAD = 0


def expected_row(prompt: str, answer: str, length: int, prefix: tuple[int, ...] = ()) -> dict:
    p = list(prefix) + [ord(c) + 1 for c in prompt]
    a = [ord(c) + 1 for c in " " + answer]
    n = len(p) + len(a) - 1
    pad = length - n
    return {
        "input_ids": p + a[:-1] + [PAD] * pad,
        "attention_mask": [1] * n + [0] * pad,
        "labels": [-100] * (len(p) - 1) + a + [-100] * pad,
        "old_labels": [-100] * length,
    }


# Prompt lengths (edit, equiv, unrel) of ten facts; every answer is "x", so a pair is one token longer.
LENGTHS = [
    (3, 6, 4),
    (5, 2, 4),
    (3, 6, 4),
    (7, 2, 4),
    (5, 9, 4),
    (2, 1, 4),
    (2, 3, 4),
    (4, 1, 4),
    (2, 3, 4),
    (1, 2, 4),
]
STEPS = [[0, 1, 2, 3, 4], [9, 8, 7, 6, 5]]
# Longest first, ties in step order, each kind on its own; -1 marks the padding row.
EXPECTED_ORDER = {
    "edit": [[[3, 1], [4, 0], [2, -1]], [[7, 8], [6, 5], [9, -1]]],
    "equiv": [[[4, 0], [2, 1], [3, -1]], [[8, 6], [9, 7], [5, -1]]],
    "unrel": [[[0, 1], [2, 3], [4, -1]], [[9, 8], [7, 6], [5, -1]]],
}


def make_facts(old_answers: bool = False) -> list[Fact]:
    facts = []
    for i, lengths in enumerate(LENGTHS):
        letter = "abcdefghij"[i]
        old = "yz" if old_answers else None
        edit, equiv, unrel = (Pair(letter * n, "x", old) for n in lengths)
        facts.append(Fact(edit, equiv, unrel))
    return facts


def test_order_composition_and_padding_rows():
    facts = make_facts()
    batches = build_step_batches(CharTokenizer(), facts, STEPS, batch_size=2, max_length=64)
    for kind, order in EXPECTED_ORDER.items():
        batch = getattr(batches, kind)
        assert batch.fact_index.tolist() == order
        length = batch.input_ids.shape[-1]
        for t in range(2):
            for m in range(3):
                for r in range(2):
                    i = order[t][m][r]
                    if i == -1:
                        assert (batch.input_ids[t, m, r] == PAD).all()
                        assert (batch.attention_mask[t, m, r] == 0).all()
                        assert (batch.labels[t, m, r] == -100).all()
                        assert (batch.old_labels[t, m, r] == -100).all()
                        continue
                    pair = getattr(facts[i], kind)
                    want = expected_row(pair.prompt, pair.answer, length)
                    for field, values in want.items():
                        assert getattr(batch, field)[t, m, r].tolist() == values, (kind, t, m, r, field)


def test_shapes_dtypes_and_length_buckets():
    facts = make_facts()
    batches = build_step_batches(CharTokenizer(), facts, STEPS, batch_size=2, max_length=64)
    # Longest pairs: edit 7+1 = 8, equiv 9+1 = 10, unrel 4+1 = 5; rounded up to multiples of 8.
    lengths = {"edit": 8, "equiv": 16, "unrel": 8}
    for kind, length in lengths.items():
        batch = getattr(batches, kind)
        for field in ("input_ids", "attention_mask", "labels", "old_labels"):
            assert getattr(batch, field).shape == (2, 3, 2, length)
            assert getattr(batch, field).dtype == np.int32
        assert batch.fact_index.shape == (2, 3, 2)
        assert batch.fact_index.dtype == np.int32
    exact = build_step_batches(CharTokenizer(), facts, STEPS, batch_size=2, max_length=64, pad_to_multiple=1)
    assert [getattr(exact, k).input_ids.shape[-1] for k in ("edit", "equiv", "unrel")] == [8, 10, 5]
    capped = build_step_batches(CharTokenizer(), facts, STEPS, batch_size=2, max_length=12)
    assert capped.equiv.input_ids.shape[-1] == 12
    whole = build_step_batches(CharTokenizer(), facts, STEPS, batch_size=5, max_length=64)
    assert whole.edit.input_ids.shape == (2, 1, 5, 8)
    assert whole.edit.fact_index.tolist() == [[[3, 1, 4, 0, 2]], [[7, 8, 6, 5, 9]]]


def test_old_labels_are_each_micro_batch_as_the_reference_collates_it():
    facts = make_facts(old_answers=True)
    # Old answers of different lengths: " yz" for even facts, " y" for odd ones.
    facts = [
        Fact(*(Pair(p.prompt, p.answer, "yz" if i % 2 == 0 else "y") for p in (f.edit, f.equiv, f.unrel)))
        for i, f in enumerate(facts)
    ]
    batches = build_step_batches(CharTokenizer(), facts, STEPS, batch_size=2, max_length=64)
    sp, y, z = ord(" ") + 1, ord("y") + 1, ord("z") + 1
    # Step 0's first edit micro-batch: fact 3 (prompt 7, old " y": row of 8) and fact 1 (prompt 5, old
    # " y": row of 6) -> padded with 0 to the longest old row (8), -100 after it.
    assert batches.edit.fact_index[0, 0].tolist() == [3, 1]
    assert batches.edit.old_labels[0, 0, 0].tolist() == [-100] * 6 + [sp, y]
    assert batches.edit.old_labels[0, 0, 1].tolist() == [-100] * 4 + [sp, y, 0, 0]
    # The second: fact 4 (prompt 5, old " yz": 7 long) and fact 0 (prompt 3, old " yz": 5 long), both
    # longer than their labels (6 and 4).
    assert batches.edit.fact_index[0, 1].tolist() == [4, 0]
    assert batches.edit.old_labels[0, 1, 0].tolist() == [-100] * 4 + [sp, y, z, -100]
    assert batches.edit.old_labels[0, 1, 1].tolist() == [-100] * 2 + [sp, y, z, 0, 0, -100]
    # The padding row of the ragged last micro-batch has none.
    assert batches.edit.fact_index[0, 2].tolist() == [2, -1]
    assert (batches.edit.old_labels[0, 2, 1] == -100).all()


def test_over_long_pair_is_an_error_by_default():
    facts = make_facts()
    facts[3] = Fact(Pair("q" * 30, "x"), facts[3].equiv, facts[3].unrel)
    with pytest.raises(ValueError, match=r"fact 3 edit pair is 31 tokens, over max_length 20 \(prompt 'qqq"):
        build_step_batches(CharTokenizer(), facts, STEPS, batch_size=2, max_length=20)


@pytest.mark.parametrize("prefix", [(), (7,)])
def test_truncation_keeps_answer_and_prefix_and_is_counted(prefix):
    facts = make_facts(old_answers=True)
    prompt = "0123456789abcdefghij"  # 20 characters
    facts[0] = Fact(Pair(prompt, "xyz", "no"), Pair(prompt, "xyz", "no"), facts[0].unrel)
    tok = CharTokenizer(prefix)
    batches = build_step_batches(tok, facts, STEPS, batch_size=2, max_length=12, truncate=True)
    assert (batches.edit.n_truncated, batches.equiv.n_truncated, batches.unrel.n_truncated) == (1, 1, 0)
    assert batches.n_truncated == 2
    # len(prefix) + 20 + 3 tokens cut to 12: the first prompt characters go, the prefix stays.
    n_drop = len(prefix) + 23 - 12
    want = expected_row(prompt[n_drop:], "xyz", 12, prefix)
    t, m, r = np.argwhere(batches.edit.fact_index == 0)[0]
    for field, values in want.items():
        if field != "old_labels":
            assert getattr(batches.edit, field)[t, m, r].tolist() == values, field
    # The old answer " no" from the (shifted) answer position on, then the micro-batch's 0 padding.
    own = [-100] * (len(prefix) + 20 - n_drop - 1) + [ord(c) + 1 for c in " no"]
    old = batches.edit.old_labels[t, m, r].tolist()
    assert old[: len(own)] == own and set(old[len(own) :]) <= {0, -100}


def test_truncation_cannot_cut_the_answer():
    facts = make_facts()
    facts[0] = Fact(Pair("ab", "x" * 20), facts[0].equiv, facts[0].unrel)
    with pytest.raises(ValueError, match="cannot cut 22 tokens to max_length 10"):
        build_step_batches(CharTokenizer(), facts, STEPS, batch_size=2, max_length=10, truncate=True)


def test_bad_arguments():
    facts = make_facts()
    with pytest.raises(ValueError, match="batch_size, max_length and pad_to_multiple must be >= 1"):
        build_step_batches(CharTokenizer(), facts, STEPS, batch_size=0, max_length=10)
    with pytest.raises(ValueError, match="step 1 holds row 10, outside"):
        build_step_batches(CharTokenizer(), facts, [[0, 1], [2, 10]], batch_size=2, max_length=64)
    with pytest.raises(ValueError, match="step 1 has 1 edits, step 0 has 2"):
        build_step_batches(CharTokenizer(), facts, [[0, 1], [2]], batch_size=2, max_length=64)


def test_pytree_under_jit_and_scan():
    facts = make_facts()
    batches = build_step_batches(CharTokenizer(), facts, STEPS, batch_size=2, max_length=64)

    def count_answer_tokens(total, step: StepBatches):
        return total + sum(jnp.sum(getattr(step, k).labels != -100) for k in ("edit", "equiv", "unrel")), None

    total, _ = jax.jit(lambda b: jax.lax.scan(count_answer_tokens, jnp.int32(0), b))(batches)
    # Every answer is " x" (2 tokens): 10 facts x 3 kinds x 2.
    assert int(total) == 60
    step = batches.step(1)
    assert isinstance(step, StepBatches)
    assert step.unrel.fact_index.tolist() == [[9, 8], [7, 6], [5, -1]]
    np.testing.assert_array_equal(step.equiv.input_ids, batches.equiv.input_ids[1])
    assert len(jax.tree.leaves(batches)) == 15
