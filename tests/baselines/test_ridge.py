"""ridge: the solve on lifelong-normalised captures with an untrained network.

It is RLEdit with zero training steps: an untrained RLEdit network (random A, B = 0) is the identity
map, as ridge's network without blocks is, so their lifelong edits agree bit for bit. Then ridge
through `config.method` (`lifelong.run_method`) against the torch oracle's lifelong editing: every
step's shift and the final per-row scores.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from rledit_jax.baselines import lifelong
from rledit_jax.method import evaluation
from tests.baselines.conftest import EPS32, TWO_SITES
from tests.baselines.test_per_batch import REL, check_scores
from tests.method.test_parity import assert_close
from tests.oracle import torch_baselines as tb
from tests.oracle import torch_rledit as orc

# A step size large enough that the edits move the model (the default 1e-6 barely does).
LR = 0.5


def untrained_oracle_nets(t):
    """The oracle's network without blocks (the identity map), step size LR, empty normalisers."""
    shapes = orc.site_shapes_of(t.torch_model, t.sites)
    return orc.make_hypernets(shapes, rank=1, n_blocks=0, lr=LR, seed=0, dtype=torch.float64, norm_eps=EPS32)


def evaluate(r):
    """`(scores, rows, factors)` of `evaluation.evaluate` with every step's factors, on a copy of the run's
    networks (it donates them)."""
    spec = dataclasses.replace(r.eval_spec, keep_factors=True)
    out = evaluation.evaluate(spec, r.params, jax.tree.map(jnp.copy, r.hypernets), r.eval_batches)
    return out.scores, out.rows, out.factors


@pytest.mark.parametrize("sites", [None, TWO_SITES], ids=["one_site", "two_sites"])
def test_ridge_is_rledit_untrained_and_matches_oracle(tiny, tmp_path, sites):
    fields = {"model.edit_sites": sites} if sites else {}
    ridge = tiny(method="ridge", **{"baselines.ridge.lr": LR}, **fields)
    rledit = tiny(method="rledit", **{"hparams.lr": LR}, **fields)
    assert ridge.run.spec.hparams.n_blocks == 0 and rledit.run.spec.hparams.n_blocks == 2

    scores, rows, factors = evaluate(ridge.run)
    rl_scores, rl_rows, rl_factors = evaluate(rledit.run)
    for site in ridge.sites:
        for ours, theirs in zip(factors[site], rl_factors[site]):
            np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
    for kind in rows:
        np.testing.assert_array_equal(np.asarray(rows[kind]), np.asarray(rl_rows[kind]))
    assert {k: float(v) for k, v in scores.items()} == {k: float(v) for k, v in rl_scores.items()}

    # The method's own path gives the same numbers; the oracle (float64) agrees to float32 rounding.
    metrics = lifelong.run_method(ridge.run, str(tmp_path))
    assert metrics["train_seconds"] is None
    assert all(metrics[k] == float(v) for k, v in scores.items())
    r = ridge.run
    ref = tb.lifelong(
        ridge.torch_model,
        lambda _: untrained_oracle_nets(ridge),
        ridge.oracle_steps(r.eval_batches),
        list(ridge.sites),
        token=r.spec.hparams.token,
        shift="solve",
        every=r.config.eval.steps,
    )
    for step, ref_shifts in enumerate(ref["shifts"]):
        for site in ridge.sites:
            k, c = (np.asarray(x[step]) for x in factors[site])
            assert_close(k.T @ c, ref_shifts[site].numpy(), REL, f"ridge eval step {step} {site}")
    assert max(float(np.abs(s.numpy()).max()) for s in ref["shifts"][-1].values()) > 1e-3  # edits that move
    check_scores(r, scores, rows, ref)
