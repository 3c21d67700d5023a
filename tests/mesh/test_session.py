"""The edit library on a (2, 4) mesh: edits and rollback give the one-device session's kernels,
normaliser statistics and logits (within what float32 rounding alone moves them on this machine:
`setups.assert_within_rounding`), and its state keeps the kernels' shardings."""

import dataclasses

import numpy as np
import pytest

from rledit_jax import editing, models
from rledit_jax.editing import state as st
from rledit_jax.editing.session import copy_state
from tests.editing.test_session import BATCH_A, BATCH_B, BATCH_C, probe_inputs, random_hypernets
from tests.mesh.setups import MESH, N_NUDGES, assert_within_rounding, nudged, rel_diff, shard_shapes, tiny_config

pytestmark = pytest.mark.mesh


def logits(session, state):
    ids, mask = probe_inputs(session.llm_config.vocab_size)
    return np.asarray(models.forward(session.llm_config, session.edited_params(state), ids, mask))


def history_run(session, nudge: int | None = None):
    """Edits A, B, C; rolls back 2; edits C again: the states after each, with the logits. With `nudge`,
    on `nudged` weights and hypernetworks."""
    hypernets = random_hypernets(session.layout, tiny_config())
    if nudge is not None:
        session = dataclasses.replace(session, params=nudged(session.params, nudge))
        hypernets = nudged(hypernets, nudge + 1000)
    s0 = session.init_state(hypernets, capacity=4)
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
    runs = [history_run(s) for s in sessions] + [history_run(sessions[0], seed) for seed in range(N_NUDGES)]
    pytrees = lambda run, name: {
        "kernels": run[0][name].kernels,
        "norms": run[0][name].hypernets.norms,
        "logits": run[1][name],
    }
    (states1, _), (_, logits8) = runs[:2]
    for name in states1:
        assert_within_rounding(
            pytrees(runs[1], name),
            pytrees(runs[0], name),
            [pytrees(run, name) for run in runs[2:]],
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
