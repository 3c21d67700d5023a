"""Deterministic zsRE-like facts about invented countries, for runs without downloaded data.

Every word is in the tiny tokenizer's vocabulary, so each answer is 1-3 tokens under it. A fact is
("The capital city of North Zorvia is", " Kelmar"), a paraphrase with the same answer, and an
unrelated everyday fact with its own answer.
"""

import dataclasses
import itertools

import numpy as np

from rledit_jax.data.records import Fact, Pair

_NAMES = (
    "Zorvia Kelmaria Aventis Brask Carnelia Dovaria Eskaland Feronia Galdor Halvania Ilmora Jastova "
    "Korrin Lumeria Marvosa Nerith Olvenia Pardova Quessa Rovania Sarketh Tolmara Ulvest Varnia "
    "Wendoria Xandria Yellin Zantor Borvia Cressa"
).split()
_QUALIFIERS = "North South East West Upper Lower Greater New".split()
_SUBJECTS = _NAMES + [f"{q} {n}" for q, n in itertools.product(_QUALIFIERS, _NAMES)]


@dataclasses.dataclass(frozen=True)
class _Relation:
    prompt: str  # "{}" stands for the subject
    paraphrase: str
    answers: tuple[str, ...]


_RELATIONS = (
    _Relation(
        "The capital city of {} is",
        "What is the capital of {}?",
        (
            "Kelmar",
            "Avel",
            "Doran",
            "Estel",
            "Farrow",
            "Gilden",
            "Harth",
            "Isker",
            "Joven",
            "Kastel",
            "Lorne",
            "Mirel",
            "Port Avel",
            "Port Lorne",
            "Saint Harth",
            "Fort Isker",
            "Kastel Haven",
            "Saint Doran Bay",
            "New Port Mirel",
        ),
    ),
    _Relation(
        "The official language of {} is",
        "Which language do people in {} speak?",
        (
            "Zorvish",
            "Kelmic",
            "Avendi",
            "Braskan",
            "Carnish",
            "Dovric",
            "Eskalic",
            "Ferran",
            "Galdic",
            "Halvan",
            "Upper Kelmic",
            "Lower Braskan",
        ),
    ),
    _Relation(
        "The currency used in {} is the",
        "What money is used in {}?",
        (
            "crown",
            "mark",
            "florin",
            "talon",
            "shell",
            "golden crown",
            "copper mark",
            "golden copper coin",
        ),
    ),
    _Relation(
        "The head of state of {} is",
        "Who leads {}?",
        (
            "Mara",
            "Orrin",
            "Mara Voss",
            "Tallis Wren",
            "Orrin Vale",
            "Edda Korr",
            "Senna Brand",
            "Ilse Darrow",
            "Tallis Wren Junior",
            "Edda Korr Elder",
        ),
    ),
    _Relation(
        "The region of {} is called",
        "In which region is {}?",
        (
            "Aldmere",
            "Brightmarch",
            "Coldreach",
            "Duskfall",
            "Emberlands",
            "Frostvale",
            "Greywater",
            "Highmoor",
            "Upper Duskfall",
            "Lower Greywater",
        ),
    ),
)

_UNRELATED = (
    ("The sun rises in the", "east"),
    ("The sun sets in the", "west"),
    ("The color of the sky is", "blue"),
    ("The color of grass is", "green"),
    ("Water freezes at zero degrees", "Celsius"),
    ("Two plus two equals", "four"),
    ("Three plus three equals", "six"),
    ("The opposite of hot is", "cold"),
    ("The opposite of big is", "small"),
    ("Bees make", "honey"),
    ("Cats are", "animals"),
    ("Snow is", "white"),
    ("Fish live in", "water"),
    ("Birds have two", "wings"),
    ("The capital of France is", "Paris"),
    ("The capital of Japan is", "Tokyo"),
    ("In Germany people speak", "German"),
    ("The currency of Japan is the", "yen"),
)

MAX_SYNTHETIC_FACTS: int = len(_SUBJECTS) * len(_RELATIONS)


def make_synthetic_facts(n: int, seed: int) -> list[Fact]:
    """`n` facts with distinct (subject, relation) pairs; the same `(n, seed)` gives the same facts."""
    if not 0 < n <= MAX_SYNTHETIC_FACTS:
        raise ValueError(f"n must be in [1, {MAX_SYNTHETIC_FACTS}] (distinct subject/relation pairs), got {n}")
    rng = np.random.default_rng(seed)
    facts = []
    for combo in rng.permutation(MAX_SYNTHETIC_FACTS)[:n]:
        subject = _SUBJECTS[combo // len(_RELATIONS)]
        relation = _RELATIONS[combo % len(_RELATIONS)]
        answer = relation.answers[rng.integers(len(relation.answers))]
        unrel_prompt, unrel_answer = _UNRELATED[rng.integers(len(_UNRELATED))]
        facts.append(
            Fact(
                edit=Pair(relation.prompt.format(subject), answer),
                equiv=Pair(relation.paraphrase.format(subject), answer),
                unrel=Pair(unrel_prompt, unrel_answer),
            )
        )
    return facts
