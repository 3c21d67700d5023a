"""malmen_retrain / mend_retrain: a fresh network retrained on the edited model every k eval steps.

With 3 eval steps and k = 2, retraining happens before steps 0 and 2, each time on the whole training
stream (never on an eval fact) and on the model as the earlier steps left it. Against the torch
oracle's lifelong editing with the same retraining (the same seeded fresh networks, the per_batch
scheme): the edited kernels after every retraining's steps, and the final per-row scores.

The fresh networks are perturbed off their identity init for the oracle comparison: at that init a
fresh MEND network's first batch gives `bias` and `shift` a gradient that is zero in exact arithmetic
(the first batch's normalised rows sum to zero), and Adam's first step turns its float rounding
into moves of +-meta_lr, which no two implementations share.
"""

import io
import json

import numpy as np
import pytest
import torch

from rledit_jax import models
from rledit_jax.baselines import retrain
from rledit_jax.baselines.meter import Meter
from rledit_jax.method import evaluation, reference_io
from tests.baselines.test_per_batch import METHODS, REL, check_scores
from tests.method.test_parity import assert_close, ours_from_oracle, perturb
from tests.oracle import torch_baselines as tb

EVERY = 2


class Recorder(Meter):
    """A meter that also keeps every call's phase, arguments and result."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __call__(self, phase, program, spec, *args):
        out = super().__call__(phase, program, spec, *args)
        self.calls.append((phase, args, out))
        return out


def perturbed_fresh(t, fresh=retrain.fresh_hypernets):
    """`retrain.fresh_hypernets`, each retraining's networks perturbed (seeded by the retraining)."""

    def perturbed(r, retraining):
        hypernets, opt_state = fresh(r, retraining)
        nets = t.torch_nets(hypernets)
        perturb(nets, seed=10 + retraining)
        return ours_from_oracle(nets), opt_state

    return perturbed


def test_fresh_networks_are_seeded_per_retraining(tiny):
    r = tiny(method="malmen_retrain").run
    first, again, second = (reference_io.to_reference(retrain.fresh_hypernets(r, i)[0]) for i in (0, 0, 1))
    a = "(48, 32).blocks.0.A"
    np.testing.assert_array_equal(first[a], again[a])
    assert np.abs(first[a] - second[a]).min() > 0


def edit_rows(batches) -> set:
    """The real rows of a `StepBatches`' edit batches, as token tuples."""
    kb = batches.edit
    ids, real = np.asarray(kb.input_ids), np.asarray(kb.fact_index) >= 0
    return {tuple(row) for row in ids[real]}


@pytest.mark.parametrize("base", ["malmen", "mend"])
def test_retraining_steps_data_and_oracle(tiny, monkeypatch, base):
    method = f"{base}_retrain"
    t = tiny(method=method, **METHODS[base], **{"baselines.retrain.every": EVERY})
    r, hp = t.run, t.run.spec.hparams
    monkeypatch.setattr(retrain, "fresh_hypernets", perturbed_fresh(t))
    n_seq, n_eval = len(r.train_batches), r.config.eval.steps
    meter, log = Recorder(), io.StringIO()
    kernels = retrain.edit_lifelong(r, meter, log)

    # Retraining before eval steps 0 and 2: every training sequence, then the next k eval steps.
    starts = list(range(0, n_eval, EVERY))
    assert [phase for phase, *_ in meter.calls] == (["train"] * n_seq + ["edit"]) * len(starts)
    eval_rows = edit_rows(r.eval_batches)
    edits = [(args, out) for phase, args, out in meter.calls if phase == "edit"]
    for i, start in enumerate(starts):
        trains = meter.calls[i * (n_seq + 1) : i * (n_seq + 1) + n_seq]
        assert all(args[-1] is r.train_batches[e] for e, (_, args, _) in enumerate(trains))
        assert not edit_rows(trains[0][1][-1]) & eval_rows  # never an eval fact
        steps = edits[i][0][-1]
        np.testing.assert_array_equal(steps.edit.fact_index, r.eval_batches.edit.fact_index[start : start + EVERY])
        # Trained on the model as edited so far: the base kernels, then the previous steps' result.
        trained_on = trains[0][1][0]
        for site in t.sites:
            expected = models.get_site(r.spec.model, r.params, site) if i == 0 else edits[i - 1][1][0][site]
            np.testing.assert_array_equal(models.get_site(r.spec.model, trained_on, site), expected)
    lines = [json.loads(line) for line in log.getvalue().splitlines()]
    assert sorted({(l["retraining"], l["sequence"]) for l in lines}) == [
        (i, i * n_seq + e) for i in range(len(starts)) for e in range(n_seq)
    ]

    # The oracle, retraining the same fresh networks on the same training steps.
    train_steps = t.oracle_steps(t.train_batches())
    per_batch = dict(loc_coef=hp.loc_coef, max_grad_norm=hp.max_grad_norm, token=hp.token, shift=r.spec.shift)

    def train(nets):
        optimizer = torch.optim.Adam(nets.parameters(), lr=hp.meta_lr)
        tb.train_per_batch(t.torch_model, nets, optimizer, train_steps, list(t.sites), **per_batch)

    ref = tb.lifelong(
        t.torch_model,
        lambda i: t.torch_nets(retrain.fresh_hypernets(r, i)[0]),
        t.oracle_steps(r.eval_batches),
        list(t.sites),
        token=hp.token,
        shift=r.spec.shift,
        every=EVERY,
        train=train,
    )
    for i, start in enumerate(starts):
        end = min(start + EVERY, n_eval)
        for site in t.sites:
            base_kernel = np.asarray(models.get_site(r.spec.model, r.params, site), np.float64)
            ours = np.asarray(edits[i][1][0][site], np.float64) - base_kernel
            theirs = sum(ref["shifts"][s][site].numpy() for s in range(end))
            assert_close(ours, theirs, REL, f"{method} kernels edited after step {end - 1} {site}")
    assert float(np.abs(theirs).max()) > 1e-3  # edits that move the model
    scores, rows = evaluation.score(r.eval_spec, r.params, kernels, r.eval_batches)
    check_scores(r, scores, rows, ref)
