"""`general.evaluate` against the torch oracle (`tests/oracle/torch_general.py`) on a tiny random GPT-J.

The model has the GPT-2 tokenizer's vocabulary. A plain random one emits a single token whatever the
prompt, so its blocks and head are scaled up (the prompt matters) and the answer words get a logit
bias (a few generations parse to answers); its generation config stops at " negative", which some
generations emit before their last token, so stopping is exercised. Per task: identical generated
ids, decoded texts, parsed answers and probability-based answers, suffix probabilities within
float32 rounding, identical scores.
"""

import json

import numpy as np
import pytest
import torch
import transformers

from rledit_jax import general, models
from rledit_jax.data.tokenizer import load_tokenizer
from tests import margins
from tests.oracle import torch_general as oracle
from tests.paths import SHARED
from tests.tiny_hf import make_gptj

DATA = SHARED / "data" / "general"
TOKENIZER = SHARED / "tokenizers" / "gpt2"
N_PER_TASK = 4
GEN_LEN = 5

pytestmark = pytest.mark.skipif(
    not (DATA.is_dir() and TOKENIZER.is_dir()), reason=f"shared data not found at {DATA} / {TOKENIZER}"
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    path = tmp_path_factory.mktemp("general") / "gptj"
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(TOKENIZER))
    model = make_gptj(path, seed=0, vocab_size=len(hf_tok), n_positions=1024)
    words = [hf_tok.encode(w)[0] for w in (" Yes", " No", " positive", " negative", " True", " False", "\n")]
    words += [hf_tok.encode(f" {letter}")[0] for letter in "ABCD"]
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".h." in name and name.endswith("weight") and ".ln_" not in name:
                p.mul_(5)
        model.lm_head.weight.mul_(5)
        model.lm_head.bias.zero_()
        model.lm_head.bias[words] = 2.5 + 0.2 * torch.randn(len(words), generator=torch.Generator().manual_seed(0))
    stop = hf_tok.encode(" negative")[0]
    model.generation_config.eos_token_id = stop
    model.save_pretrained(path)

    expected, threads = {}, torch.get_num_threads()
    torch.set_num_threads(1)  # several threads are several times slower on a small shared machine
    try:
        for task in general.ALL_TASKS:
            tests = json.loads((DATA / f"{task}.json").read_text())[10 : 10 + N_PER_TASK]
            expected[task] = [oracle.run_example(model, hf_tok, task, ex, GEN_LEN) for ex in tests]
    finally:
        torch.set_num_threads(threads)
    config, params = models.load_hf(str(path))
    ours = general.evaluate(
        config,
        params,
        None,
        load_tokenizer(TOKENIZER),
        DATA,
        n_per_task=N_PER_TASK,
        gen_len=GEN_LEN,
        stop_ids=general.stop_ids_of(path),
        rows=4,
    )
    return ours, expected, stop


def test_some_generations_stop_early_and_some_parse(runs):
    ours, expected, stop = runs
    stopped = [r["new_ids"] for rs in expected.values() for r in rs if len(r["new_ids"]) < GEN_LEN]
    assert stopped and all(ids[-1] == stop for ids in stopped)
    for tasks in (("sst2", "mrpc", "cola", "rte", "nli", "sentiment_analysis"), ("mmlu", "dialogue")):
        assert any(r["answer"] != -1 for task in tasks for r in expected[task])
    assert [r["generated_ids"] for rs in ours.records.values() for r in rs if len(r["generated_ids"]) < GEN_LEN] == (
        stopped
    )


@pytest.mark.parametrize("task", general.ALL_TASKS)
def test_examples_match_the_oracle(runs, task):
    ours, expected, _ = runs
    rel = []
    for mine, ref in zip(ours.records[task], expected[task], strict=True):
        assert mine["generated_ids"] == ref["new_ids"]
        assert mine["prompt"] == ref["prompt_text"]
        assert mine["generated_text"] == ref["text"].replace(ref["prompt_text"], "")
        keys = ("label", "answer", "prob_answer")
        assert [mine[k] for k in keys] == [ref[k] for k in keys]
        probs = np.array(list(mine["probs"].values()))
        assert list(mine["probs"]) == oracle.suffixes(task)
        rel.append(np.max(np.abs(probs - ref["probs"]) / np.array(ref["probs"])))
    margins.check(f"{task}: suffix probabilities", max(rel), 2e-5)


@pytest.mark.parametrize("task", general.ALL_TASKS)
def test_scores_match_the_oracle(runs, task):
    ours, expected, _ = runs
    ref = expected[task]
    want = oracle.scores([r["label"] for r in ref], [r["answer"] for r in ref], [r["prob_answer"] for r in ref])
    assert ours.scores[task] == pytest.approx(want, abs=1e-12)
    assert set(ours.scores[task]) == set(want)
