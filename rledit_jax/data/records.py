"""Editing facts as plain text, before tokenisation.

A `Fact` is one edit request with its three (prompt, answer) pairs:

- `edit`:  the prompt to edit and the new answer;
- `equiv`: a paraphrase of that prompt and the same new answer (generalisation);
- `unrel`: an unrelated prompt and its own answer (locality).

`Pair.old_answer` is set only for datasets with a competing answer (CounterFact): the true answer
for edit/equiv pairs, the new answer for the unrel pair. The CounterFact metric compares the logit
of `answer` against the logit of `old_answer`, token by token.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Pair:
    prompt: str
    answer: str
    old_answer: str | None = None


@dataclasses.dataclass(frozen=True)
class Fact:
    edit: Pair
    equiv: Pair
    unrel: Pair


@dataclasses.dataclass(frozen=True)
class LoadedFacts:
    """Facts read from one file.

    `row_indices[i]` is the file row `facts[i]` came from (they differ once rows are skipped);
    `skipped` holds one message per malformed row left out.
    """

    facts: list[Fact]
    row_indices: list[int]
    skipped: list[str]
