"""Generative scoring: the token F1 and exact match by hand, and `generative_scores` against HF torch greedy
decoding (`GenerationMixin.generate`, do_sample=False) on a tiny random GPT-J.

The model's head favours a few city words (a random one mostly emits byte tokens that decode to no
text), and half of the facts get as new answer the text the torch model itself decodes from their
prompt, so the exact match is neither all 0 nor all 1.
"""

import collections
import dataclasses

import pytest
import torch

from rledit_jax import data, models
from rledit_jax.generative import exact_match, generative_scores, token_f1
from rledit_jax.method.evaluation import SCORES
from tests.tiny_hf import make_gptj


def test_token_f1_by_hand():
    assert token_f1([5, 6, 7], [5, 6, 7]) == 1.0
    # One common token (6 once: the multiset overlap), precision 1/3, recall 1/2: F1 = 2 pr / (p + r) = 0.4.
    assert token_f1([6, 6, 9], [6, 8]) == pytest.approx(0.4)
    assert token_f1([4], [5]) == 0.0
    assert token_f1([], [5]) == 0.0


def test_exact_match_by_hand():
    tok = data.TinyTokenizer()
    assert exact_match(tok, tok.encode(" Paris"), tok.encode(" Paris")) == 1.0
    assert exact_match(tok, tok.encode("Paris"), tok.encode(" Paris")) == 1.0  # outer spaces do not count
    assert exact_match(tok, tok.encode(" Paris is"), tok.encode(" Paris")) == 0.0


def _torch_greedy(model, prompt, n_new):
    ids = torch.tensor([prompt])
    out = model.generate(
        input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n_new, do_sample=False, pad_token_id=0
    )
    return out[0, len(prompt) :].tolist()


def _f1(predicted, target):  # written again here from the formula
    common = sum(min(c, collections.Counter(target)[t]) for t, c in collections.Counter(predicted).items())
    return 0.0 if common == 0 else 2 * common / (len(predicted) + len(target))


def test_generative_scores_match_torch_greedy(tmp_path):
    torch_model = make_gptj(tmp_path / "m", seed=3, vocab_size=data.TINY_VOCAB_SIZE, n_embd=32, n_layer=2, n_head=4)
    tok = data.TinyTokenizer()
    with torch.no_grad():
        for word in (" Paris", " London", " Berlin", " French"):
            torch_model.lm_head.bias[tok.encode(word)] += 6.0
    torch_model.save_pretrained(tmp_path / "m")
    llm_config, params = models.load_hf(str(tmp_path / "m"))
    facts = data.make_synthetic_facts(8, seed=1)
    for i in range(0, 8, 2):  # the model's own continuation as the new answer of every other fact
        prompt = data.tokenize_pair(tok, facts[i].edit)
        said = tok.decode(_torch_greedy(torch_model, prompt.input_ids[: prompt.n_prompt].tolist(), 2)).strip()
        pairs = {k: dataclasses.replace(getattr(facts[i], k), answer=said) for k in ("edit", "equiv")}
        facts[i] = dataclasses.replace(facts[i], **pairs)
    indices = list(range(8))
    kernels = {s: models.get_site(llm_config, params, s) for s in ("transformer.h.1.mlp.fc_out",)}
    ours = generative_scores(llm_config, params, kernels, tok, facts, indices, truncate=False)
    for kind, name in SCORES.items():
        exact, f1 = [], []
        for i in indices:
            pair = data.tokenize_pair(tok, getattr(facts[i], kind))
            answer = pair.labels[pair.n_prompt - 1 :].tolist()
            new = _torch_greedy(torch_model, pair.input_ids[: pair.n_prompt].tolist(), len(answer))
            exact.append(tok.decode(new).strip() == tok.decode(answer).strip())
            f1.append(_f1(new, answer))
        assert ours[f"{name}_generated_exact"] == pytest.approx(sum(exact) / len(exact))
        assert ours[f"{name}_generated_f1"] == pytest.approx(sum(f1) / len(f1))
    assert 0 < ours["ES_generated_exact"] < 1
