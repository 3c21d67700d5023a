"""Tokenising the reference's general-ability inputs through the project's `Tokenizer` interface.

The reference calls `tokenizer(text)`, which puts the tokenizer's special prefix (`prompt_prefix_ids`:
BOS for Llama-like tokenizers, nothing for GPT-2-like ones) in front of the text:

- generation input: `prefix + encode(prompt)`;
- a candidate suffix `s` is scored on `prefix + encode(prompt + " " + s)`: the mean over `j` of
  -log p(`encode(" " + s)[j]`) read at position `len(prefix + encode(prompt)) + j - 1`. For Llama the
  reference drops the BOS from the suffix tokens, shifts the logits by one and subtracts one from the
  prompt length, which reads the same positions; the positions are those of the prompt's own
  tokenisation even where the joined text tokenises differently at the seam, as in the reference.
  The reference takes its Llama branch only for models named "llama"; with another BOS tokenizer
  (Mistral, Gemma) it would score the BOS as a suffix token. Here every BOS tokenizer is scored as
  Llama's (a deliberate difference).
- decoded text: `tokenizer.decode(ids, skip_special_tokens=True)`; the special ids dropped here are the
  prefix and `pad_token_id` (the eos where a tokenizer has no pad): all of GPT-2's and Llama-3's.
"""

from collections.abc import Sequence

import numpy as np

from rledit_jax.data.tokenization import IGNORE, TokenizedPair
from rledit_jax.data.tokenizer import Tokenizer


def prompt_ids(tokenizer: Tokenizer, prompt: str) -> list[int]:
    return list(tokenizer.prompt_prefix_ids) + tokenizer.encode(prompt)


def candidate_pair(tokenizer: Tokenizer, prompt: str, suffix: str) -> TokenizedPair:
    """`input_ids` of prompt + " " + suffix with `labels` the suffix tokens at the positions scoring them."""
    ids = prompt_ids(tokenizer, f"{prompt} {suffix}")
    targets = tokenizer.encode(f" {suffix}")
    start = len(prompt_ids(tokenizer, prompt)) - 1
    if start + len(targets) > len(ids):
        raise ValueError(f"suffix {suffix!r} of prompt {prompt[-40:]!r} runs past its joined tokenisation")
    labels = np.full(len(ids), IGNORE, np.int32)
    labels[start : start + len(targets)] = targets
    return TokenizedPair(np.asarray(ids, np.int32), labels, None, start + 1)


def decode(tokenizer: Tokenizer, ids: Sequence[int]) -> str:
    special = {*tokenizer.prompt_prefix_ids, tokenizer.pad_token_id}
    return tokenizer.decode([i for i in ids if i not in special])
