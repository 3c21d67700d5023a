"""The editing library: the jitted edit against the project's edit step, history, rollback, compiles.

Oracles: `editor.edit_step.edit_step` and `editor.evaluation.edit_sequence` (the edit the evaluation
loop runs) for the edit itself; float64 numpy for shifts and their norms; the logits and normaliser
statistics recorded before a batch for rollback.
"""

import inspect

import jax
import numpy as np
import pytest

from rledit_jax import data, editing, models
from rledit_jax.editing import requests as req
from rledit_jax.editing import state as st
from rledit_jax.editor import edit_step as es
from rledit_jax.editor import evaluation, training
from tests.config_files import load_config


def tiny_config():
    config = load_config("tiny")
    config.data.n_edits = 4
    config.data.batch_size = 3  # Ragged: micro-batches of 3 and 1 rows.
    return config


def random_editor_nets(layout, config, seed=0, lr=0.1):
    """Hypernetworks with random B (so the net is not the identity) and a visible step size."""
    nets = training.init_nets(jax.random.PRNGKey(seed), layout, training.EditorHParams.from_config(config.editor))
    rng = np.random.default_rng(seed)
    for net in nets.values():
        for block in net["blocks"]:
            block["B"] = 0.01 * rng.standard_normal(block["B"].shape).astype(np.float32)
        net["lr"] = np.full(net["lr"].shape, lr, np.float32)
    return nets, training.init_norms(layout)


@pytest.fixture(scope="module")
def editor():
    return editing.Editor.from_config(tiny_config())


@pytest.fixture(scope="module")
def hyper(editor):
    return random_editor_nets(editor.layout, tiny_config())


def requests(n, seed=0):
    return [{"prompt": f.edit.prompt, "target_new": f.edit.answer} for f in data.make_synthetic_facts(n, seed)]


REQUESTS = requests(16)
# Prompt + target of 7 to 9 tokens each: every batch pads to L = 16.
BATCH_A, BATCH_B, BATCH_C = REQUESTS[0:4], REQUESTS[8:12], REQUESTS[12:15]
BATCH_D = [REQUESTS[i] for i in (1, 2, 3, 11)]


def probe_inputs(vocab, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, (3, 16)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, 10:] = 0
    return ids, mask


def logits_of(editor, state):
    ids, mask = probe_inputs(editor.llm_config.vocab_size)
    params = editor.params if state is None else editor.edited_params(state)
    return np.asarray(models.forward(editor.llm_config, params, ids, mask))


def dense(k, c):
    return np.asarray(k, np.float64).T @ np.asarray(c, np.float64)


edit_step_jit = jax.jit(es.edit_step, static_argnums=(0, 1, 2))


