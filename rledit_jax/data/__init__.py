"""Editing data: text facts -> reference token sequences -> fixed-shape step batches."""

from rledit_jax.data.batches import KINDS, KindBatch, StepBatches, build_step_batches
from rledit_jax.data.loaders import load_facts
from rledit_jax.data.records import Fact, LoadedFacts, Pair
from rledit_jax.data.stream import draw_stream, load_stream_file, validate_stream
from rledit_jax.data.synthetic import MAX_SYNTHETIC_FACTS, make_synthetic_facts
from rledit_jax.data.tiny_tokenizer import TINY_VOCAB_SIZE, TinyTokenizer
from rledit_jax.data.tokenization import IGNORE, TokenizedPair, left_truncate, tokenize_pair
from rledit_jax.data.tokenizer import HFTokenizer, Tokenizer, load_tokenizer

__all__ = [
    "IGNORE",
    "KINDS",
    "MAX_SYNTHETIC_FACTS",
    "TINY_VOCAB_SIZE",
    "Fact",
    "HFTokenizer",
    "KindBatch",
    "LoadedFacts",
    "Pair",
    "StepBatches",
    "TinyTokenizer",
    "TokenizedPair",
    "Tokenizer",
    "build_step_batches",
    "draw_stream",
    "left_truncate",
    "load_facts",
    "load_stream_file",
    "load_tokenizer",
    "make_synthetic_facts",
    "tokenize_pair",
    "validate_stream",
]
