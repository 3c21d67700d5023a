"""Torch oracle of the reference's general-ability evaluation (RLEdit `glue_eval/*_eval.py`), zero-shot.

Written from the reference's semantics, on an HF torch causal LM and an HF tokenizer through their
public API only, one example at a time as the reference runs them:

- prompt: the reference's `_create_prompt` question (no few-shot examples);
- generation: `model.generate(tokenizer.encode(prompt), max_length=len + gen_len, do_sample=False)`,
  decoded with `skip_special_tokens=True`, parsed by the task's `_get_answer`;
- suffix probabilities: `tokenizer(prompt + " " + suffix)` through the model, the suffix tokens
  `tokenizer(" " + suffix)` read at `prefix_tok_len + j - 1`, with the reference's Llama special case
  (`llama=True`: BOS dropped from the suffix tokens, logits shifted by one, prefix length minus one);
- scores: counts, weighted F1 from per-class precision and recall, MCC as the correlation of one-hot
  label and answer matrices (scikit-learn's definitions, written out another way than ours).
"""

import math

import numpy as np
import torch

SENTIMENT = (
    "For each snippet of text,label the sentiment of the text as positive or negative."
    "The answer should be exact 'positive' or 'negative'. text:"
)


def question(task, ex):
    """The reference's zero-shot input prompt."""
    if task == "sst2":
        return "Review :" + ex["sentence"] + "\nSentiment :"
    if task == "mrpc":
        body = "Sentence 1: " + ex["sentence1"] + "\n" + "Sentence 2: " + ex["sentence2"] + "\n"
        return "Are the sentences paraphrases of each other.\n" + body + "Answer:"
    if task == "cola":
        return "Is this sentence linguistically acceptable?\n" + "Sentence: " + ex["sentence"] + "\n" + "Answer: "
    if task == "rte":
        return ex["sentence1"] + "\n" + "question: " + ex["sentence2"] + " True or False?" + "\n" + "answer:"
    if task == "nli":
        return ex["sentence1"] + " entails the " + ex["sentence2"] + " " + "True or False? Answer:"
    if task == "mmlu":
        c = ex["choices"]
        lines = "(A) " + c[0] + "\n" + "(B) " + c[1] + "\n" + "(C) " + c[2] + "\n" + "(D) " + c[3] + "\n"
        return "Question: " + ex["question"] + "\n" + lines + "Answer:"
    if task == "sentiment_analysis":
        return SENTIMENT + " " + ex["sentence"] + " " + "answer:"
    if task == "dialogue":
        o = ex["options"]
        lines = "(A)" + o[0] + "\n" + "(B)" + o[1] + "\n" + "(C)" + o[2] + "\n" + "(D)" + o[3] + "\n"
        return "Q: Given the following: " + ex["article"] + "\nWhich choice is correct?\n" + lines + "Answer:"
    raise KeyError(task)


def gold(task, ex):
    if task == "nli":
        return 1 if ex["label"] == "entailment" else 0
    if task == "mmlu":
        return ex["answer"]
    if task == "dialogue":
        return {"A": 0, "B": 1, "C": 2, "D": 3}[ex["answers"]]
    return int(ex["label"])


def _letter(text):
    low = text.lower()
    for label, line in enumerate(("a\n", "b\n", "c\n", "d\n")):
        if line in low:
            return label
    return -1


def get_answer(task, generated_text, input_prompt_text):
    """The reference's `_get_answer` (MMLU and dialogue see the text with the prompt text replaced away)."""
    if task in ("mmlu", "dialogue"):
        return _letter(generated_text.replace(input_prompt_text, ""))
    split_on = {
        "sst2": "Sentiment :",
        "mrpc": "Answer:",
        "cola": "Answer:",
        "rte": "answer:",
        "nli": "True or False? Answer:",
        "sentiment_analysis": "answer:",
    }[task]
    text = generated_text.split(split_on)[-1].strip().strip().lower()
    if task in ("sst2", "sentiment_analysis"):
        return 1 if "positive" in text else 0 if "negative" in text else -1
    if task in ("mrpc", "cola"):
        return 1 if "yes" in text else 0 if "no" in text else -1
    if task == "rte":
        return 0 if "false" in text else 1 if "true" in text else -1
    return 1 if "true" in text else 0 if "false" in text else -1  # nli


