"""tokenize_pair and load_tokenizer against token sequences built by hand in the test.

The oracle follows the reference's recipe literally: prompt ids = `tok(prompt)` (the tokenizer's own
special tokens included), answer ids = `tok(" " + answer, add_special_tokens=False)`, then
input_ids = prompt + answer[:-1] and labels = [-100] * (len(prompt) - 1) + answer.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from rledit_jax.data import (
    Fact,
    Pair,
    build_step_batches,
    load_facts,
    load_tokenizer,
    tokenize_pair,
)
from tests.char_tokenizer import CharTokenizer
from tests.paths import SHARED

GPT2_DIR = SHARED / "tokenizers" / "gpt2"


def reference_tensors(tok, prompt: str, answer: str, old_answer: str | None = None) -> dict:
    """The reference's tok_tuples, written out by hand for any HF tokenizer `tok`."""
    p = tok(prompt)["input_ids"]
    a = tok(" " + answer, add_special_tokens=False)["input_ids"]
    out = {"input_ids": p + a[:-1], "labels": [-100] * (len(p) - 1) + a}
    if old_answer is not None:
        o = tok(" " + old_answer, add_special_tokens=False)["input_ids"]
        out["old_labels"] = [-100] * (len(p) - 1) + o
    return out


def assert_matches(tokens, expected: dict) -> None:
    assert tokens.input_ids.dtype == np.int32
    assert tokens.input_ids.tolist() == expected["input_ids"]
    assert tokens.labels.tolist() == expected["labels"]
    if "old_labels" in expected:
        assert tokens.old_labels.tolist() == expected["old_labels"]
    else:
        assert tokens.old_labels is None


@pytest.fixture(scope="module")
def gpt2():
    if not GPT2_DIR.is_dir():
        pytest.skip(f"shared GPT-2 tokenizer not found at {GPT2_DIR}")
    from transformers import GPT2TokenizerFast

    return GPT2TokenizerFast.from_pretrained(str(GPT2_DIR)), load_tokenizer(GPT2_DIR)


def test_gpt2_wrapper_basics(gpt2):
    hf, ours = gpt2
    assert ours.vocab_size == 50257
    assert ours.pad_token_id == 50256  # GPT-2 has no pad token: eos stands in
    assert ours.prompt_prefix_ids == ()
    text = "Danielle Darrieux, née à Bordeaux — 😀"
    assert ours.encode(text) == hf(text, add_special_tokens=False)["input_ids"]
    assert ours.decode(ours.encode(text)) == text


def test_gpt2_known_ids(gpt2):
    _, ours = gpt2
    # GPT-2 BPE ids of CounterFact case 0, written out as literals.
    tokens = tokenize_pair(ours, Pair("The mother tongue of Danielle Darrieux is", "English", "French"))
    prompt = [464, 2802, 11880, 286, 39808, 7491, 5034, 2821, 318]
    assert tokens.input_ids.tolist() == prompt
    assert tokens.labels.tolist() == [-100] * 8 + [3594]
    assert tokens.old_labels.tolist() == [-100] * 8 + [4141]
    prompt_text = "The mother tongue of Danielle Darrieux is"
    tokens = tokenize_pair(ours, Pair(prompt_text, "Charles IV of Spain", "French"))
    assert tokens.input_ids.tolist() == prompt + [7516, 8363, 286]
    assert tokens.labels.tolist() == [-100] * 8 + [7516, 8363, 286, 8602]
    assert tokens.old_labels.tolist() == [-100] * 8 + [4141]


def real_rows(relative: str, first: int) -> list[tuple[int, dict]]:
    """The first `first` rows plus the first two with non-ASCII text."""
    path = SHARED / "data" / relative
    if not path.is_file():
        pytest.skip(f"shared data not found at {path}")
    rows = json.loads(path.read_text(encoding="utf-8"))
    non_ascii = [i for i, r in enumerate(rows) if not json.dumps(r, ensure_ascii=False).isascii()]
    return [(i, rows[i]) for i in list(range(first)) + non_ascii[:2]]


def test_real_zsre_records(gpt2):
    hf, ours = gpt2
    rows = real_rows("zsre/zsre_eval.json", 5)
    facts = load_facts("zsre", SHARED / "data" / "zsre" / "zsre_eval.json").facts
    for i, row in rows:
        fact = facts[i]
        new = row["alt"]
        assert_matches(tokenize_pair(ours, fact.edit), reference_tensors(hf, row["src"], new))
        assert_matches(tokenize_pair(ours, fact.equiv), reference_tensors(hf, row["rephrase"], new))
        expected = reference_tensors(hf, row["loc"] + "?", row["loc_ans"])
        assert_matches(tokenize_pair(ours, fact.unrel), expected)


