"""MALMEN and MEND (the per_batch scheme, then the frozen network's lifelong editing) vs the torch oracle.

The oracle (`tests/oracle/torch_baselines.py`) runs in float64 and takes the network gradient as the
reference does (dL/dW at the edited weights, then MEND's <G_W, S> or MALMEN's implicit solve
gradients); ours runs in float32 at "highest" matmul precision and differentiates its own shift.
Per training batch: the shift, the losses and the clipped gradient; the parameters after the last
Adam step and the normaliser; then every eval step's shift and the final per-row scores.
"""

import dataclasses

import jax
import numpy as np
import pytest
import torch

from rledit_jax.baselines import per_batch
from rledit_jax.method import evaluation, reference_io
from rledit_jax.method.train_step import make_optimizer
from tests import margins
from tests.baselines.conftest import TWO_SITES
from tests.method.test_parity import assert_close, ours_from_oracle, perturb
from tests.oracle import torch_baselines as tb

REL = 1e-5
CASES = {
    # One site, a ragged last micro-batch (7 = 3 + 3 + 1 edits), answer tokens.
    "one_site": {},
    # Two sites of one shape share a network and a normaliser.
    "two_sites": {"model.edit_sites": TWO_SITES},
}
# Per method: its step size (large enough that the shifts move the model) and method fields.
METHODS = {"malmen": {"hparams.lr": 0.5}, "mend": {"hparams.lr": 0.05}}


def start(tiny, seed=3):
    """Perturbed initial networks (no gradient trivially zero), ours and the oracle's."""
    nets = tiny.torch_nets(tiny.run.hypernets)
    perturb(nets, seed)
    return ours_from_oracle(nets), nets


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("method", sorted(METHODS))
def test_training_and_editing_match_oracle(tiny, method, case):
    t = tiny(method=method, **METHODS[method], **CASES[case])
    r, hp = t.run, t.run.spec.hparams
    assert hp.back_depth == 1 and hp.reg_coef == 0.0  # the per_batch scheme's loss (methods.hparams_of)
    assert hp.token == ("all" if method == "mend" else "ans")
    ours, nets = start(t)
    spec = dataclasses.replace(r.spec, keep_factors=True)
    batches = t.train_batches()
    trace = tb.train_per_batch(
        t.torch_model,
        nets,
        torch.optim.Adam(nets.parameters(), lr=hp.meta_lr),
        t.oracle_steps(batches),
        list(t.sites),
        loc_coef=hp.loc_coef,
        max_grad_norm=hp.max_grad_norm,
        token=hp.token,
        shift=spec.shift,
    )

    hypernets, _, out = per_batch.train_batches(spec, r.params, ours, make_optimizer(hp).init(ours.nets), batches)
    for step, ref in enumerate(trace):
        for site in t.sites:
            k, c = (np.asarray(x[step]) for x in out["factors"][site])
            assert_close(k.T @ c, ref["shifts"][site].numpy(), REL, f"{method} step {step} shift {site}")
        assert_close(out["gen_loss"][step], ref["gen_loss"].numpy(), REL, f"{method} step {step} gen_loss")
        assert_close(out["loc_loss"][step], ref["loc_loss"].numpy(), REL, f"{method} step {step} loc_loss")
        assert_close(out["acc_norm"][step], ref["grad_norm"].numpy(), REL, f"{method} step {step} grad norm")
        grads = reference_io.to_reference(hypernets.replace(nets=jax.tree.map(lambda g, s=step: g[s], out["grads"])))
        check_grads(grads, ref["grads"], f"{method} step {step}")
        if method == "mend":  # MEND's shift never reads lamda
            assert all(not np.any(grads[n]) for n in grads if n.endswith("lamda.weight"))
    # Shifts large enough for the comparison to mean something.
    assert float(trace[-1]["loc_loss"]) > 1e-6
    state = reference_io.to_reference(hypernets)
    for name, value in trace[-1]["state_dict"].items():
        if ".normalizer." in name:
            assert_close(state[name], value.numpy(), REL, f"{method} {name}")
        else:  # post-Adam, in units of meta_lr (Adam moves each parameter by about meta_lr per step)
            margins.check(
                f"{method} post-Adam {name} (meta_lr)", np.abs(state[name] - value.numpy()).max() / hp.meta_lr, 1e-2
            )

    # Then the frozen network edits the eval stream (evaluation.evaluate) from the base model.
    eval_spec = dataclasses.replace(r.eval_spec, keep_factors=True)
    out = evaluation.evaluate(eval_spec, r.params, hypernets, r.eval_batches)
    scores, rows, factors = out.scores, out.rows, out.factors
    ref = tb.lifelong(
        t.torch_model,
        lambda _: nets,
        t.oracle_steps(r.eval_batches),
        list(t.sites),
        token=hp.token,
        shift=spec.shift,
        every=r.config.eval.steps,
    )
    for step, ref_shifts in enumerate(ref["shifts"]):
        for site in t.sites:
            k, c = (np.asarray(x[step]) for x in factors[site])
            assert_close(k.T @ c, ref_shifts[site].numpy(), REL, f"{method} eval step {step} {site}")
    check_scores(r, scores, rows, ref)


def check_grads(ours: dict, ref: dict, what: str):
    """Every gradient tensor within REL of its own scale, except the per-site scalars `lr` and `lamda`:
    each is one inner product `<G_W, dS/dx>` over a whole kernel with cancellation (float32 rounding of
    that sum is up to ~1e-4 of it), so they are held to REL of the whole gradient's scale."""
    scale = max(float(np.abs(g.numpy()).max()) for g in ref.values())
    for name, g in ref.items():
        if name.endswith(("lr.weight", "lamda.weight")):
            err = float(np.abs(ours[name] - g.numpy()).max())
            margins.check(f"parity {what} clipped grad {name} (of the gradient's scale)", err / scale, REL)
        else:
            assert_close(ours[name], g.numpy(), REL, f"{what} clipped grad {name}")


def check_scores(r, scores, rows, ref):
    """Per-row scores and ES / GS / LS of ours against the oracle's."""
    for kind, name in evaluation.SCORES.items():
        real = np.asarray(getattr(r.eval_batches, kind).fact_index) >= 0
        np.testing.assert_allclose(np.asarray(rows[kind])[real], ref["per_row"][kind].numpy(), atol=1e-6)
        margins.check(f"score {name}", abs(float(scores[name]) - ref[name]), 1e-6)
