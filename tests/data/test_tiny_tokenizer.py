"""The built-in tiny tokenizer and the synthetic facts written for it."""

import numpy as np
import pytest

from rledit_jax.data import (
    MAX_SYNTHETIC_FACTS,
    TINY_VOCAB_SIZE,
    TinyTokenizer,
    load_tokenizer,
    make_synthetic_facts,
    tokenize_pair,
)

BYTE_IDS = range(1, 257)  # ids 1..256 spell single bytes


def random_text(rng: np.random.Generator, n: int) -> str:
    # Any code point except the surrogates, which are not text (they cannot be UTF-8 encoded).
    points = rng.integers(0, 0x110000 - 0x800, n)
    points = np.where(points >= 0xD800, points + 0x800, points)
    # Bias towards spaces, ASCII words and digits so word/space pieces get exercised too.
    common = rng.choice(list(" aZ9_?\t\n  Paris capital"), n)
    return "".join(c if rng.random() < 0.5 else chr(p) for c, p in zip(common, points))


def test_round_trip_arbitrary_unicode():
    tok = TinyTokenizer()
    rng = np.random.default_rng(0)
    texts = [random_text(rng, int(rng.integers(1, 60))) for _ in range(300)]
    texts += ["", " ", "  \n\t ", "naïve café ½ ² ٣ 😀👍🏽", "a_b__c"]
    texts += ["The capital city of North Zorvia is Kelmar."]
    for text in texts:
        ids = tok.encode(text)
        assert all(0 < i < TINY_VOCAB_SIZE for i in ids)
        assert tok.decode(ids) == text


def test_vocabulary_is_fixed_and_small():
    assert TINY_VOCAB_SIZE == 622  # the tiny model config depends on it: change both together
    tok = load_tokenizer(None)
    assert isinstance(tok, TinyTokenizer)
    assert (tok.vocab_size, tok.pad_token_id, tok.prompt_prefix_ids) == (TINY_VOCAB_SIZE, 0, ())
    assert tok.decode([0]) == "<|endoftext|>"
    # Every word id decodes to a string that encodes back to that one id: ids are distinct and reachable.
    for i in range(257, TINY_VOCAB_SIZE):
        assert tok.encode(tok.decode([i])) == [i]
    with pytest.raises(ValueError, match="token id 622 is outside the tiny vocabulary"):
        tok.decode([5, TINY_VOCAB_SIZE])


def test_words_carry_their_leading_space():
    tok = TinyTokenizer()
    assert len(tok.encode(" Paris")) == 1
    assert len(tok.encode("Paris")) == 1
    assert tok.encode(" Paris") != tok.encode("Paris")
    assert tok.encode("The capital") == tok.encode("The") + tok.encode(" capital")
    assert tok.encode(" Qwzx") == [1 + b for b in b" Qwzx"]  # unknown word: its bytes


def test_synthetic_facts_are_deterministic_and_distinct():
    facts = make_synthetic_facts(200, seed=1)
    assert facts == make_synthetic_facts(200, seed=1)
    assert facts != make_synthetic_facts(200, seed=2)
    assert len({f.edit.prompt for f in facts}) == 200
    assert all(f.edit.prompt != f.equiv.prompt and f.equiv.answer == f.edit.answer for f in facts)
    assert all(f.edit.old_answer is None for f in facts)
    assert len(make_synthetic_facts(MAX_SYNTHETIC_FACTS, seed=0)) == MAX_SYNTHETIC_FACTS
    with pytest.raises(ValueError, match="n must be in"):
        make_synthetic_facts(MAX_SYNTHETIC_FACTS + 1, seed=0)
    with pytest.raises(ValueError, match="n must be in"):
        make_synthetic_facts(0, seed=0)


def test_synthetic_text_is_in_the_tiny_vocabulary():
    tok = TinyTokenizer()
    question_mark = 1 + ord("?")
    for fact in make_synthetic_facts(MAX_SYNTHETIC_FACTS, seed=0):
        for pair in (fact.edit, fact.equiv, fact.unrel):
            assert 1 <= len(tok.encode(" " + pair.answer)) <= 3, pair
            for text in (pair.prompt, " " + pair.answer):
                assert not [i for i in tok.encode(text) if i in BYTE_IDS and i != question_mark], text
            tokens = tokenize_pair(tok, pair)
            assert len(tokens) <= 16