def test_real_counterfact_records(gpt2):
    hf, ours = gpt2
    rows = real_rows("counterfact/counterfact.json", 5)
    facts = load_facts("counterfact", SHARED / "data" / "counterfact" / "counterfact.json").facts
    for i, row in rows:
        fact, new, true = facts[i], row["target_new"], row["ground_truth"]
        assert_matches(tokenize_pair(ours, fact.edit), reference_tensors(hf, row["prompt"], new, true))
        expected = reference_tensors(hf, row["rephrase_prompt"], new, true)
        assert_matches(tokenize_pair(ours, fact.equiv), expected)
        expected = reference_tensors(hf, row["locality_prompt"], row["locality_ground_truth"], new)
        assert_matches(tokenize_pair(ours, fact.unrel), expected)


def test_real_zsre_step_batch_rows(gpt2):
    hf, ours = gpt2
    rows = real_rows("zsre/zsre_eval.json", 6)[:6]
    facts = load_facts("zsre", SHARED / "data" / "zsre" / "zsre_eval.json").facts
    batches = build_step_batches(ours, facts, [[i for i, _ in rows]], batch_size=4, max_length=1024)
    texts = {
        "edit": {i: (r["src"], r["alt"]) for i, r in rows},
        "equiv": {i: (r["rephrase"], r["alt"]) for i, r in rows},
        "unrel": {i: (r["loc"] + "?", r["loc_ans"]) for i, r in rows},
    }
    for kind, by_fact in texts.items():
        batch = getattr(batches, kind)
        expected = {i: reference_tensors(hf, *by_fact[i]) for i in by_fact}
        # Longest first, ties in step order.
        order = sorted(by_fact, key=lambda i: -len(expected[i]["input_ids"]))
        assert batch.fact_index.reshape(-1).tolist() == order + [-1, -1]
        longest = len(expected[order[0]]["input_ids"])
        assert batch.input_ids.shape == (1, 2, 4, -(-longest // 8) * 8)
        flat_ids = batch.input_ids.reshape(8, -1)
        flat_labels = batch.labels.reshape(8, -1)
        for row, i in enumerate(order):
            n = len(expected[i]["input_ids"])
            assert flat_ids[row, :n].tolist() == expected[i]["input_ids"]
            assert (flat_ids[row, n:] == 50256).all()
            assert flat_labels[row, :n].tolist() == expected[i]["labels"]
            assert (flat_labels[row, n:] == -100).all()
            mask = batch.attention_mask.reshape(8, -1)[row]
            assert mask.tolist() == [1] * n + [0] * (flat_ids.shape[1] - n)
        assert (batch.old_labels == -100).all()


GENERATED = {
    "zsre_mend.json": (
        "zsre",
        {
            "src": "Who is the spouse of Maria Luisa?",
            "rephrase": "Maria Luisa married whom?",
            "alt": "Charles IV of Spain",
            "answers": ["x"],
            "loc": "nq question: who wrote hamlet",
            "loc_ans": "William Shakespeare",
        },
        Fact(
            Pair("Who is the spouse of Maria Luisa?", "Charles IV of Spain"),
            Pair("Maria Luisa married whom?", "Charles IV of Spain"),
            Pair("nq question: who wrote hamlet?", "William Shakespeare"),
        ),
    ),
    "zsre_reference.jsonl": (
        "zsre",
        {
            "src": "Which team does Achmad Rifai play for?",
            "rephrase": "Achmad Rifai plays for?",
            "ans": "Persib Bandung",
            "loc": "nq question: capital of peru",
            "loc_ans": "Lima",
        },
        Fact(
            Pair("Which team does Achmad Rifai play for?", "Persib Bandung"),
            Pair("Achmad Rifai plays for?", "Persib Bandung"),
            Pair("nq question: capital of peru?", "Lima"),
        ),
    ),
    "counterfact_rome.json": (
        "counterfact",
        {
            "requested_rewrite": {
                "prompt": "{} is a native speaker of",
                "subject": "Léon Blum",
                "target_new": {"str": "Norwegian"},
                "target_true": {"str": "French"},
            },
            "paraphrase_prompts": ["Léon Blum grew up speaking"],
            "neighborhood_prompts": ["Jacques Chirac is a native speaker of"],
        },
        Fact(
            Pair("Léon Blum is a native speaker of", "Norwegian", "French"),
            Pair("Léon Blum grew up speaking", "Norwegian", "French"),
            Pair("Jacques Chirac is a native speaker of", "French", "Norwegian"),
        ),
    ),
    "counterfact_easyedit.jsonl": (
        "counterfact",
        {
            "prompt": "The official religion of Edwin of Northumbria is",
            "target_new": "Islam",
            "ground_truth": "Christianity",
            "rephrase_prompt": "Edwin of Northumbria follows the religion of",
            "locality_prompt": "The official religion of Paul is",
            "locality_ground_truth": "Christianity",
        },
        Fact(
            Pair("The official religion of Edwin of Northumbria is", "Islam", "Christianity"),
            Pair("Edwin of Northumbria follows the religion of", "Islam", "Christianity"),
            Pair("The official religion of Paul is", "Christianity", "Islam"),
        ),
    ),
    "fever.json": (
        "fever",
        {
            "prompt": "Is it true that the Eiffel Tower is in Rome?",
            "equiv_prompt": ["Is the Eiffel Tower in Rome?"],
            "unrel_prompt": "Is it true that water is wet?",
            "alt": "Yes",
            "unrel_ans": "No",
        },
        Fact(
            Pair("Is it true that the Eiffel Tower is in Rome?", "Yes"),
            Pair("Is the Eiffel Tower in Rome?", "Yes"),
            Pair("Is it true that water is wet?", "No"),
        ),
    ),
}


def write_generated(directory: Path, filename: str) -> tuple[str, Path, Fact]:
    name, row, fact = GENERATED[filename]
    path = directory / filename
    text = json.dumps(row) + "\n" if path.suffix == ".jsonl" else json.dumps([row])
    path.write_text(text, encoding="utf-8")
    return name, path, fact


def char_tensors(prompt: str, answer: str, old: str | None = None) -> dict:
    p = [ord(c) + 1 for c in prompt]
    a = [ord(c) + 1 for c in " " + answer]
    out = {"input_ids": p + a[:-1], "labels": [-100] * (len(p) - 1) + a}
    if old is not None:
        o = [ord(c) + 1 for c in " " + old]
        out["old_labels"] = [-100] * (len(p) - 1) + o
    return out


@pytest.mark.parametrize("filename", sorted(GENERATED))
def test_generated_records_char_oracle(tmp_path, filename):
    name, path, fact = write_generated(tmp_path, filename)
    (loaded,) = load_facts(name, path).facts
    assert loaded == fact
    for pair in (loaded.edit, loaded.equiv, loaded.unrel):
        expected = char_tensors(pair.prompt, pair.answer, pair.old_answer)
        assert_matches(tokenize_pair(CharTokenizer(), pair), expected)


@pytest.mark.parametrize("filename", sorted(GENERATED))
def test_generated_records_gpt2(tmp_path, gpt2, filename):
    hf, ours = gpt2
    name, path, fact = write_generated(tmp_path, filename)
    (loaded,) = load_facts(name, path).facts
    for got, want in ((loaded.edit, fact.edit), (loaded.equiv, fact.equiv), (loaded.unrel, fact.unrel)):
        expected = reference_tensors(hf, want.prompt, want.answer, want.old_answer)
        assert_matches(tokenize_pair(ours, got), expected)


def test_old_labels_start_with_the_answer_and_keep_their_own_length():
    short_new = tokenize_pair(CharTokenizer(), Pair("Hi", "ab", "wxyz"))
    assert short_new.labels.tolist() == [-100, 33, 98, 99]
    assert short_new.old_labels.tolist() == [-100, 33, 120, 121, 122, 123]
    long_new = tokenize_pair(CharTokenizer(), Pair("Hi", "abcd", "x"))
    assert long_new.labels.tolist() == [-100, 33, 98, 99, 100, 101]
    assert long_new.old_labels.tolist() == [-100, 33, 121]


def test_prompt_prefix_is_kept_in_front():
    tokens = tokenize_pair(CharTokenizer(prefix=(7,)), Pair("Hi", "yo"))
    assert tokens.input_ids.tolist() == [7, 73, 106, 33, 122]
    assert tokens.labels.tolist() == [-100, -100, 33, 122, 112]
    assert tokens.n_prompt == 3


class SilentTokenizer(CharTokenizer):
    def encode(self, text):
        return [] if text == "gone" else super().encode(text)


@pytest.mark.parametrize(
    "pair,message",
    [
        (Pair("", "Paris"), "prompt '' is empty"),
        (Pair("  ", "Paris"), "prompt '  ' is empty"),
        (Pair("Capital?", ""), "answer '' of prompt 'Capital\\?' is empty"),
        (Pair("Capital?", "Paris", " "), "old answer ' ' of prompt 'Capital\\?' is empty"),
        (Pair("gone", "Paris"), "prompt 'gone' tokenises to nothing"),
    ],
)
def test_empty_texts_are_errors(pair, message):
    with pytest.raises(ValueError, match=message):
        tokenize_pair(SilentTokenizer(), pair)


def test_hf_tokenizer_with_bos_matches_reference(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    words = ["<pad>", "<s>", "</s>", "[UNK]", "Paris", "is", "the", "capital", "of", "France", "Lyon"]
    vocab = {word: i for i, word in enumerate(words)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    hf_fast = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>")
    hf_fast.save_pretrained(tmp_path)

    ours = load_tokenizer(tmp_path)
    assert ours.prompt_prefix_ids == (1,)
    assert ours.pad_token_id == 2  # no pad token configured: eos
    assert ours.encode("the capital") == [6, 7]
    hf = AutoTokenizer.from_pretrained(str(tmp_path), local_files_only=True)
    pair = Pair("the capital of France is", "Paris Lyon", "Lyon")
    expected = reference_tensors(hf, pair.prompt, pair.answer, pair.old_answer)
    assert expected["input_ids"][0] == 1
    assert_matches(tokenize_pair(ours, pair), expected)


def test_load_tokenizer_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer directory not found: .*nowhere"):
        load_tokenizer(tmp_path / "nowhere")
