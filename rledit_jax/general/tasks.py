"""The eight general-ability tasks of the reference (RLEdit `glue_eval/*_eval.py`), zero-shot.

Each task is a record of one JSON file; its test `prompt` is the reference's `_create_prompt` question
(with no few-shot examples), `label` its gold answer as an int, `candidates` the suffixes whose
probabilities give the probability-based answer (`f1_new`), in the reference's order, with the label
each stands for, and `parse` the reference's `_get_answer` on a greedy generation. Answers are labels;
-1 is an invalid generation (or, for the probability-based answer, a tie with no single winner).
"""

import dataclasses
from collections.abc import Callable, Mapping

from rledit_jax.config_schema import GENERAL_TASKS


@dataclasses.dataclass(frozen=True)
class Task:
    name: str  # also the JSON file's stem in the data directory
    prompt: Callable[[Mapping], str]
    label: Callable[[Mapping], int]
    candidates: tuple[tuple[str, int], ...]  # (suffix, label), in the reference's order
    tie: int  # the probability-based answer when no candidate is strictly most probable
    # The generation's decoded text is parsed after its last `marker` (the text includes the prompt);
    # marker None: the decoded text with the prompt's decoded text removed (`str.replace`).
    marker: str | None
    keywords: tuple[tuple[str, int], ...]  # (substring of the lower-cased text, label), first match wins

    def parse(self, text: str, prompt_text: str) -> int:
        """The reference's `_get_answer` on a generation's decoded text (prompt included)."""
        answer = text.split(self.marker)[-1] if self.marker is not None else text.replace(prompt_text, "")
        # The reference strips `answer` first: no effect on a containment test of these keywords.
        lowered = answer.lower()
        return next((label for word, label in self.keywords if word in lowered), -1)

    def prob_answer(self, probs) -> int:
        """The label of the candidate strictly more probable than every other one, else `tie`."""
        for i, (_, label) in enumerate(self.candidates):
            if all(probs[i] > p for j, p in enumerate(probs) if j != i):
                return label
        return self.tie


def _label(r) -> int:
    return int(r["label"])


def _binary(name, prompt, yes, no, marker, *, label=_label, no_first=False) -> Task:
    """Candidates `yes` (label 1) and `no` (0); the parse looks for them lower-cased, `yes` first."""
    keywords = ((yes.lower(), 1), (no.lower(), 0))
    return Task(name, prompt, label, ((yes, 1), (no, 0)), 0, marker, keywords[::-1] if no_first else keywords)


def _four_way(name, prompt, label) -> Task:
    """Candidates " A" .. " D" (labels 0 .. 3); the answer is the first of "a\n" .. "d\n" in the continuation."""
    letters = tuple(zip("ABCD", range(4)))
    return Task(name, prompt, label, letters, -1, None, tuple((f"{c.lower()}\n", i) for c, i in letters))


def _options(gap: str, options) -> str:
    return "".join(f"({letter}){gap}{option}\n" for letter, option in zip("ABCD", options))


def _mmlu_prompt(r) -> str:  # mmlu_eval.py
    return f"Question: {r['question']}\n{_options(' ', r['choices'])}Answer:"


def _dialogue_prompt(r) -> str:  # dialogue_eval.py: no space after "(A)"
    return f"Q: Given the following: {r['article']}\nWhich choice is correct?\n{_options('', r['options'])}Answer:"


_SENTIMENT_PREFIX = (
    "For each snippet of text,label the sentiment of the text as positive or negative."
    "The answer should be exact 'positive' or 'negative'. text:"
)

TASKS = {
    task.name: task
    for task in (
        # sst_eval.py: no space after "Review :"
        _binary("sst2", lambda r: f"Review :{r['sentence']}\nSentiment :", "positive", "negative", "Sentiment :"),
        _binary(  # mrpc_eval.py
            "mrpc",
            lambda r: (
                "Are the sentences paraphrases of each other.\n"
                f"Sentence 1: {r['sentence1']}\nSentence 2: {r['sentence2']}\nAnswer:"
            ),
            "Yes",
            "No",
            "Answer:",
        ),
        _binary(  # cola_eval.py: the prompt ends with "Answer: " (a space)
            "cola",
            lambda r: f"Is this sentence linguistically acceptable?\nSentence: {r['sentence']}\nAnswer: ",
            "Yes",
            "No",
            "Answer:",
        ),
        _binary(  # rte_eval.py: "false" is looked for before "true"
            "rte",
            lambda r: f"{r['sentence1']}\nquestion: {r['sentence2']} True or False?\nanswer:",
            "True",
            "False",
            "answer:",
            no_first=True,
        ),
        _binary(  # nli_eval.py: label "entailment" is 1, anything else 0
            "nli",
            lambda r: f"{r['sentence1']} entails the {r['sentence2']} True or False? Answer:",
            "True",
            "False",
            "True or False? Answer:",
            label=lambda r: int(r["label"] == "entailment"),
        ),
        _four_way("mmlu", _mmlu_prompt, lambda r: int(r["answer"])),
        # sentiment_analysis_eval.py: labels are the strings "0" / "1"
        _binary(
            "sentiment_analysis",
            lambda r: f"{_SENTIMENT_PREFIX} {r['sentence']} answer:",
            "positive",
            "negative",
            "answer:",
        ),
        _four_way("dialogue", _dialogue_prompt, lambda r: "ABCD".index(r["answers"])),  # a letter "A" .. "D"
    )
}

ALL_TASKS = tuple(TASKS)
assert ALL_TASKS == GENERAL_TASKS, "config_schema.GENERAL_TASKS names these tasks for the config"
# The six RLEdit's `editor/base.py` evaluates (GLUEEval with sst, mmlu, mrpc, cola, rte and nli).
RLEDIT_TASKS = ("sst2", "mrpc", "cola", "rte", "nli", "mmlu")
