"""`train.scheme=sequence` for MEND and MALMEN (the paper's Fig. 6): RLEdit's sequence training with
the method's shift, against the torch oracle's `train_sequence` (each step's window loss through
its own shift, gradients taken the reference's way, accumulated and clipped per step, one Adam step).

Per step: the shift, the loss terms and the accumulator's norm; then the accumulated clipped
gradient, the parameters after the Adam step and the normaliser.
"""

import dataclasses

import numpy as np
import pytest
import torch

from rledit_jax.method import reference_io, train_step
from rledit_jax.method.train_step import make_optimizer
from tests import margins
from tests.baselines.test_per_batch import METHODS, REL, check_grads, start
from tests.method.test_parity import assert_close
from tests.oracle import torch_baselines as tb


@pytest.mark.parametrize("method", sorted(METHODS))
def test_sequence_scheme_matches_oracle(tiny, method):
    t = tiny(method=method, **METHODS[method], **{"train.scheme": "sequence"})
    r, hp = t.run, t.run.spec.hparams
    assert hp.back_depth == r.config.hparams.back_depth > 1  # the window, not the per_batch scheme's 1
    ours, nets = start(t)
    spec = dataclasses.replace(r.spec, keep_factors=True)
    batches = r.train_batches[0]
    cfg = dict(back_depth=hp.back_depth, time_decay=hp.time_decay, loc_coef=hp.loc_coef, reg_coef=hp.reg_coef)
    ref = tb.train_sequence(
        t.torch_model,
        nets,
        torch.optim.Adam(nets.parameters(), lr=hp.meta_lr),
        t.oracle_steps(batches),
        list(t.sites),
        cfg,
        max_grad_norm=hp.max_grad_norm,
        token=hp.token,
        shift=spec.shift,
    )

    hypernets, _, grads, out = train_step.train_sequence_and_update(
        spec, r.params, ours, make_optimizer(hp).init(ours.nets), batches
    )
    for step, ref_step in enumerate(ref["steps"]):
        for site in t.sites:
            k, c = (np.asarray(x[step]) for x in out["factors"][site])
            assert_close(k.T @ c, ref_step["shifts"][site].numpy(), REL, f"{method} sequence step {step} {site}")
        for term in ("gen_loss", "loc_loss", "reg"):
            assert_close(out[term][step], ref_step[term].numpy(), REL, f"{method} sequence step {step} {term}")
        assert_close(out["acc_norm"][step], ref_step["grad_norm"].numpy(), REL, f"{method} step {step} acc norm")
    assert float(ref["steps"][-1]["reg"]) > 0 and hp.reg_coef > 0  # the L2 term is in the loss
    check_grads(reference_io.to_reference(hypernets.replace(nets=grads)), ref["steps"][-1]["grads"], method)
    state = reference_io.to_reference(hypernets)
    for name, value in ref["state_dict"].items():
        if ".normalizer." in name:
            assert_close(state[name], value.numpy(), REL, f"{method} {name}")
        else:  # post-Adam, in units of meta_lr (as in test_per_batch)
            margins.check(
                f"{method} post-Adam {name} (meta_lr)", np.abs(state[name] - value.numpy()).max() / hp.meta_lr, 1e-2
            )
