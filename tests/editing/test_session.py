"""The editing library: the jitted edit against the project's edit step, history, rollback, compiles.

Oracles: `method.edit_step.edit_step` and `method.evaluation.edit_sequence` (the edit the evaluation
loop runs) for the edit itself; float64 numpy for shifts and their norms; the logits and normaliser
statistics recorded before a batch for rollback.
"""

import jax
import numpy as np
import pytest

from rledit_jax import data, editing, models
from rledit_jax.editing import requests as req
from rledit_jax.editing import state as st
from rledit_jax.editing.session import copy_state
from rledit_jax.method import edit_step as es
from rledit_jax.method import evaluation, packing, passes, shift
from rledit_jax.method.spec import HParams, init_hypernets
from tests.config_files import load_config


def tiny_config():
    config = load_config("tiny")
    config.data.n_edits = 4
    config.data.batch_size = 3  # Ragged: micro-batches of 3 and 1 rows.
    return config


def random_hypernets(layout, config, seed=0, lr=0.1):
    """Hypernetworks with random B (so the net is not the identity) and a visible step size."""
    hypernets = init_hypernets(jax.random.PRNGKey(seed), layout, HParams.from_config(config.hparams))
    rng = np.random.default_rng(seed)
    for net in hypernets.nets.values():
        for block in net["blocks"]:
            block["B"] = 0.01 * rng.standard_normal(block["B"].shape).astype(np.float32)
        net["lr"] = np.full(net["lr"].shape, lr, np.float32)
    return hypernets


@pytest.fixture(scope="module")
def session():
    return editing.EditSession.from_config(tiny_config())


@pytest.fixture(scope="module")
def hyper(session):
    return random_hypernets(session.layout, tiny_config())


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


def logits_of(session, state):
    ids, mask = probe_inputs(session.llm_config.vocab_size)
    params = session.params if state is None else session.edited_params(state)
    return np.asarray(models.forward(session.llm_config, params, ids, mask))


def dense(k, c):
    return np.asarray(k, np.float64).T @ np.asarray(c, np.float64)


edit_step_jit = jax.jit(es.edit_step, static_argnums=0)


def test_edit_equals_edit_step(session, hyper):
    norms = hyper.norms
    state = session.init_state(hyper, capacity=4)
    kernels = copy_state(state).kernels  # `edit` consumes the state
    batch = session.make_batch(BATCH_A)
    new, record = session.edit(state, batch)
    spec = session.batch_spec(batch)
    ref_kernels, ref_hyper, ref_factors = edit_step_jit(spec, session.params, hyper, kernels, batch)
    ref_norms = ref_hyper.norms

    # The edit step's rows: every answer position (packed; its mask marks the real ones).
    answer = np.asarray(passes.capture_rows(packing.pack(batch, spec.lengths.edit), "ans")[1]).reshape(-1)
    assert answer.sum() == (np.asarray(batch.labels) != data.IGNORE).sum()
    assert record.n_rows == answer.sum() > 0 and record.batch_id == 0
    for shape in norms:
        for field in ("n", "mean", "m2", "std"):
            np.testing.assert_allclose(
                getattr(new.hypernets.norms[shape], field), getattr(ref_norms[shape], field), rtol=1e-6, atol=0
            )
    for site in session.layout.names:
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


def test_sequence_equals_evaluation_loop(session, hyper):
    norms = hyper.norms
    state = session.init_state(hyper, capacity=4)
    batches = [session.make_batch(b) for b in (BATCH_A, BATCH_B)]
    for batch in batches:
        state, _ = session.edit(state, batch)
    stacked = jax.tree.map(lambda *x: jax.numpy.stack(x), *batches)
    # The evaluation loop, with the spec the session edited both batches with.
    spec = session.batch_spec(batches[0])
    assert session.batch_spec(batches[1]) == spec
    ref_kernels, ref_hyper, ref_factors = evaluation.edit_sequence(
        spec, session.params, hyper, type("StepBatches", (), {"edit": stacked})
    )
    ref_norms = ref_hyper.norms
    for site in session.layout.names:
        scale = np.abs(np.asarray(ref_kernels[site]) - np.asarray(state.base[site])).max()
        np.testing.assert_allclose(state.kernels[site], ref_kernels[site], rtol=0, atol=1e-5 * scale)
        for t in range(2):
            ref = dense(ref_factors[site][0][t], ref_factors[site][1][t])
            np.testing.assert_allclose(
                dense(state.k_hist[site][t], state.c_hist[site][t]), ref, rtol=0, atol=1e-5 * np.abs(ref).max()
            )
    for shape in norms:
        np.testing.assert_allclose(state.hypernets.norms[shape].mean, ref_norms[shape].mean, rtol=1e-5, atol=1e-7)
        assert float(state.hypernets.norms[shape].n) == float(ref_norms[shape].n)


def test_no_recompilation_for_repeated_shapes(session, hyper):
    state = session.init_state(hyper, capacity=2)
    batches = [session.make_batch(b) for b in (BATCH_A, BATCH_B, BATCH_C, BATCH_D)]
    assert len({b.input_ids.shape for b in batches}) == 1  # 3 or 4 requests, one padded shape
    state, _ = session.edit(state, batches[0])
    sizes = (st.edit_batch._cache_size(), st.rollback._cache_size())
    for batch in batches[1:]:  # ... the third edit also commits the oldest batch (capacity 2)
        state, _ = session.edit(state, batch)
    state = session.rollback(state, 1)
    after_first_rollback = st.rollback._cache_size()
    state = session.rollback(state, 1)
    state, _ = session.edit(state, batches[0])
    assert st.edit_batch._cache_size() == sizes[0]
    assert st.rollback._cache_size() == after_first_rollback <= sizes[1] + 1


