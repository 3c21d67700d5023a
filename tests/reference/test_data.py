"""The reference's datasets (data/zsre.py, counterfact.py, fever.py: `tok_tuples`, `collate_fn`) vs our
loading, tokenisation and step batching, on shared data with the GPT-2 and the Llama-3 tokenizers.

Both sides read the same rows in the same step order: T = 6 steps of n_edits = 10 facts, micro-batches of
4 (so the last of each step is ragged, 2 facts). The reference's collated step is
`{kind_tuples: [micro-batch {input_ids, attention_mask, labels[, old_labels]}: [b, L_mb]]}`; ours is
`{kind: [T, M, B, L]}` with a fixed L. Token ids are compared exactly (no tolerance).

Padding differs on purpose and is not compared: the reference pads input_ids with 0, ours with the
tokenizer's pad id, so input_ids are compared only at real positions (attention_mask 1); ours pads
every micro-batch to one length L >= the reference's L_mb, where ours must hold mask 0 and label -100.
"""

import json

import numpy as np
import pytest

from tests.reference import ours, refkit

pytestmark = pytest.mark.reference

N_STEPS, N_EDITS, BATCH_SIZE = 6, 10, 4
KIND_KEYS = {kind: f"{kind}_tuples" for kind in ours.KINDS}
# The row lists the reference draws from with random.choice, and the kind each feeds.
LIST_KEYS = {"paraphrase_prompts": "equiv", "neighborhood_prompts": "unrel", "equiv_prompt": "equiv"}


@pytest.fixture(scope="module", params=sorted(refkit.TOKENIZERS))
def tokenizers(request, ref):
    path = refkit.TOKENIZERS[request.param]
    if not path.is_dir():
        pytest.skip(f"shared tokenizer not found at {path}")
    # The reference loads its tokenizer as make_loader does: AutoTokenizer.from_pretrained.
    return request.param, ref.base_data.AutoTokenizer.from_pretrained(str(path)), ours.load_tokenizer(path)


def zsre_rows():
    if not refkit.ZSRE_MEND.is_file():
        pytest.skip(f"shared zsRE file not found at {refkit.ZSRE_MEND}")
    return json.loads(refkit.ZSRE_MEND.read_text())


def counterfact_rows():
    if not refkit.COUNTERFACT_EASYEDIT.is_file():
        pytest.skip(f"shared CounterFact file not found at {refkit.COUNTERFACT_EASYEDIT}")
    return json.loads(refkit.COUNTERFACT_EASYEDIT.read_text())


def write(path, rows):
    path.write_text(json.dumps(rows))
    return path


def zsre_files(tmp_path):
    """Ours reads the shared MEND file itself; the reference its format (`ans` = MEND's `alt`), without the
    rows whose `alt` is empty (ours skips them as malformed)."""
    rows = zsre_rows()
    keep = [i for i, row in enumerate(rows) if row["alt"].strip()]
    converted = [
        {**{k: rows[i][k] for k in ("src", "rephrase", "loc", "loc_ans")}, "ans": rows[i]["alt"]} for i in keep
    ]
    return refkit.ZSRE_MEND, write(tmp_path / "zsre_reference.json", converted), keep


def counterfact_files(tmp_path):
    """A ROME-format file (what the reference reads) made from the shared EasyEdit rows (refkit.rome_rows)."""
    rome = refkit.rome_rows(counterfact_rows()[: N_STEPS * N_EDITS + 1])
    path = write(tmp_path / "counterfact_rome.json", rome)
    return path, path, list(range(len(rome)))


def fever_files(tmp_path):
    """FEVER rows in the reference's format, from the shared zsRE texts (no FEVER file is shared):
    two paraphrases per row (its own and the next row's)."""
    rows = [row for row in zsre_rows() if row["alt"].strip()][: N_STEPS * N_EDITS + 1]
    fever = [
        {
            "prompt": row["src"],
            "equiv_prompt": [row["rephrase"], nxt["rephrase"]],
            "unrel_prompt": row["loc"],
            "alt": row["alt"],
            "unrel_ans": row["loc_ans"],
        }
        for row, nxt in zip(rows, rows[1:])
    ]
    path = write(tmp_path / "fever.json", fever)
    return path, path, list(range(len(fever)))


DATASETS = {
    "zsre": (zsre_files, "zsre", "ZSREDataset"),
    "counterfact": (counterfact_files, "counterfact", "COUNTERFACTDataset"),
    "fever": (fever_files, "fever", "FEVERDataset"),
}


