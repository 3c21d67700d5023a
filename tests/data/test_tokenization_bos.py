"""Reference tokenisation with the BOS tokenizers of the paper's models (Llama-3, Mistral v0.3).

Oracle: the reference's own calls on the real tokenizer files (`../shared/tokenizers`), loaded from
the directory with `AutoTokenizer`: prompt ids = `tok(prompt)` (special tokens, so BOS first),
answer ids = `tok(" " + answer, add_special_tokens=False)` (`reference_tensors`), plus the literal
ids that `tokenizers/SOURCES.md` lists for each folder. Mistral's SentencePiece handles the leading
space as its files' `legacy` setting says; nothing here assumes a setting.
"""

import numpy as np
import pytest
from transformers import AutoTokenizer

from rledit_jax.data import IGNORE, KINDS, Pair, build_step_batches, load_facts, load_tokenizer, tokenize_pair
from tests.data.test_tokenization import assert_matches, real_rows, reference_tensors
from tests.paths import SHARED

# Folder -> (BOS id, SOURCES.md's ids of "The capital of France is", of " Paris" without specials).
TOKENIZERS = {
    "llama3": (128000, [128000, 791, 6864, 315, 9822, 374], [12366]),
    "mistral-v0.3": (1, [1, 1183, 6333, 1070, 5611, 1117], [6233]),
}
PAIRS = [
    Pair("The capital of France is", "Paris", "Lyon"),
    Pair("Who is the spouse of Maria Luisa?", "Charles IV of Spain"),
    Pair("Léon Blum is a native speaker of", "Norwegian", "French"),
    Pair("nq question: who wrote hamlet?", "William Shakespeare"),
]


@pytest.fixture(scope="module", params=sorted(TOKENIZERS))
def tokenizers(request):
    path = SHARED / "tokenizers" / request.param
    if not path.is_dir():
        pytest.skip(f"shared tokenizer not found at {path}")
    hf = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    return request.param, hf, load_tokenizer(path)


def test_published_ids(tokenizers):
    name, _, ours = tokenizers
    bos, prompt, answer = TOKENIZERS[name]
    assert ours.prompt_prefix_ids == (bos,)
    tokens = tokenize_pair(ours, Pair("The capital of France is", "Paris"))
    assert tokens.input_ids.tolist() == prompt  # a one-token answer adds no input
    assert tokens.labels.tolist() == [IGNORE] * (len(prompt) - 1) + answer


@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: p.prompt[:12])
def test_pairs_match_the_reference_calls(tokenizers, pair):
    _, hf, ours = tokenizers
    bos = ours.prompt_prefix_ids[0]
    expected = reference_tensors(hf, pair.prompt, pair.answer, pair.old_answer)
    tokens = tokenize_pair(ours, pair)
    assert_matches(tokens, expected)
    ids, labels = tokens.input_ids.tolist(), tokens.labels.tolist()
    assert ids[0] == bos and ids.count(bos) == 1  # BOS first, never doubled
    # The first label sits on the last prompt token (position n_prompt - 1 predicts the answer's first).
    answer = hf(" " + pair.answer, add_special_tokens=False)["input_ids"]
    assert tokens.n_prompt == len(hf(pair.prompt)["input_ids"])
    assert labels[: tokens.n_prompt - 1] == [IGNORE] * (tokens.n_prompt - 1)
    assert labels[tokens.n_prompt - 1 :] == answer and ids[tokens.n_prompt :] == answer[:-1]


def test_real_zsre_and_counterfact_rows(tokenizers):
    _, hf, ours = tokenizers
    zsre = load_facts("zsre", SHARED / "data" / "zsre" / "zsre_eval.json").facts
    for i, row in real_rows("zsre/zsre_eval.json", 5):
        assert_matches(tokenize_pair(ours, zsre[i].edit), reference_tensors(hf, row["src"], row["alt"]))
        assert_matches(tokenize_pair(ours, zsre[i].unrel), reference_tensors(hf, row["loc"] + "?", row["loc_ans"]))
    counterfact = load_facts("counterfact", SHARED / "data" / "counterfact" / "counterfact.json").facts
    for i, row in real_rows("counterfact/counterfact.json", 5):
        expected = reference_tensors(hf, row["prompt"], row["target_new"], row["ground_truth"])
        assert_matches(tokenize_pair(ours, counterfact[i].edit), expected)


def test_step_batch_pads_after_the_answer_and_truncation_keeps_bos(tokenizers):
    _, hf, ours = tokenizers
    facts = [load_facts("zsre", SHARED / "data" / "zsre" / "zsre_eval.json").facts[i] for i in range(2)]
    batches = build_step_batches(ours, facts, [[0, 1]], batch_size=2, max_length=64)
    edit = batches.edit
    for row in range(2):
        fact = facts[int(edit.fact_index[0, 0, row])]
        expected = reference_tensors(hf, fact.edit.prompt, fact.edit.answer)
        n = len(expected["input_ids"])
        assert edit.input_ids[0, 0, row, :n].tolist() == expected["input_ids"]
        assert (edit.input_ids[0, 0, row, n:] == ours.pad_token_id).all()
        assert edit.attention_mask[0, 0, row].tolist() == [1] * n + [0] * (edit.input_ids.shape[-1] - n)

    longest = max(len(tokenize_pair(ours, getattr(f, kind))) for f in facts for kind in KINDS)
    cut = build_step_batches(ours, facts, [[0, 1]], batch_size=2, max_length=longest - 2, truncate=True)
    assert sum(getattr(cut, kind).n_truncated for kind in KINDS) >= 1
    bos = ours.prompt_prefix_ids[0]
    for kind in KINDS:
        batch = getattr(cut, kind)
        for row in range(2):
            ids = np.asarray(batch.input_ids[0, 0, row])[np.asarray(batch.attention_mask[0, 0, row]) == 1].tolist()
            assert ids[0] == bos and ids.count(bos) == 1
