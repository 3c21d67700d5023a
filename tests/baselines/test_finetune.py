"""ft (Adam on the edit sites' kernels, batch after batch) vs the torch oracle's `finetune`.

Per eval step: the edit loss before every Adam step and the kernels after the step's last one (the
post-Adam parameters, as the change of the step); then the final per-row scores. Ours runs in
float32, the oracle in float64.
"""

import jax
import numpy as np
import pytest

from rledit_jax.baselines import finetune, lifelong
from rledit_jax.method import edit_step as es
from rledit_jax.method import evaluation
from tests import margins
from tests.baselines.conftest import TWO_SITES
from tests.baselines.test_per_batch import REL, check_scores
from tests.method.test_parity import assert_close
from tests.oracle import torch_baselines as tb

STEPS, LR = 3, 1e-2
step_program = jax.jit(finetune.finetune_step, static_argnums=0)


@pytest.mark.parametrize("sites", [None, TWO_SITES], ids=["one_site", "two_sites"])
def test_finetune_matches_oracle(tiny, tmp_path, sites):
    fields = {"model.edit_sites": sites} if sites else {}
    t = tiny(method="ft", **{"baselines.ft.steps": STEPS, "baselines.ft.lr": LR}, **fields)
    r = t.run
    ft = finetune.FTSpec(r.eval_spec, steps=STEPS, lr=LR)
    ref = tb.finetune(t.torch_model, t.oracle_steps(r.eval_batches), list(t.sites), steps=STEPS, lr=LR)

    kernels = es.base_kernels(r.eval_spec, r.params)
    for step in range(r.config.eval.steps):
        before = kernels
        kernels, losses = step_program(ft, r.params, kernels, es.at_step(r.eval_batches.edit, step))
        assert_close(losses, ref["losses"][step].numpy(), REL, f"ft step {step} losses")
        for site in t.sites:
            delta = np.asarray(kernels[site], np.float64) - np.asarray(before[site], np.float64)
            ref_delta = ref["shifts"][step][site].numpy()
            # Adam moves every weight by about LR per step, so the change is held to REL of LR.
            margins.check(
                f"parity ft step {step} {site} post-Adam change (lr)", np.abs(delta - ref_delta).max() / LR, 1e-3
            )
    assert float(ref["losses"][-1][-1]) < float(ref["losses"][-1][0])  # the steps do reduce the loss

    # The whole stream as one program (the method's path) ends at the same kernels; then the scores.
    final, _ = finetune.edit_sequence(ft, r.params, r.eval_batches)
    for site in t.sites:
        np.testing.assert_allclose(np.asarray(final[site]), np.asarray(kernels[site]), rtol=0, atol=1e-6)
    scores, rows = evaluation.score(r.eval_spec, r.params, final, r.eval_batches)
    check_scores(r, scores, rows, ref)
    metrics = lifelong.run_method(r, str(tmp_path))
    assert metrics["train_seconds"] is None
    for k, v in scores.items():
        margins.check(f"run_method {k}", abs(metrics[k] - float(v)), 1e-6)
