"""load_facts on files written here in every supported format, and on malformed rows."""

import json
from pathlib import Path

import pytest

from rledit_jax.data import Fact, Pair, load_facts
from tests.paths import SHARED

ZSRE_MEND = {
    "subject": "Maria Luisa of Spain",
    "src": "What is Maria Luisa of Spain's spouse's name?",
    "pred": "Henry IV of Spain",
    "rephrase": "What's the name of Maria Luisa of Spain's spouse?",
    "alt": "Charles IV of Spain",
    "answers": ["Leopold II, Holy Roman Emperor"],
    "loc": "nq question: oldest recording of house of the rising sun",
    "loc_ans": "Clarence Ashley and Gwen Foster",
    "cond": "Henry IV of Spain >> Charles IV of Spain || What is Maria Luisa of Spain's spouse's name?",
}
ZSRE_MEND_FACT = Fact(
    edit=Pair("What is Maria Luisa of Spain's spouse's name?", "Charles IV of Spain"),
    equiv=Pair("What's the name of Maria Luisa of Spain's spouse?", "Charles IV of Spain"),
    unrel=Pair("nq question: oldest recording of house of the rising sun?", "Clarence Ashley and Gwen Foster"),
)
ZSRE_REFERENCE = {
    "src": "Which team does Achmad Rifai play for?",
    "rephrase": "In which team does Achmad Rifai play?",
    "ans": "Persib Bandung",
    "alt": "not the answer when 'ans' is present",
    "loc": "nq question: who sings the song i can only imagine",
    "loc_ans": "MercyMe",
}
ZSRE_REFERENCE_FACT = Fact(
    edit=Pair("Which team does Achmad Rifai play for?", "Persib Bandung"),
    equiv=Pair("In which team does Achmad Rifai play?", "Persib Bandung"),
    unrel=Pair("nq question: who sings the song i can only imagine?", "MercyMe"),
)
COUNTERFACT_EASYEDIT = {
    "case_id": 0,
    "prompt": "The mother tongue of Danielle Darrieux is",
    "target_new": "English",
    "subject": "Danielle Darrieux",
    "ground_truth": "French",
    "rephrase_prompt": "Where Danielle Darrieux is from, people speak the language of",
    "locality_prompt": "Michel Rocard is a native speaker of",
    "locality_ground_truth": "French",
}
COUNTERFACT_EASYEDIT_FACT = Fact(
    edit=Pair("The mother tongue of Danielle Darrieux is", "English", "French"),
    equiv=Pair("Where Danielle Darrieux is from, people speak the language of", "English", "French"),
    unrel=Pair("Michel Rocard is a native speaker of", "French", "English"),
)
PARAPHRASES = [f"Paraphrase number {i} about Danielle Darrieux:" for i in range(10)]
NEIGHBOURS = [f"Neighbour number {i} speaks" for i in range(10)]
COUNTERFACT_ROME = {
    "case_id": 0,
    "requested_rewrite": {
        "prompt": "The mother tongue of {} is",
        "relation_id": "P103",
        "target_new": {"str": "English", "id": "Q1860"},
        "target_true": {"str": "French", "id": "Q150"},
        "subject": "Danielle Darrieux",
    },
    "paraphrase_prompts": PARAPHRASES,
    "neighborhood_prompts": NEIGHBOURS,
    "attribute_prompts": ["J. R. R. Tolkien is a native speaker of"],
    "generation_prompts": ["Danielle Darrieux's mother tongue is"],
}
EQUIV_PROMPTS = [f"Is it true that claim {i} holds?" for i in range(10)]
FEVER = {
    "prompt": "Is it true that Nikolaj Coster-Waldau worked with the Fox Broadcasting Company?",
    "equiv_prompt": EQUIV_PROMPTS,
    "unrel_prompt": "Is it true that Roman Atwood is a content creator?",
    "alt": "No",
    "unrel_ans": "Yes",
}


def write(path: Path, rows: list) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    else:
        path.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "name,row,expected",
    [
        ("zsre", ZSRE_MEND, ZSRE_MEND_FACT),
        ("zsre", ZSRE_REFERENCE, ZSRE_REFERENCE_FACT),
        ("counterfact", COUNTERFACT_EASYEDIT, COUNTERFACT_EASYEDIT_FACT),
    ],
)
@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_fixed_formats(tmp_path, name, row, expected, suffix):
    loaded = load_facts(name, write(tmp_path / f"data{suffix}", [row, row]))
    assert loaded.facts == [expected, expected]
    assert loaded.row_indices == [0, 1]
    assert loaded.skipped == []


