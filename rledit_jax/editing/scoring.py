"""Seeing whether edits took: teacher-forced target probabilities and greedy continuations.

Both run on the model with the edit sites' kernels replaced by `kernels` (`None`: the unedited
model) and pad their inputs to fixed shapes (rows to a multiple of `rows`, lengths to powers of two),
so repeated calls reuse a few compiled programs.

- `target_log_probs`: per request, the sum over the target's tokens of log p(token | prompt, earlier
  target tokens) (teacher forcing) and the number of target tokens. `exp` of the sum is the
  probability of the whole target (the product of its tokens' probabilities).
- `greedy`: per prompt, `max_new_tokens` argmax tokens appended one at a time (a full forward per
  token, no KV cache: meant for short continuations).
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rledit_jax import models, probes
from rledit_jax.data.tokenization import IGNORE, TokenizedPair
from rledit_jax.editing.requests import bucket_length
from rledit_jax.jit import program


def _edited(llm_config, params, kernels):
    return params if kernels is None else models.set_sites(llm_config, params, kernels)


@program
def _target_log_probs(llm_config, params, kernels, input_ids, attention_mask, labels):
    logits = models.forward(llm_config, _edited(llm_config, params, kernels), input_ids, attention_mask)
    return jnp.sum(probes.label_log_probs(logits, labels)[0], axis=-1)


def _chunks(n: int, rows: int):
    return [range(i, min(n, i + rows)) for i in range(0, n, rows)]


def target_log_probs(
    llm_config, params, kernels, pairs: Sequence[TokenizedPair], *, pad_token_id: int, rows: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    """`(sum of target-token log-probs [n], target token counts [n])` for tokenised requests."""
    total = np.zeros(len(pairs), np.float64)
    counts = np.array([int(np.sum(p.labels != IGNORE)) for p in pairs])
    for chunk in _chunks(len(pairs), rows):
        length = bucket_length(max(len(pairs[i]) for i in chunk), llm_config.max_length)
        ids = np.full((rows, length), pad_token_id, np.int32)
        mask = np.zeros((rows, length), np.int32)
        labels = np.full((rows, length), IGNORE, np.int32)
        for r, i in enumerate(chunk):
            n = len(pairs[i])
            ids[r, :n], mask[r, :n], labels[r, :n] = pairs[i].input_ids, 1, pairs[i].labels
        out = np.asarray(_target_log_probs(llm_config, params, kernels, ids, mask, labels))
        total[list(chunk)] = out[: len(chunk)]
    return total, counts


@program
def _greedy(llm_config, params, kernels, input_ids, lengths, max_new_tokens):
    params = _edited(llm_config, params, kernels)
    rows, total = input_ids.shape
    positions = jnp.arange(total)
    row = jnp.arange(rows)

    def step(_, carry):
        ids, lens = carry
        logits = models.forward(llm_config, params, ids, (positions[None] < lens[:, None]).astype(jnp.int32))
        nxt = jnp.argmax(logits[row, lens - 1], axis=-1).astype(ids.dtype)
        room = lens < total
        ids = ids.at[row, jnp.minimum(lens, total - 1)].set(jnp.where(room, nxt, ids[row, total - 1]))
        return ids, jnp.where(room, lens + 1, lens)

    return jax.lax.fori_loop(0, max_new_tokens, step, (input_ids, lengths))


def greedy(
    llm_config,
    params,
    kernels,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    pad_token_id: int,
    rows: int = 16,
) -> list[list[int]]:
    """The greedy continuation (new tokens only) of each tokenised prompt.

    A continuation stops early only where the model's context ends.
    """
    out = []
    for chunk in _chunks(len(prompts), rows):
        longest = max(len(prompts[i]) for i in chunk)
        length = min(llm_config.max_length, bucket_length(longest + max_new_tokens, llm_config.max_length))
        ids = np.full((rows, length), pad_token_id, np.int32)
        lens = np.ones((rows,), np.int32)
        for r, i in enumerate(chunk):
            ids[r, : len(prompts[i])], lens[r] = prompts[i], len(prompts[i])
        new_ids, new_lens = (np.asarray(x) for x in _greedy(llm_config, params, kernels, ids, lens, max_new_tokens))
        for r, i in enumerate(chunk):
            out.append(new_ids[r, len(prompts[i]) : new_lens[r]].tolist())
    return out