def test_edit_equals_edit_step(editor, hyper):
    nets, norms = hyper
    state = editor.init_state(nets, norms, capacity=4)
    batch = editor.make_batch(BATCH_A)
    new, record = editor.edit(state, batch)
    ref_kernels, ref_norms, ref_factors = edit_step_jit(
        editor.llm_config, editor.layout, "ans", editor.params, nets, state.kernels, norms, batch
    )

    answer = (np.asarray(batch.labels) != data.IGNORE).reshape(-1)
    assert record.n_rows == answer.sum() > 0 and record.batch_id == 0
    for shape in norms:
        for field in ("n", "mean", "m2", "std"):
            np.testing.assert_allclose(
                getattr(new.norms[shape], field), getattr(ref_norms[shape], field), rtol=1e-6, atol=0
            )
    for site in editor.layout.names:
        k_ref, c_ref = (np.asarray(x) for x in ref_factors[site])
        k, c = np.asarray(new.k_hist[site][0]), np.asarray(new.c_hist[site][0])
        # The stored factors are the edit step's rows at the answer positions, in order, zero-padded.
        np.testing.assert_allclose(k[: answer.sum()], k_ref[answer], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(c[: answer.sum()], c_ref[answer], rtol=1e-6, atol=1e-9)
        assert not k[answer.sum() :].any() and not c[answer.sum() :].any()
        assert not k_ref[~answer].any()  # ... and the rows left out contribute nothing.
        shift_ref = dense(k_ref, c_ref)
        scale = np.abs(shift_ref).max()
        assert scale > 1e-3  # a real shift, not a trivial one
        np.testing.assert_allclose(dense(k, c), shift_ref, rtol=0, atol=1e-6 * scale)
        np.testing.assert_allclose(new.kernels[site], ref_kernels[site], rtol=0, atol=1e-6 * scale)
        assert record.shift_norms[site] == pytest.approx(np.linalg.norm(shift_ref), rel=1e-5)


def test_sequence_equals_evaluation_loop(editor, hyper):
    nets, norms = hyper
    state = editor.init_state(nets, norms, capacity=4)
    batches = [editor.make_batch(b) for b in (BATCH_A, BATCH_B)]
    for batch in batches:
        state, _ = editor.edit(state, batch)
    stacked = jax.tree.map(lambda *x: jax.numpy.stack(x), *batches)
    # The evaluation loop, every row kept (answer_rows=None, where that option exists).
    extra = {"answer_rows": None} if "answer_rows" in inspect.signature(evaluation.edit_sequence).parameters else {}
    ref_kernels, ref_norms, ref_factors = evaluation.edit_sequence(
        editor.llm_config,
        editor.layout,
        "ans",
        params=editor.params,
        nets=nets,
        norms=norms,
        batches=type("StepBatches", (), {"edit": stacked}),
        **extra,
    )
    for site in editor.layout.names:
        scale = np.abs(np.asarray(ref_kernels[site]) - np.asarray(state.base[site])).max()
        np.testing.assert_allclose(state.kernels[site], ref_kernels[site], rtol=0, atol=1e-5 * scale)
        for t in range(2):
            ref = dense(ref_factors[site][0][t], ref_factors[site][1][t])
            np.testing.assert_allclose(
                dense(state.k_hist[site][t], state.c_hist[site][t]), ref, rtol=0, atol=1e-5 * np.abs(ref).max()
            )
    for shape in norms:
        np.testing.assert_allclose(state.norms[shape].mean, ref_norms[shape].mean, rtol=1e-5, atol=1e-7)
        assert float(state.norms[shape].n) == float(ref_norms[shape].n)


def test_no_recompilation_for_repeated_shapes(editor, hyper):
    nets, norms = hyper
    state = editor.init_state(nets, norms, capacity=2)
    batches = [editor.make_batch(b) for b in (BATCH_A, BATCH_B, BATCH_C, BATCH_D)]
    assert len({b.input_ids.shape for b in batches}) == 1  # 3 or 4 requests, one padded shape
    state, _ = editor.edit(state, batches[0])
    sizes = (st.edit_batch._cache_size(), st.rollback._cache_size())
    for batch in batches[1:]:  # ... the third edit also commits the oldest batch (capacity 2)
        state, _ = editor.edit(state, batch)
    state = editor.rollback(state, 1)
    after_first_rollback = st.rollback._cache_size()
    state = editor.rollback(state, 1)
    state, _ = editor.edit(state, batches[0])
    assert st.edit_batch._cache_size() == sizes[0]
    assert st.rollback._cache_size() == after_first_rollback <= sizes[1] + 1


def test_rollback_restores_logits_and_norms_exactly(editor, hyper):
    nets, norms = hyper
    s0 = editor.init_state(nets, norms, capacity=4)
    s1, r1 = editor.edit(s0, BATCH_A)
    s2, r2 = editor.edit(s1, BATCH_B)
    base, after1, after2 = logits_of(editor, None), logits_of(editor, s1), logits_of(editor, s2)
    assert np.abs(after2 - after1).max() > 1e-3 and np.abs(after1 - base).max() > 1e-3
    assert [r.batch_id for r in editor.history(s2)] == [0, 1]
    assert editor.history(s2) == [r1, r2]

    back1 = editor.rollback(s2, 1)
    np.testing.assert_array_equal(logits_of(editor, back1), after1)
    jax.tree.map(np.testing.assert_array_equal, back1.norms, s1.norms)
    assert [r.batch_id for r in editor.history(back1)] == [0]

    back2 = editor.rollback(s2, 2)
    np.testing.assert_array_equal(logits_of(editor, back2), base)
    jax.tree.map(np.testing.assert_array_equal, back2.norms, norms)
    assert editor.history(back2) == []
    with pytest.raises(ValueError, match="can roll back 1..0 batches, not 1"):
        editor.rollback(back2, 1)

    # Editing after a rollback continues from the restored state with a fresh id.
    again, record = editor.edit(back1, BATCH_B)
    assert record.batch_id == 2 and [r.batch_id for r in editor.history(again)] == [0, 2]
    np.testing.assert_array_equal(logits_of(editor, again), after2)


def test_full_history_commits_the_oldest_batch(editor, hyper):
    nets, norms = hyper
    small, big = editor.init_state(nets, norms, capacity=2), editor.init_state(nets, norms, capacity=4)
    for batch in (BATCH_A, BATCH_B, BATCH_C):
        small, _ = editor.edit(small, batch)
        big, _ = editor.edit(big, batch)
        if batch is BATCH_A:
            after_a = logits_of(editor, small)
    jax.tree.map(np.testing.assert_array_equal, small.kernels, big.kernels)
    assert [r.batch_id for r in editor.history(small)] == [1, 2] and int(small.n_committed) == 1
    np.testing.assert_array_equal(logits_of(editor, editor.rollback(small, 2)), after_a)
    with pytest.raises(ValueError, match="1 older batches were committed"):
        editor.rollback(small, 3)


def test_shift_norms_from_factors(editor, hyper):
    nets, norms = hyper
    state, record = editor.edit(editor.init_state(nets, norms, capacity=2), BATCH_C)
    for _i, site in enumerate(editor.layout.names):
        k, c = (np.asarray(x) for x in editing.state.batch_factors(state, record.batch_id)[site])
        expected = np.linalg.norm(dense(k, c))
        assert record.shift_norms[site] == pytest.approx(expected, rel=1e-5)
        assert float(st.shift_sq_norm(k, c)) == pytest.approx(expected**2, rel=1e-5)


def test_non_finite_shift_is_not_applied(editor):
    nets, norms = random_editor_nets(editor.layout, tiny_config(), lr=3e38)
    state = editor.init_state(nets, norms, capacity=2)
    with pytest.raises(editing.NonFiniteShiftError, match="non-finite shift") as info:
        editor.edit(state, BATCH_A)
    jax.tree.map(np.testing.assert_array_equal, info.value.state.kernels, state.kernels)
    jax.tree.map(np.testing.assert_array_equal, info.value.state.norms, state.norms)
    assert int(info.value.state.count) == 0 and int(info.value.state.next_id) == 0


def test_batch_layout_and_limits(editor, hyper):
    nets, norms = hyper
    batch = editor.make_batch(BATCH_C)
    assert batch.input_ids.shape == (2, 3, 16)  # ceil(4 / 3) micro-batches of 3 rows, L bucketed
    lengths = batch.attention_mask.sum(-1).reshape(-1)
    real = batch.request_index.reshape(-1) >= 0
    assert list(lengths[real]) == sorted(lengths[real], reverse=True) and real.sum() == 3
    tok = editor.tokenizer
    for row, index in zip(batch.input_ids.reshape(-1, 16)[real], batch.request_index.reshape(-1)[real]):
        r = BATCH_C[index]
        expected = tok.encode(r["prompt"]) + tok.encode(" " + r["target_new"])[:-1]
        assert row[: len(expected)].tolist() == expected
        assert (row[len(expected) :] == tok.pad_token_id).all()

    pre = [data.tokenize_pair(tok, data.Pair(r["prompt"], r["target_new"])) for r in BATCH_C]
    as_dicts = [{"input_ids": p.input_ids, "labels": p.labels} for p in pre]
    for other in (editor.make_batch(pre), editor.make_batch(as_dicts)):
        jax.tree.map(np.testing.assert_array_equal, other, batch)

    with pytest.raises(req.RequestError, match="5 requests, more than one batch of max_requests=4"):
        editor.make_batch(REQUESTS[:5])
    with pytest.raises(req.RequestError, match="more than the state's max_rows=2"):
        editor.edit(editor.init_state(nets, norms, capacity=1, max_rows=2), BATCH_A)
    with pytest.raises(req.RequestError, match="longer than the model's context of 128"):
        editor.make_batch([{"prompt": "the " * 130, "target_new": "Paris"}])


class NothingForSpaces:
    """A tokenizer that drops everything but letters, so some targets tokenise to nothing."""

    vocab_size, pad_token_id, prompt_prefix_ids = 300, 0, ()

    def encode(self, text):
        return [ord(ch) for ch in text if ch.isalpha()]

    def decode(self, ids):
        return "".join(map(chr, ids))


def test_target_that_tokenises_to_nothing():
    with pytest.raises(
        req.RequestError, match=r"edits.jsonl:7: answer '\?\?' of prompt 'Cats are' tokenises to nothing"
    ):
        req.tokenize_request(NothingForSpaces(), req.Request("Cats are", "??", where="edits.jsonl:7"), 128)