def test_counterfact_rome_format(tmp_path):
    rows = [COUNTERFACT_ROME] * 30
    facts = load_facts("counterfact", write(tmp_path / "cf.json", rows), seed=3).facts
    for fact in facts:
        assert fact.edit == Pair("The mother tongue of Danielle Darrieux is", "English", "French")
        assert fact.equiv.prompt in PARAPHRASES
        assert (fact.equiv.answer, fact.equiv.old_answer) == ("English", "French")
        assert fact.unrel.prompt in NEIGHBOURS
        assert (fact.unrel.answer, fact.unrel.old_answer) == ("French", "English")
    # 30 rows drawing from 10 items each: a seeded choice per row, not one shared draw.
    assert len({f.equiv.prompt for f in facts}) > 1
    assert len({f.unrel.prompt for f in facts}) > 1


def test_fever_format(tmp_path):
    facts = load_facts("fever", write(tmp_path / "fever.jsonl", [FEVER] * 30)).facts
    for fact in facts:
        assert fact.edit == Pair(FEVER["prompt"], "No")
        assert fact.equiv.prompt in EQUIV_PROMPTS and fact.equiv.answer == "No"
        assert fact.unrel == Pair(FEVER["unrel_prompt"], "Yes")
    assert len({f.equiv.prompt for f in facts}) > 1


def test_seeded_choice_depends_on_seed_and_own_row_only(tmp_path):
    path = write(tmp_path / "fever.json", [FEVER] * 20)
    first = [f.equiv.prompt for f in load_facts("fever", path, seed=7).facts]
    assert first == [f.equiv.prompt for f in load_facts("fever", path, seed=7).facts]
    assert first != [f.equiv.prompt for f in load_facts("fever", path, seed=8).facts]
    # Changing other rows (their contents and list lengths) leaves row 5's draw alone.
    other = dict(FEVER, equiv_prompt=EQUIV_PROMPTS[:3], prompt="Something else?")
    rows = [other] * 5 + [FEVER] + [other] * 3
    mixed = load_facts("fever", write(tmp_path / "mixed.json", rows), seed=7).facts
    assert mixed[5].equiv.prompt == first[5]


def without(row: dict, key: str) -> dict:
    return {k: v for k, v in row.items() if k != key}


REWRITE = COUNTERFACT_ROME["requested_rewrite"]


def rome_rewrite(rewrite: dict) -> dict:
    return dict(COUNTERFACT_ROME, requested_rewrite=rewrite)


@pytest.mark.parametrize(
    "name,bad_row,message",
    [
        ("zsre", without(ZSRE_MEND, "loc_ans"), "key 'loc_ans' is missing"),
        (
            "zsre",
            without(ZSRE_MEND, "alt"),
            "key 'ans' (reference format) or 'alt' (MEND format) is missing",
        ),
        ("zsre", dict(ZSRE_MEND, alt=""), "key 'alt' is an empty string"),
        ("zsre", dict(ZSRE_MEND, src="   "), "key 'src' is an empty string"),
        ("zsre", dict(ZSRE_MEND, rephrase=17), "key 'rephrase' should be a string, got int"),
        ("zsre", ["not", "an", "object"], "expected a JSON object, got list"),
        ("counterfact", without(COUNTERFACT_EASYEDIT, "ground_truth"), "key 'ground_truth' is missing"),
        (
            "counterfact",
            rome_rewrite(without(REWRITE, "target_true")),
            "key 'requested_rewrite.target_true' is missing",
        ),
        (
            "counterfact",
            rome_rewrite(dict(REWRITE, target_new="English")),
            "key 'requested_rewrite.target_new' should be an object, got str",
        ),
        (
            "counterfact",
            rome_rewrite(dict(REWRITE, prompt="No slot")),
            "key 'requested_rewrite.prompt' should hold exactly one '{}' for the subject",
        ),
        (
            "counterfact",
            dict(COUNTERFACT_ROME, paraphrase_prompts=[]),
            "key 'paraphrase_prompts' is an empty list",
        ),
        (
            "counterfact",
            dict(COUNTERFACT_ROME, neighborhood_prompts="one prompt"),
            "key 'neighborhood_prompts' should be a list, got str",
        ),
        (
            "fever",
            dict(FEVER, equiv_prompt=["fine", None]),
            "key 'equiv_prompt' item 1 should be a string, got NoneType",
        ),
        ("fever", dict(FEVER, equiv_prompt=["fine", ""]), "key 'equiv_prompt' item 1 is an empty string"),
    ],
)
def test_malformed_rows(tmp_path, name, bad_row, message):
    good = {"zsre": ZSRE_MEND, "counterfact": COUNTERFACT_ROME, "fever": FEVER}[name]
    path = write(tmp_path / "data.json", [good, good, bad_row, good])
    with pytest.raises(ValueError) as raised:
        load_facts(name, path)
    assert (
        str(raised.value) == f"{path} row 2: {message} (--config.data.skip_malformed=True skips and counts such rows)"
    )

    loaded = load_facts(name, path, skip_malformed=True)
    assert len(loaded.facts) == 3
    assert loaded.row_indices == [0, 1, 3]
    assert loaded.skipped == [f"{path} row 2: {message}"]


