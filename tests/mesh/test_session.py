"""The edit library on a (2, 4) mesh: edits and rollback give the one-device session's kernels,
normaliser statistics and logits (to 1e-5 relative), and its state keeps the kernels' shardings."""

import numpy as np
import pytest

from rledit_jax import editing, models
from rledit_jax.editing import state as st
from rledit_jax.editing.session import copy_state
from tests.editing.test_session import BATCH_A, BATCH_B, BATCH_C, probe_inputs, random_hypernets
from tests.mesh.setups import MESH, assert_agree, rel_diff, shard_shapes, tiny_config

pytestmark = pytest.mark.mesh


def logits(session, state):
    ids, mask = probe_inputs(session.llm_config.vocab_size)
    return np.asarray(models.forward(session.llm_config, session.edited_params(state), ids, mask))


def history_run(session):
    """Edits A, B, C; rolls back 2; edits C again: the states after each, with the logits."""
    config = tiny_config()
    s0 = session.init_state(random_hypernets(session.layout, config), capacity=4)
    s1, _ = session.edit(s0, BATCH_A)
    s2, _ = session.edit(copy_state(s1), BATCH_B)
    s3, _ = session.edit(copy_state(s2), BATCH_C)
    back = session.rollback(copy_state(s3), 2)
    again, _ = session.edit(copy_state(back), BATCH_C)
    states = {"s2": s2, "s3": s3, "back": back, "again": again}
    return states, {name: logits(session, s) for name, s in states.items()}


@pytest.fixture(scope="module")
def sessions():
    return editing.EditSession.from_config(tiny_config()), editing.EditSession.from_config(tiny_config(**MESH))


def test_edits_and_rollback_agree(sessions):
    (states1, logits1), (states8, logits8) = (history_run(s) for s in sessions)
    for name in states1:
        assert_agree(
            {"kernels": states8[name].kernels, "norms": states8[name].hypernets.norms, "logits": logits8[name]},
            {"kernels": states1[name].kernels, "norms": states1[name].hypernets.norms, "logits": logits1[name]},
            f"edit library, state {name}",
        )
    # Rolling back 2 of 3 batches then redoing the last is the state after A, C: not after A, B, C.
    assert rel_diff(logits8["again"], logits8["s3"]) > 1e-3


def test_state_keeps_the_kernels_shardings(sessions):
    _, session = sessions
    states, _ = history_run(session)
    compiled = st.edit_batch._cache_size()
    for state in states.values():
        for site in session.layout.names:
            kernel, k_hist = state.kernels[site], state.k_hist[site]
            d_in, d_out = kernel.shape
            split = (d_in, d_out // 4) if site.endswith("fc_in") else (d_in // 4, d_out)
            assert shard_shapes(kernel) == {split}
            assert shard_shapes(k_hist) == {(k_hist.shape[0], k_hist.shape[1], split[0])}
    session.edit(copy_state(states["back"]), BATCH_A)  # a rolled-back state runs the compiled edit
    assert st.edit_batch._cache_size() == compiled
