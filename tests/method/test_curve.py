"""The retention curve and the evaluation stopped between steps, against the torch oracle.

Oracle: `oracle.evaluate` run from the base weights on each prefix 0..t of the stream (fresh copies of
the oracle's hypernetworks, so its normalisers see exactly the edited steps): its ES / GS / LS are the
curve's "all" point after step t, and its first step's rows the "first" point. CounterFact scoring,
which moves with the edits on this random model (token accuracy stays 0 on it).
"""

import copy

import jax
import numpy as np
import pytest

from rledit_jax import lifelong
from rledit_jax.method import evaluation
from tests import margins
from tests.method.test_parity import hparams, ours_from_oracle, setup, spec_of, to_oracle_steps
from tests.oracle import torch_rledit as oracle

SITES = ("transformer.h.0.mlp.fc_out", "transformer.h.1.mlp.fc_out")
N_STEPS, N_EDITS, EVERY = 5, 4, 2


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("curve"))
    torch_model, llm_config, params, batches, layout, nets = setup(root, SITES, N_EDITS, 3, N_STEPS, 0.05, 2)
    spec = spec_of(llm_config, layout, hparams(), batches, metric="counterfact", curve_every=EVERY, keep_factors=True)
    return torch_model, params, batches, nets, spec


def test_curve_points_match_the_oracle_on_prefixes(run):
    torch_model, params, batches, nets, spec = run
    out = evaluation.evaluate(spec, params, ours_from_oracle(nets), batches)
    points = lifelong.curve_records(out.curve, batches)
    assert [p["step"] for p in points] == [1, 3, 4]  # every EVERY steps, and the last
    assert [p["edits"] for p in points] == [N_EDITS * (p["step"] + 1) for p in points]
    steps = to_oracle_steps(batches)
    for p in points:
        t = p["step"]
        ref = oracle.evaluate(
            torch_model,
            copy.deepcopy(nets),
            steps[: t + 1],
            list(SITES),
            oracle.OracleConfig(token="ans"),
            metric="counterfact",
        )
        for kind, name in evaluation.SCORES.items():
            margins.check(f"curve step {t} all {name}", abs(p["all"][name] - ref[name]), 1e-6)
            n_first = int((np.asarray(getattr(batches, kind).fact_index[0]) >= 0).sum())
            first = ref["per_row"][kind][:n_first]
            margins.check(f"curve step {t} first {name}", abs(p["first"][name] - float(first.mean())), 1e-6)
    # The last point is the final model's scores; the points move with the edits.
    assert all(points[-1]["all"][k] == pytest.approx(float(out.scores[k]), abs=1e-7) for k in ("ES", "GS", "LS"))
    assert len({p["all"]["ES"] for p in points}) > 1


def test_stopped_evaluation_equals_one_program(run):
    _, params, batches, nets, spec = run
    whole = evaluation.evaluate(spec, params, ours_from_oracle(nets), batches)
    seen = []

    def at_stop(kernels, t):
        seen.append((t, jax.tree.map(np.asarray, kernels)))

    parts = lifelong.evaluate(spec, params, ours_from_oracle(nets), batches, stop_every=EVERY, at_stop=at_stop)
    assert [t for t, _ in seen] == [1, 3]
    close = lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    jax.tree.map(close, (parts.scores, parts.rows, parts.curve), (whole.scores, whole.rows, whole.curve))
    jax.tree.map(
        close,
        (parts.kernels, parts.factors, parts.hypernets.norms),
        (whole.kernels, whole.factors, whole.hypernets.norms),
    )
    # At a stop, the kernels are those of the edits so far.
    for t, kernels in seen:
        prefix = jax.tree.map(lambda x, t=t: x[: t + 1], batches)
        ref_kernels, _, _ = jax.jit(evaluation.edit_sequence, static_argnums=0)(
            spec, params, ours_from_oracle(nets), prefix
        )
        jax.tree.map(close, kernels, ref_kernels)