def same_draws(monkeypatch, ref_rows, facts):
    """The reference draws a paraphrase / neighbour with `random.choice`, ours with a per-row seeded
    generator; to compare tokens, the reference's `random.choice` returns our draw from the same row's list."""
    chosen = {}
    for row, fact in zip(ref_rows, facts):
        texts = ours.fact_texts(fact)
        for key, kind in LIST_KEYS.items():
            if key in row:
                pick = texts[kind][0]
                assert pick in row[key]
                assert chosen.setdefault(tuple(row[key]), pick) == pick
    monkeypatch.setattr("random.choice", lambda items: chosen[tuple(items)])


def assert_pair(ours_pair, ref_pair, what):
    ids = ref_pair["input_ids"][0].tolist()
    assert ours_pair["input_ids"].tolist() == ids, what
    assert ref_pair["attention_mask"][0].tolist() == [1] * len(ids), what
    labels = ours_pair["labels"].tolist()
    assert labels == ref_pair["labels"][0].tolist(), what
    if "old_labels" in ref_pair:
        assert ours_pair["old_labels"].tolist() == ref_pair["old_labels"][0].tolist(), what


def assert_micro_batch(ours_kind, t, m, ref_mb, what):
    real = ours_kind["fact_index"][t, m] >= 0
    n_rows, width = ref_mb["input_ids"].shape
    assert real.sum() == n_rows and real[:n_rows].all(), what
    field = lambda name: ours_kind[name][t, m][:n_rows]
    mask = ref_mb["attention_mask"].numpy()
    assert field("attention_mask").shape[1] >= width, what
    np.testing.assert_array_equal(field("attention_mask")[:, :width], mask, err_msg=what)
    np.testing.assert_array_equal(field("labels")[:, :width], ref_mb["labels"].numpy(), err_msg=what)
    assert not field("attention_mask")[:, width:].any() and (field("labels")[:, width:] == -100).all(), what
    # input_ids at real positions only: the padding ids differ on purpose (module docstring).
    np.testing.assert_array_equal(
        np.where(mask == 1, field("input_ids")[:, :width], 0), ref_mb["input_ids"].numpy() * mask, err_msg=what
    )
    if "old_labels" in ref_mb:
        # The reference pads old_labels with 0 (pad_tok_tuples pads every key but labels with 0) to their own
        # width; ours holds exactly that, cut at our width L, and -100 after it.
        ours_old, old = field("old_labels"), ref_mb["old_labels"].numpy()
        cut = min(ours_old.shape[1], old.shape[1])
        np.testing.assert_array_equal(ours_old[:, :cut], old[:, :cut], err_msg=what)
        assert (ours_old[:, cut:] == -100).all(), what


@pytest.mark.parametrize("dataset", sorted(DATASETS))
def test_tokenisation_and_collation(ref, tokenizers, dataset, tmp_path, monkeypatch):
    tok_name, ref_tok, our_tok = tokenizers
    make_files, name, class_name = DATASETS[dataset]
    ours_path, ref_path, ref_rows = make_files(tmp_path)
    facts, row_indices = ours.load_facts(name, ours_path)
    assert row_indices[: len(ref_rows)] == ref_rows[: len(row_indices)], "ours and the reference keep other rows"
    facts = facts[: N_STEPS * N_EDITS]
    dataset_class = getattr(getattr(ref, name), class_name)
    theirs = dataset_class(
        refkit.namespace(dict(batch_size=BATCH_SIZE, n_edits=N_EDITS)), str(ref_path), ref_tok, "cpu"
    )
    same_draws(monkeypatch, theirs.data, facts)

    for i, fact in enumerate(facts):
        items = theirs[i]
        for kind, (prompt, answer, old_answer) in ours.fact_texts(fact).items():
            pair = ours.tokenize_pair(our_tok, prompt, answer, old_answer)
            assert_pair(pair, items[KIND_KEYS[kind]], f"{dataset}/{tok_name} fact {i} {kind}")
    if tok_name == "llama3":
        assert items["edit_tuples"]["input_ids"][0, 0] == ref_tok.bos_token_id  # The prompt starts with BOS.

    steps = np.random.default_rng(0).permutation(len(facts)).reshape(N_STEPS, N_EDITS).tolist()
    batches = ours.step_batches(our_tok, facts, steps, batch_size=BATCH_SIZE)
    for t, step in enumerate(steps):
        collated = theirs.collate_fn([theirs[i] for i in step])
        for kind, key in KIND_KEYS.items():
            assert len(collated[key]) == batches[kind]["fact_index"].shape[1]
            for m, ref_mb in enumerate(collated[key]):
                assert_micro_batch(batches[kind], t, m, ref_mb, f"{dataset}/{tok_name} step {t} {kind} mb {m}")
    print(f"reference tokenisation+collation {dataset}/{tok_name}: {len(facts)} facts, {N_STEPS} steps, equal")
