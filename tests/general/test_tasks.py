"""Each task's prompt and answer parse on constructed texts, against hand-derived answers (from the
reference's `_create_prompt` / `_get_answer`) and the torch oracle's re-implementation."""

import pytest

from rledit_jax.general import TASKS
from tests.oracle import torch_general as oracle

RECORDS = {
    "sst2": {"sentence": "a negative film", "label": 1},
    "mrpc": {"sentence1": "One.", "sentence2": "Two.", "label": 0},
    "cola": {"sentence": "Him went.", "label": 0},
    "rte": {"sentence1": "It is true.", "sentence2": "False.", "label": 1},
    "nli": {"sentence1": "A true claim", "sentence2": "a claim", "label": "entailment"},
    "mmlu": {"question": "Q?", "choices": ["a", "b", "c", "d"], "answer": 2},
    "sentiment_analysis": {"sentence": "fine .", "label": "0"},
    "dialogue": {"article": "m : hi .", "options": ["x", "y", "z", "w"], "answers": "D"},
}

PROMPTS = {
    "sst2": "Review :a negative film\nSentiment :",
    "mrpc": "Are the sentences paraphrases of each other.\nSentence 1: One.\nSentence 2: Two.\nAnswer:",
    "cola": "Is this sentence linguistically acceptable?\nSentence: Him went.\nAnswer: ",
    "rte": "It is true.\nquestion: False. True or False?\nanswer:",
    "nli": "A true claim entails the a claim True or False? Answer:",
    "mmlu": "Question: Q?\n(A) a\n(B) b\n(C) c\n(D) d\nAnswer:",
    "sentiment_analysis": "For each snippet of text,label the sentiment of the text as positive or negative."
    "The answer should be exact 'positive' or 'negative'. text: fine . answer:",
    "dialogue": "Q: Given the following: m : hi .\nWhich choice is correct?\n(A)x\n(B)y\n(C)z\n(D)w\nAnswer:",
}
LABELS = {"sst2": 1, "mrpc": 0, "cola": 0, "rte": 1, "nli": 1, "mmlu": 2, "sentiment_analysis": 0, "dialogue": 3}

# (task, continuation appended to the prompt, answer)
CASES = [
    ("sst2", " positive", 1),
    ("sst2", " Negative!", 0),
    ("sst2", " positive or negative", 1),  # "positive" is looked for first
    ("sst2", " meh", -1),  # the review's "negative" lies before the marker
    ("sst2", " positive\nSentiment : negative", 0),  # after the last marker
    ("mrpc", " Yes.", 1),
    ("mrpc", " Nothing", 0),  # any "no" substring
    ("mrpc", " I know", 0),
    ("mrpc", " maybe", -1),
    ("cola", " yes no", 1),
    ("cola", " ok", -1),
    ("rte", " True", 1),
    ("rte", " true or false", 0),  # "false" is looked for first
    ("rte", " Answer: maybe", -1),  # the marker is case-sensitive: still after "answer:"
    ("rte", " x answer: TRUE", 1),
    ("nli", " false", 0),
    ("nli", " true false", 1),
    ("nli", " maybe", -1),  # the premise's "true" lies before the marker
    ("mmlu", " B\n", 1),
    ("mmlu", " C", -1),  # no newline after the letter
    ("mmlu", " d\nb\n", 1),  # "b\n" is looked for before "d\n"
    ("mmlu", " idea\n", 0),  # any "a\n"
    ("sentiment_analysis", " negative", 0),
    ("sentiment_analysis", " none", -1),  # the instruction's words lie before the marker
    ("dialogue", " D\n\n", 3),
    ("dialogue", " (A)", -1),
]


@pytest.mark.parametrize("task", list(TASKS))
def test_prompt_and_label(task):
    assert TASKS[task].prompt(RECORDS[task]) == PROMPTS[task] == oracle.question(task, RECORDS[task])
    assert TASKS[task].label(RECORDS[task]) == LABELS[task] == oracle.gold(task, RECORDS[task])


@pytest.mark.parametrize("task, continuation, answer", CASES)
def test_parse(task, continuation, answer):
    prompt = PROMPTS[task]
    assert TASKS[task].parse(prompt + continuation, prompt) == answer
    assert oracle.get_answer(task, prompt + continuation, prompt) == answer


def test_every_task_has_parse_cases():
    assert {task for task, _, _ in CASES} == set(TASKS)


@pytest.mark.parametrize(
    "task, probs, answer",
    [
        ("sst2", [0.3, 0.2], 1),
        ("sst2", [0.2, 0.3], 0),
        ("sst2", [0.2, 0.2], 0),  # a tie counts as the second candidate ("negative")
        ("rte", [0.5, 0.1], 1),  # candidate 0 is "True"
        ("mmlu", [0.1, 0.4, 0.2, 0.3], 1),
        ("mmlu", [0.1, 0.4, 0.4, 0.3], -1),  # no single most probable letter
        ("dialogue", [0.1, 0.2, 0.3, 0.35], 3),
    ],
)
def test_probability_based_answer(task, probs, answer):
    assert [s for s, _ in TASKS[task].candidates] == oracle.suffixes(task)
    assert TASKS[task].prob_answer(probs) == answer == oracle.highest_probability_answer(probs)
