"""Prompt, candidate-suffix and decoding tokenisation against the reference's own `AutoTokenizer` calls.

The expected tokens come from `tests/oracle/torch_general.suffix_scoring`, which makes the reference's
calls (`tokenizer(text)`, special tokens included; the Llama branch drops the BOS from the suffix
tokens and shifts the logits) on the first test example of every task, for the GPT-2 tokenizer (no
BOS) and the Llama-3 one (BOS).
"""

import json

import numpy as np
import pytest
import transformers

from rledit_jax.data.tokenization import IGNORE
from rledit_jax.data.tokenizer import load_tokenizer
from rledit_jax.general import TASKS, encoding
from tests.oracle import torch_general as oracle
from tests.paths import SHARED

DATA = SHARED / "data" / "general"
TOKENIZERS = {"gpt2": False, "llama3": True}  # name -> the reference's Llama branch


def _tokenizers(name):
    path = SHARED / "tokenizers" / name
    if not (path.is_dir() and DATA.is_dir()):
        pytest.skip(f"shared tokenizer or data not found at {path} / {DATA}")
    return load_tokenizer(path), transformers.AutoTokenizer.from_pretrained(str(path))


def _prompts():
    for task in TASKS:
        yield task, json.loads((DATA / f"{task}.json").read_text())[10]


@pytest.mark.parametrize("name", TOKENIZERS)
def test_prompt_and_suffix_tokens_match_the_reference_calls(name):
    ours, hf = _tokenizers(name)
    for task, example in _prompts():
        prompt = oracle.question(task, example)
        assert encoding.prompt_ids(ours, prompt) == hf.encode(prompt)
        for suffix in oracle.suffixes(task):
            full, reads = oracle.suffix_scoring(hf, prompt, suffix, llama=TOKENIZERS[name])
            pair = encoding.candidate_pair(ours, prompt, suffix)
            assert pair.input_ids.tolist() == full
            scored = np.flatnonzero(pair.labels != IGNORE)
            assert [(int(i), int(pair.labels[i])) for i in scored] == reads, (task, suffix)


def test_llama3_reads_the_suffix_after_the_bos_prompt():
    ours, hf = _tokenizers("llama3")
    prompt = oracle.question("cola", json.loads((DATA / "cola.json").read_text())[10])
    pair = encoding.candidate_pair(ours, prompt, "Yes")
    assert pair.input_ids[0] == hf.bos_token_id
    # The logit at the prompt's last token (BOS counted) predicts " Yes" (no BOS among the targets).
    assert np.flatnonzero(pair.labels != IGNORE).tolist() == [len(hf(prompt)["input_ids"]) - 1]
    assert pair.labels[pair.labels != IGNORE].tolist() == hf(" Yes", add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("name", TOKENIZERS)
def test_decode_skips_special_tokens_as_the_reference(name):
    ours, hf = _tokenizers(name)
    ids = hf.encode("Review :fine\nSentiment :") + hf.encode(" positive", add_special_tokens=False)
    ids += [hf.eos_token_id] + hf.encode(" more", add_special_tokens=False)
    assert encoding.decode(ours, ids) == hf.decode(ids, skip_special_tokens=True)