def test_skip_counts_every_bad_row(tmp_path):
    rows = [ZSRE_MEND, without(ZSRE_MEND, "src"), dict(ZSRE_MEND, loc=[]), ZSRE_MEND, dict(ZSRE_MEND, loc_ans="")]
    loaded = load_facts("zsre", write(tmp_path / "z.jsonl", rows), skip_malformed=True)
    assert loaded.facts == [ZSRE_MEND_FACT, ZSRE_MEND_FACT]
    assert loaded.row_indices == [0, 3]
    assert [m.split(": ", 1)[0].rsplit(" ", 1)[1] for m in loaded.skipped] == ["1", "2", "4"]


def test_file_level_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'wiki'"):
        load_facts("wiki", tmp_path / "x.json")
    with pytest.raises(FileNotFoundError, match="zsre data file not found: .*missing.json"):
        load_facts("zsre", tmp_path / "missing.json")
    with pytest.raises(ValueError, match="holds no records"):
        load_facts("zsre", write(tmp_path / "empty.json", []))
    (tmp_path / "object.json").write_text(json.dumps({"data": [ZSRE_MEND]}))
    with pytest.raises(ValueError, match="expected a JSON list of records, got a JSON dict"):
        load_facts("zsre", tmp_path / "object.json")
    (tmp_path / "lines.json").write_text(json.dumps(ZSRE_MEND) + "\n" + json.dumps(ZSRE_MEND) + "\n")
    with pytest.raises(ValueError, match=r"invalid JSON .*must be named \*\.jsonl"):
        load_facts("zsre", tmp_path / "lines.json")
    (tmp_path / "broken.jsonl").write_text(json.dumps(ZSRE_MEND) + "\n\n{oops\n")
    with pytest.raises(ValueError, match="broken.jsonl line 3: invalid JSON"):
        load_facts("zsre", tmp_path / "broken.jsonl")


def test_real_zsre_file_has_rows_with_empty_alt():
    path = SHARED / "data" / "zsre" / "zsre_train.json"
    if not path.is_file():
        pytest.skip(f"shared data not found at {path}")
    rows = json.loads(path.read_text(encoding="utf-8"))
    empty = [i for i, row in enumerate(rows) if not row["alt"].strip()]
    assert empty  # the file really has such rows (SOURCES.md data, checked by hand: 166, 271, ...)
    with pytest.raises(ValueError, match=rf"zsre_train.json row {empty[0]}: key 'alt' is an empty string"):
        load_facts("zsre", path)
    loaded = load_facts("zsre", path, skip_malformed=True)
    assert len(loaded.facts) == len(rows) - len(empty)
    assert len(loaded.skipped) == len(empty)
    kept = [i for i in range(len(rows)) if i not in empty]
    assert loaded.row_indices == kept
    row = rows[kept[-1]]
    assert loaded.facts[-1] == Fact(
        Pair(row["src"], row["alt"]),
        Pair(row["rephrase"], row["alt"]),
        Pair(row["loc"] + "?", row["loc_ans"]),
    )