def test_rollback_restores_logits_and_norms_exactly(session, hyper):
    norms = hyper.norms
    s0 = session.init_state(hyper, capacity=4)
    s1, r1 = session.edit(s0, BATCH_A)
    s2, r2 = session.edit(copy_state(s1), BATCH_B)  # edits consume their state: keep s1
    base, after1, after2 = logits_of(session, None), logits_of(session, s1), logits_of(session, s2)
    assert np.abs(after2 - after1).max() > 1e-3 and np.abs(after1 - base).max() > 1e-3
    assert [r.batch_id for r in session.history(s2)] == [0, 1]
    assert session.history(s2) == [r1, r2]

    back1 = session.rollback(copy_state(s2), 1)
    np.testing.assert_array_equal(logits_of(session, back1), after1)
    jax.tree.map(np.testing.assert_array_equal, back1.hypernets.norms, s1.hypernets.norms)
    assert [r.batch_id for r in session.history(back1)] == [0]

    back2 = session.rollback(s2, 2)
    np.testing.assert_array_equal(logits_of(session, back2), base)
    jax.tree.map(np.testing.assert_array_equal, back2.hypernets.norms, norms)
    assert session.history(back2) == []
    with pytest.raises(ValueError, match="can roll back 1..0 batches, not 1"):
        session.rollback(back2, 1)

    # Editing after a rollback continues from the restored state with a fresh id.
    again, record = session.edit(back1, BATCH_B)
    assert record.batch_id == 2 and [r.batch_id for r in session.history(again)] == [0, 2]
    np.testing.assert_array_equal(logits_of(session, again), after2)


def test_full_history_commits_the_oldest_batch(session, hyper):
    small, big = session.init_state(hyper, capacity=2), session.init_state(hyper, capacity=4)
    for batch in (BATCH_A, BATCH_B, BATCH_C):
        small, _ = session.edit(small, batch)
        big, _ = session.edit(big, batch)
        if batch is BATCH_A:
            after_a = logits_of(session, small)
    jax.tree.map(np.testing.assert_array_equal, small.kernels, big.kernels)
    assert [r.batch_id for r in session.history(small)] == [1, 2] and int(small.n_committed) == 1
    np.testing.assert_array_equal(logits_of(session, session.rollback(copy_state(small), 2)), after_a)
    with pytest.raises(ValueError, match="1 older batches were committed"):
        session.rollback(small, 3)


def test_shift_norms_from_factors(session, hyper):
    state, record = session.edit(session.init_state(hyper, capacity=2), BATCH_C)
    for _i, site in enumerate(session.layout.names):
        k, c = (np.asarray(x) for x in editing.state.batch_factors(state, record.batch_id)[site])
        expected = np.linalg.norm(dense(k, c))
        assert record.shift_norms[site] == pytest.approx(expected, rel=1e-5)
        assert float(shift.shift_sq_norm(k, c)) == pytest.approx(expected**2, rel=1e-5)


def test_non_finite_shift_is_not_applied(session):
    hypernets = random_hypernets(session.layout, tiny_config(), lr=3e38)
    state = session.init_state(hypernets, capacity=2)
    before = copy_state(state)
    with pytest.raises(editing.NonFiniteShiftError, match="non-finite shift") as info:
        session.edit(state, BATCH_A)
    jax.tree.map(np.testing.assert_array_equal, info.value.state.kernels, before.kernels)
    jax.tree.map(np.testing.assert_array_equal, info.value.state.hypernets.norms, before.hypernets.norms)
    assert int(info.value.state.count) == 0 and int(info.value.state.next_id) == 0


def test_batch_layout_and_limits(session, hyper):
    batch = session.make_batch(BATCH_C)
    assert batch.input_ids.shape == (2, 3, 16)  # ceil(4 / 3) micro-batches of 3 rows, L bucketed
    lengths = batch.attention_mask.sum(-1).reshape(-1)
    real = batch.request_index.reshape(-1) >= 0
    assert list(lengths[real]) == sorted(lengths[real], reverse=True) and real.sum() == 3
    tok = session.tokenizer
    for row, index in zip(batch.input_ids.reshape(-1, 16)[real], batch.request_index.reshape(-1)[real]):
        r = BATCH_C[index]
        expected = tok.encode(r["prompt"]) + tok.encode(" " + r["target_new"])[:-1]
        assert row[: len(expected)].tolist() == expected
        assert (row[len(expected) :] == tok.pad_token_id).all()

    pre = [data.tokenize_pair(tok, data.Pair(r["prompt"], r["target_new"])) for r in BATCH_C]
    as_dicts = [{"input_ids": p.input_ids, "labels": p.labels} for p in pre]
    for other in (session.make_batch(pre), session.make_batch(as_dicts)):
        jax.tree.map(np.testing.assert_array_equal, other, batch)

    with pytest.raises(req.RequestError, match="5 requests, more than one batch of max_requests=4"):
        session.make_batch(REQUESTS[:5])
    with pytest.raises(req.RequestError, match="more than the state's max_rows=2"):
        session.edit(session.init_state(hyper, capacity=1, max_rows=2), BATCH_A)
    with pytest.raises(req.RequestError, match="longer than the model's context of 128"):
        session.make_batch([{"prompt": "the " * 130, "target_new": "Paris"}])


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
