"""One (prompt, answer) pair -> the reference's token sequences.

With p = prompt_prefix_ids + encode(prompt) and a = encode(" " + answer) (all 1-D int32 arrays):

    input_ids  = p + a[:-1]                               length n = len(p) + len(a) - 1
    labels     = [-100] * (len(p) - 1) + a                length n
    old_labels = [-100] * (len(p) - 1) + o                length len(p) + len(o) - 1
                 with o = encode(" " + old_answer)

so position i predicts `labels[i]` (no further shift). `old_labels` is the reference's own row for the
competing answer (CounterFact): its tokens from the answer's first position on, as long as it is, so
it may be shorter or longer than `labels` (`data.batches` lays it out as the metric reads it); it is
None when the pair has no old answer.
"""

import dataclasses

import numpy as np

from rledit_jax.data.records import Pair
from rledit_jax.data.tokenizer import Tokenizer

IGNORE = -100


@dataclasses.dataclass(frozen=True)
class TokenizedPair:
    input_ids: np.ndarray
    labels: np.ndarray
    old_labels: np.ndarray | None
    n_prompt: int  # len(p): prompt tokens, prefix included

    def __len__(self) -> int:
        return len(self.input_ids)


def _encode(tokenizer: Tokenizer, text: str, described: str) -> list[int]:
    if not text.strip():
        raise ValueError(f"{described} is empty")
    ids = tokenizer.encode(text)
    if not ids:
        raise ValueError(f"{described} tokenises to nothing")
    return ids


def tokenize_pair(tokenizer: Tokenizer, pair: Pair) -> TokenizedPair:
    of_prompt = f"of prompt {pair.prompt!r}"
    prompt = list(tokenizer.prompt_prefix_ids) + _encode(tokenizer, pair.prompt, f"prompt {pair.prompt!r}")
    answer = _encode(tokenizer, " " + pair.answer, f"answer {pair.answer!r} {of_prompt}")
    head = [IGNORE] * (len(prompt) - 1)
    old_labels = None
    if pair.old_answer is not None:
        old = _encode(tokenizer, " " + pair.old_answer, f"old answer {pair.old_answer!r} {of_prompt}")
        old_labels = np.array(head + old, np.int32)
    return TokenizedPair(
        input_ids=np.array(prompt + answer[:-1], np.int32),
        labels=np.array(head + answer, np.int32),
        old_labels=old_labels,
        n_prompt=len(prompt),
    )


def left_truncate(pair: TokenizedPair, max_length: int, n_keep: int) -> TokenizedPair:
    """Drops prompt tokens right after the first `n_keep` (the prefix) until `len <= max_length`.

    The answer stays whole and at least one prompt token after the prefix is kept.
    """
    n_drop = len(pair) - max_length
    if n_drop <= 0:
        return pair
    n_droppable = pair.n_prompt - n_keep - 1
    if n_drop > n_droppable:
        raise ValueError(
            f"cannot cut {len(pair)} tokens to max_length {max_length}: with the answer whole and "
            f"one prompt token kept, the shortest is {len(pair) - n_droppable}"
        )
    cut = slice(n_keep, n_keep + n_drop)
    # labels[:n_prompt - 1] are all IGNORE, so dropping any n_drop of them shifts the rest left.
    return TokenizedPair(
        input_ids=np.delete(pair.input_ids, cut),
        labels=pair.labels[n_drop:],
        old_labels=None if pair.old_labels is None else pair.old_labels[n_drop:],
        n_prompt=pair.n_prompt - n_drop,
    )
