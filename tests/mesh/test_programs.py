"""The training sequence (every gradient mode) and the lifelong evaluation on a (2, 4) mesh give the
numbers of the same programs on one device (the oracle), within what float32 rounding alone moves
them on this machine (`setups.assert_within_rounding`)."""

import dataclasses

import jax
import numpy as np
import pytest

from rledit_jax.method import evaluation, train_step
from tests.editing.test_session import random_hypernets
from tests.mesh.setups import N_NUDGES, assert_within_rounding, nudged, setup_pair, shard_shapes

pytestmark = pytest.mark.mesh
LOSSES = ("loss", "gen_loss", "reg", "grad_norm")


@pytest.fixture(scope="module", params=["tiny", "tiny_llama"])
def runs(request):
    return setup_pair(request.param)


def fresh(tree):
    """A copy (the programs donate their state)."""
    return jax.tree.map(lambda x: x.copy(), tree)


def train(r, mode, nudge: int | None = None):
    """One training sequence of run `r`: its outputs as pytrees; with `nudge`, on `nudged` inputs."""
    spec = dataclasses.replace(r.spec, gradient=mode)
    params, hypernets = r.params, fresh(r.hypernets)
    if nudge is not None:
        params, hypernets = nudged(params, nudge), nudged(hypernets, nudge + 1000)
    h, o, g, out = train_step.train_sequence_and_update(
        spec, params, hypernets, fresh(r.opt_state), r.train_batches[0]
    )
    # The locality loss starts near 0 (1e-9): it is measured against the total loss.
    loc = np.asarray(out["loc_loss"]) / np.abs(np.asarray(out["loss"])).max()
    return {"grads": g, "hypernets": h, "opt_state": o, "losses": {k: out[k] for k in LOSSES}, "loc_loss": loc}


@pytest.mark.parametrize("mode", ["reference", "unrolled", "unrolled_second_order"])
def test_training_sequence_agrees(runs, mode):
    one, mesh = runs
    if one.spec.model.model_type != "gptj" and mode != "reference":
        pytest.skip("the gradient modes run on GPT-J; the Llama family's rules in the reference mode")
    reference, ours = train(one, mode), train(mesh, mode)
    nudges = [train(one, mode, seed) for seed in range(N_NUDGES)]
    assert_within_rounding(ours, reference, nudges, f"{one.spec.model.model_type} {mode} training sequence")
    # The updated state is whole on every device, on the mesh.
    leaf = jax.tree.leaves(ours["hypernets"].nets)[0]
    assert leaf.sharding.mesh == mesh.spec.mesh and shard_shapes(leaf) == {leaf.shape}


def lifelong(r, nudge: int | None = None):
    """The lifelong evaluation of run `r` with a curve; with `nudge`, on `nudged` inputs."""
    spec = dataclasses.replace(r.eval_spec, keep_factors=True, curve_every=2)
    params, hypernets = r.params, random_hypernets(spec.layout, r.config)
    if nudge is not None:
        params, hypernets = nudged(params, nudge), nudged(hypernets, nudge + 1000)
    return evaluation.evaluate(spec, params, hypernets, r.eval_batches)


def test_lifelong_evaluation_agrees(runs):
    one, mesh = (lifelong(r) for r in runs)
    nudges = [lifelong(runs[0], seed) for seed in range(N_NUDGES)]
    pytrees = lambda out: {"factors": out.factors, "norms": out.hypernets.norms}
    assert_within_rounding(
        pytrees(mesh), pytrees(one), [pytrees(n) for n in nudges], f"{runs[0].spec.model.model_type} evaluation"
    )
    # Argmax scores: exact. The closest top-2 logits of these final models are 2e-4 of the logit scale
    # apart, two orders above the logits' rounding differences, so no argmax can flip.
    assert jax.tree.map(float, mesh.scores) == jax.tree.map(float, one.scores)
    as_arrays = lambda tree: jax.tree.map(np.asarray, tree)
    jax.tree.map(np.testing.assert_array_equal, as_arrays((mesh.rows, mesh.curve)), as_arrays((one.rows, one.curve)))