def suffixes(task):
    return {
        "sst2": ["positive", "negative"],
        "sentiment_analysis": ["positive", "negative"],
        "mrpc": ["Yes", "No"],
        "cola": ["Yes", "No"],
        "rte": ["True", "False"],
        "nli": ["True", "False"],
        "mmlu": ["A", "B", "C", "D"],
        "dialogue": ["A", "B", "C", "D"],
    }[task]


def highest_probability_answer(probs):
    """Binary: 1 when the first suffix is more probable, else 0; four-way: the unique maximum, else -1."""
    if len(probs) == 2:
        return 1 if probs[0] > probs[1] else 0
    for i in range(4):
        if probs[i] > max(probs[:i] + probs[i + 1 :]):
            return i
    return -1


def suffix_scoring(tokenizer, prompt, suffix, llama):
    """`(input ids of prompt + " " + suffix, [(index into the model's unshifted logits, token)])`."""
    tok = tokenizer(f" {suffix}")["input_ids"]
    prefix_tok_len = len(tokenizer(prompt)["input_ids"])
    if llama:
        tok, prefix_tok_len = tok[1:], prefix_tok_len - 1
    shift = 1 if llama else 0  # the reference's logits[:, 1:]
    reads = [(prefix_tok_len + j - 1 + shift, t) for j, t in enumerate(tok)]
    return tokenizer(f"{prompt} {suffix}")["input_ids"], reads


def run_example(model, tokenizer, task, ex, gen_len, llama=False):
    prompt = question(task, ex)
    ids = tokenizer.encode(prompt, return_tensors="pt")
    with torch.no_grad():
        mask = torch.ones_like(ids)
        out = model.generate(ids, attention_mask=mask, max_length=ids.shape[1] + gen_len, do_sample=False)
    text = tokenizer.decode(out[0], skip_special_tokens=True)
    prompt_text = tokenizer.decode(ids[0], skip_special_tokens=True)
    probs = []
    for suffix in suffixes(task):
        full, reads = suffix_scoring(tokenizer, prompt, suffix, llama)
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([full])).logits[0]
        nll = sum(-torch.log_softmax(logits[i], dim=0)[t].item() for i, t in reads) / len(reads)
        probs.append(math.exp(-nll))
    return {
        "new_ids": out[0, ids.shape[1] :].tolist(),
        "text": text,
        "prompt_text": prompt_text,
        "answer": get_answer(task, text, prompt_text),
        "label": gold(task, ex),
        "probs": probs,
        "prob_answer": highest_probability_answer(probs),
    }


def weighted_f1(labels, answers):
    classes = sorted(set(labels) | set(answers))
    total = 0.0
    for c in classes:
        tp = sum(1 for y, a in zip(labels, answers) if y == c and a == c)
        predicted, actual = answers.count(c), labels.count(c)
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        total += actual * f1
    return total / len(labels)


def mcc(labels, answers):
    classes = sorted(set(labels) | set(answers))
    x = np.array([[y == c for c in classes] for y in labels], np.float64)
    y = np.array([[a == c for c in classes] for a in answers], np.float64)
    x, y = x - x.mean(0), y - y.mean(0)
    denominator = math.sqrt(np.sum(x * x) * np.sum(y * y))
    return float(np.sum(x * y) / denominator) if denominator else 0.0


def scores(labels, answers, prob_answers):
    valid = [a != -1 for a in answers]
    return {
        "correct": sum(v and a == y for v, a, y in zip(valid, answers, labels)),
        "incorrect": sum(v and a != y for v, a, y in zip(valid, answers, labels)),
        "invalid": valid.count(False),
        "total": len(labels),
        "accuracy": sum(a == y for a, y in zip(answers, labels)) / len(labels),
        "f1": weighted_f1(labels, answers),
        "mcc": mcc(labels, answers),
        "correct_new": sum(a == y for a, y in zip(prob_answers, labels)),
        "incorrect_new": sum(a != y for a, y in zip(prob_answers, labels)),
        "f1_new": weighted_f1(labels, prob_answers),
    }
