"""The eight general-ability tasks of the reference (RLEdit `glue_eval/*_eval.py`), zero-shot.

Each task is a record of one JSON file; its test `prompt` is the reference's `_create_prompt` question
(with no few-shot examples), `label` its gold answer as an int, `candidates` the suffixes whose
probabilities give the probability-based answer (`f1_new`), in the reference's order, with the label
each stands for, and `parse` the reference's `_get_answer` on a greedy generation. Answers are labels;
-1 is an invalid generation (or, for the probability-based answer, a tie with no single winner).
"""

import dataclasses
from collections.abc import Callable, Mapping


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


def _binary(yes: str, no: str) -> tuple[tuple[str, int], ...]:
    return ((yes, 1), (no, 0))


_CHOICES = (("A", 0), ("B", 1), ("C", 2), ("D", 3))
_CHOICE_LINES = (("a\n", 0), ("b\n", 1), ("c\n", 2), ("d\n", 3))
_SENTIMENT_PREFIX = (
    "For each snippet of text,label the sentiment of the text as positive or negative."
    "The answer should be exact 'positive' or 'negative'. text:"
)


def _mmlu_prompt(r):  # mmlu_eval.py
    options = "".join(f"({letter}) {choice}\n" for letter, choice in zip("ABCD", r["choices"]))
    return f"Question: {r['question']}\n{options}Answer:"


def _dialogue_prompt(r):  # dialogue_eval.py: no space after "(A)"
    options = "".join(f"({letter}){option}\n" for letter, option in zip("ABCD", r["options"]))
    return f"Q: Given the following: {r['article']}\nWhich choice is correct?\n{options}Answer:"


TASKS = {
    task.name: task
    for task in (
        Task(  # sst_eval.py: no space after "Review :"
            name="sst2",
            prompt=lambda r: f"Review :{r['sentence']}\nSentiment :",
            label=lambda r: int(r["label"]),
            candidates=_binary("positive", "negative"),
            tie=0,
            marker="Sentiment :",
            keywords=(("positive", 1), ("negative", 0)),
        ),
        Task(  # mrpc_eval.py
            name="mrpc",
            prompt=lambda r: (
                "Are the sentences paraphrases of each other.\n"
                f"Sentence 1: {r['sentence1']}\nSentence 2: {r['sentence2']}\nAnswer:"
            ),
            label=lambda r: int(r["label"]),
            candidates=_binary("Yes", "No"),
            tie=0,
            marker="Answer:",
            keywords=(("yes", 1), ("no", 0)),
        ),
        Task(  # cola_eval.py: the prompt ends with "Answer: " (a space)
            name="cola",
            prompt=lambda r: f"Is this sentence linguistically acceptable?\nSentence: {r['sentence']}\nAnswer: ",
            label=lambda r: int(r["label"]),
            candidates=_binary("Yes", "No"),
            tie=0,
            marker="Answer:",
            keywords=(("yes", 1), ("no", 0)),
        ),
        Task(  # rte_eval.py: "false" is looked for before "true"
            name="rte",
            prompt=lambda r: f"{r['sentence1']}\nquestion: {r['sentence2']} True or False?\nanswer:",
            label=lambda r: int(r["label"]),
            candidates=_binary("True", "False"),
            tie=0,
            marker="answer:",
            keywords=(("false", 0), ("true", 1)),
        ),
        Task(  # nli_eval.py: label "entailment" is 1, anything else 0
            name="nli",
            prompt=lambda r: f"{r['sentence1']} entails the {r['sentence2']} True or False? Answer:",
            label=lambda r: int(r["label"] == "entailment"),
            candidates=_binary("True", "False"),
            tie=0,
            marker="True or False? Answer:",
            keywords=(("true", 1), ("false", 0)),
        ),
        Task(  # mmlu_eval.py: the answer is the first of "a\n" .. "d\n" in the continuation
            name="mmlu",
            prompt=_mmlu_prompt,
            label=lambda r: int(r["answer"]),
            candidates=_CHOICES,
            tie=-1,
            marker=None,
            keywords=_CHOICE_LINES,
        ),
        Task(  # sentiment_analysis_eval.py: labels are the strings "0" / "1"
            name="sentiment_analysis",
            prompt=lambda r: f"{_SENTIMENT_PREFIX} {r['sentence']} answer:",
            label=lambda r: int(r["label"]),
            candidates=_binary("positive", "negative"),
            tie=0,
            marker="answer:",
            keywords=(("positive", 1), ("negative", 0)),
        ),
        Task(  # dialogue_eval.py: the answer is a letter "A" .. "D"
            name="dialogue",
            prompt=_dialogue_prompt,
            label=lambda r: "ABCD".index(r["answers"]),
            candidates=_CHOICES,
            tie=-1,
            marker=None,
            keywords=_CHOICE_LINES,
        ),
    )
}

ALL_TASKS = tuple(TASKS)
# The six RLEdit's `editor/base.py` evaluates (GLUEEval with sst, mmlu, mrpc, cola, rte and nli).
RLEDIT_TASKS = ("sst2", "mrpc", "cola", "rte", "nli", "mmlu")
