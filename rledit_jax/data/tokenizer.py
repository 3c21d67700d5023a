"""The tokenizer interface the project uses, and loading one.

`encode` never adds special tokens. `prompt_prefix_ids` are the special tokens the reference's
`tok(prompt)` call puts in front of every prompt: empty for GPT-2/GPT-J and the built-in tiny
tokenizer, `(bos,)` for Llama/Mistral/Gemma tokenizers. `vocab_size` counts every id `encode` can
return (HF: `len(tokenizer)`, added tokens included); a model's embedding table may be larger.
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import transformers

from rledit_jax.data.tiny_tokenizer import TinyTokenizer


class Tokenizer(Protocol):
    vocab_size: int
    pad_token_id: int
    prompt_prefix_ids: tuple[int, ...]

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


class HFTokenizer:
    """A `transformers` tokenizer seen through the `Tokenizer` interface."""

    def __init__(self, tokenizer: transformers.PreTrainedTokenizerBase):
        self._tokenizer = tokenizer
        self.vocab_size = len(tokenizer)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad is None:
            raise ValueError(f"tokenizer {tokenizer.name_or_path!r} has neither a pad nor an eos token")
        self.pad_token_id = int(pad)
        self.prompt_prefix_ids = _prompt_prefix(tokenizer)

    def encode(self, text: str) -> list[int]:
        return list(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        return self._tokenizer.decode(list(ids), clean_up_tokenization_spaces=False)


def _prompt_prefix(tokenizer: transformers.PreTrainedTokenizerBase) -> tuple[int, ...]:
    probe = "The"
    plain = tokenizer(probe, add_special_tokens=False)["input_ids"]
    special = tokenizer(probe)["input_ids"]
    n_prefix = len(special) - len(plain)
    if n_prefix < 0 or special[n_prefix:] != plain:
        raise ValueError(
            f"tokenizer {tokenizer.name_or_path!r} adds special tokens after the text "
            f"({special} vs {plain}); only prefixes (BOS) are supported"
        )
    return tuple(int(i) for i in special[:n_prefix])


def load_tokenizer(path: str | Path | None) -> Tokenizer:
    """An HF tokenizer from a local model/tokenizer directory, or the built-in tiny one for None."""
    if path is None:
        return TinyTokenizer()
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"tokenizer directory not found: {path}")
    return HFTokenizer(transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True))
