"""The reference's MEND and MALMEN networks (its `RLEditNet` state dicts, saved with `torch.save`)
imported as RLEdit's are (`init.reference_hypernet`), then editing the eval stream as the oracle does
with the same network."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from rledit_jax.method import evaluation, reference_io
from tests.baselines.test_per_batch import METHODS, REL, check_scores
from tests.method.test_parity import assert_close, perturb
from tests.oracle import torch_baselines as tb


@pytest.mark.parametrize("method", sorted(METHODS))
def test_reference_network_imports_and_edits_as_the_oracle(tiny, tmp_path_factory, method):
    plain = tiny(method=method, **METHODS[method])
    nets = plain.torch_nets(plain.run.hypernets)
    perturb(nets, seed=5)
    path = tmp_path_factory.mktemp("reference") / f"{method}_net.pth"
    torch.save({k: v.float() for k, v in nets.state_dict().items()}, path)  # the reference's nets are float32

    t = tiny(method=method, **METHODS[method], **{"init.reference_hypernet": str(path)})
    r = t.run
    state = torch.load(path, weights_only=True)
    ours = reference_io.to_reference(r.hypernets)
    assert sorted(ours) == sorted(state)
    for name, value in state.items():
        np.testing.assert_array_equal(ours[name], value.numpy(), err_msg=name)

    out = evaluation.evaluate(
        dataclasses.replace(r.eval_spec, keep_factors=True),
        r.params,
        jax.tree.map(jnp.copy, r.hypernets),
        r.eval_batches,
    )
    scores, rows, factors = out.scores, out.rows, out.factors
    ref = tb.lifelong(
        t.torch_model,
        lambda _: t.torch_nets(r.hypernets),
        t.oracle_steps(r.eval_batches),
        list(t.sites),
        token=r.spec.hparams.token,
        shift=r.spec.shift,
        every=r.config.eval.steps,
    )
    for step, ref_shifts in enumerate(ref["shifts"]):
        for site in t.sites:
            k, c = (np.asarray(x[step]) for x in factors[site])
            assert_close(k.T @ c, ref_shifts[site].numpy(), REL, f"{method} imported, eval step {step} {site}")
    check_scores(r, scores, rows, ref)
