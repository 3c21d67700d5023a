"""General ability of a (possibly edited) model: the reference's `GLUEEval(model, tok, number_of_tests=n)`.

Per test example of each task (`tasks.py`, zero-shot): greedy decoding of `gen_len` new tokens (the
reference's `evaluate(gen_len=5)`), stopping after a stop id, parsed into an answer; and the
probability of each candidate suffix, `exp(-mean token NLL)`, whose most probable candidate is the
probability-based answer. The examples of all tasks are sorted by length and run in chunks of `rows`
through `editing.scoring`'s padded programs, so a few compiled programs serve every task.

`Result.scores`: `{task: metrics.task_scores(...)}`. `Result.records`: `{task: [record]}` in test order,
JSON-ready, each `{"prompt", "label", "generated_ids" (new tokens), "generated_text" (the decoded text
with the prompt's removed), "answer", "correct", "probs" {suffix: probability}, "prob_answer",
"correct_new"}`.
"""

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import tqdm

from rledit_jax.data.tokenizer import Tokenizer
from rledit_jax.editing import scoring
from rledit_jax.general import data, encoding, metrics
from rledit_jax.general.stopping import cut_at_stop
from rledit_jax.general.tasks import ALL_TASKS, TASKS


@dataclasses.dataclass(frozen=True)
class Result:
    scores: dict[str, dict]
    records: dict[str, list[dict]]
    seconds: float


def _in_length_order(fn: Callable[[list], list], items: Sequence, rows: int, desc: str) -> list:
    """`fn` over chunks of `rows` items of similar length (longest first); results in `items`' order."""
    order = sorted(range(len(items)), key=lambda i: -len(items[i]))
    out = [None] * len(items)
    with tqdm.tqdm(total=len(items), desc=desc, unit="example") as bar:
        for start in range(0, len(order), rows):
            chunk = order[start : start + rows]
            for i, result in zip(chunk, fn([items[i] for i in chunk])):
                out[i] = result
            bar.update(len(chunk))
    return out


def _check_length(llm_config, n: int, what: str) -> None:
    if n > llm_config.max_length:
        raise ValueError(f"{what} needs {n} positions; the model has {llm_config.max_length}")


def evaluate(
    llm_config,
    params,
    kernels,
    tokenizer: Tokenizer,
    data_dir: str | Path,
    *,
    n_per_task: int = 100,
    tasks: Sequence[str] = ALL_TASKS,
    gen_len: int = 5,
    stop_ids: Sequence[int] = (),
    rows: int = 16,
) -> Result:
    """Scores and per-example records on the model with the sites' kernels replaced by `kernels`.

    `stop_ids`: where generation stops, as HF's does at its eos (`stopping.stop_ids_of(model_dir)`).
    `rows`: examples per compiled call; each holds `[rows, length, vocab]` float32 logits (length up to
    the next power of two above the longest prompt: 1024 for MMLU with the GPT-2 tokenizer).
    """
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown general-ability tasks {unknown}; known: {list(ALL_TASKS)}")
    start_time = time.time()
    tests = {name: data.load_tests(data_dir, name, n_per_task) for name in tasks}
    prompts, pairs = [], []  # over all tasks' examples: prompt ids; over examples x candidates: pairs
    for name in tasks:
        task = TASKS[name]
        for i, record in enumerate(tests[name]):
            prompt = task.prompt(record)
            prompts.append(encoding.prompt_ids(tokenizer, prompt))
            _check_length(llm_config, len(prompts[-1]) + gen_len, f"{name} test {i} with {gen_len} new tokens")
            for suffix, _ in task.candidates:
                pairs.append(encoding.candidate_pair(tokenizer, prompt, suffix))
                _check_length(llm_config, len(pairs[-1]), f"{name} test {i} with suffix {suffix!r}")

    pad = tokenizer.pad_token_id
    generated = _in_length_order(
        lambda chunk: scoring.greedy(
            llm_config, params, kernels, chunk, max_new_tokens=gen_len, pad_token_id=pad, rows=rows
        ),
        prompts,
        rows,
        "general: generate",
    )
    log_probs = _in_length_order(
        lambda chunk: zip(*scoring.target_log_probs(llm_config, params, kernels, chunk, pad_token_id=pad, rows=rows)),
        pairs,
        rows,
        "general: score suffixes",
    )

    scores, records = {}, {}
    n, p = 0, 0
    for name in tasks:
        task, records[name] = TASKS[name], []
        for record in tests[name]:
            new_ids = cut_at_stop(generated[n], stop_ids)
            prompt_text = encoding.decode(tokenizer, prompts[n])
            text = encoding.decode(tokenizer, prompts[n] + new_ids)
            answer, label = task.parse(text, prompt_text), task.label(record)
            probs = [math.exp(float(total) / count) for total, count in log_probs[p : p + len(task.candidates)]]
            prob_answer = task.prob_answer(probs)
            records[name].append(
                {
                    "prompt": prompt_text,
                    "label": label,
                    "generated_ids": new_ids,
                    "generated_text": text.replace(prompt_text, ""),
                    "answer": answer,
                    "correct": answer == label,
                    "probs": {suffix: q for (suffix, _), q in zip(task.candidates, probs)},
                    "prob_answer": prob_answer,
                    "correct_new": prob_answer == label,
                }
            )
            n, p = n + 1, p + len(task.candidates)
        rs = records[name]
        scores[name] = metrics.task_scores(
            [r["label"] for r in rs], [r["answer"] for r in rs], [r["prob_answer"] for r in rs]
        )
    return Result(scores=scores, records=records, seconds=time.time() - start_time)
