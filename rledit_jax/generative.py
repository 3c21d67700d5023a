"""Generative scoring of edited facts, next to the teacher-forced one (`method.evaluation`).

Per fact and kind (edit / equiv / unrel), from the same token sequences as the teacher-forced rows
(`data.tokenization`: prompt p, answer a), greedy decoding of len(a) new tokens from p
(`editing.scoring.greedy`), then:

  exact  1 if the decoded continuation equals the decoded answer (both stripped of outer spaces)
  f1     token-level F1 of the continuation's ids against a's ids (multiset overlap, SQuAD-style)

`generative_scores` returns the means over the facts: `{ES, GS, LS}_generated_{exact, f1}`.
"""

import collections
from collections.abc import Sequence

import tqdm

from rledit_jax.data import batches as data_batches
from rledit_jax.data.records import Fact
from rledit_jax.data.tokenizer import Tokenizer
from rledit_jax.editing import scoring
from rledit_jax.method.evaluation import SCORES


def token_f1(predicted: Sequence[int], target: Sequence[int]) -> float:
    common = sum((collections.Counter(predicted) & collections.Counter(target)).values())
    if not common:
        return 0.0
    precision, recall = common / len(predicted), common / len(target)
    return 2 * precision * recall / (precision + recall)


def exact_match(tokenizer: Tokenizer, predicted: Sequence[int], target: Sequence[int]) -> float:
    return float(tokenizer.decode(list(predicted)).strip() == tokenizer.decode(list(target)).strip())


def _prompt_and_answer(tokens):
    """`(p, a)` of a tokenised pair: `input_ids = p + a[:-1]`, `labels[len(p) - 1:] = a`."""
    return tokens.input_ids[: tokens.n_prompt].tolist(), tokens.labels[tokens.n_prompt - 1 :].tolist()


def generative_scores(
    llm_config, params, kernels, tokenizer: Tokenizer, facts: list[Fact], indices: Sequence[int], *, truncate: bool
) -> dict[str, float]:
    """Means over the facts `indices` of `facts`, on the model with the sites' kernels `kernels`."""
    tokenized = {}
    for kind in SCORES:
        pairs, _ = data_batches.tokenize_kind(tokenizer, facts, set(indices), kind, llm_config.max_length, truncate)
        tokenized[kind] = [_prompt_and_answer(pairs[i]) for i in indices]
    # Decoding is causal, so the first len(a) tokens of a longer greedy continuation are the greedy
    # len(a) tokens: one decode length serves every answer (one compiled program per prompt bucket).
    n_new = max(len(a) for pairs in tokenized.values() for _, a in pairs)
    out = {}
    for kind, name in tqdm.tqdm(SCORES.items(), desc="generative scoring", unit="kind"):
        generated = scoring.greedy(
            llm_config,
            params,
            kernels,
            [p for p, _ in tokenized[kind]],
            max_new_tokens=n_new,
            pad_token_id=tokenizer.pad_token_id,
        )
        answers = [a for _, a in tokenized[kind]]
        cut = [new[: len(a)] for new, a in zip(generated, answers)]
        out[f"{name}_generated_exact"] = sum(map(exact_match, [tokenizer] * len(cut), cut, answers)) / len(cut)
        out[f"{name}_generated_f1"] = sum(map(token_f1, cut, answers)) / len(cut)
    return out
