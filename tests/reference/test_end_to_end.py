"""End to end: the reference's `RLEDIT.run` vs our `train_and_evaluate` (see harness.py).

A tiny random float32 GPT-J (n_embd 32, 2 layers, GPT-2 vocabulary), one edit site
`transformer.h.1.mlp.fc_out` (kernel [128, 32]), zsRE rows, T = 3 training steps and 3 evaluation steps
of n_edits = 4 facts in micro-batches of 2, one epoch, back_depth 2, reg_coef 0 (the reference never
differentiates the L2 term), and the same perturbed initial hypernetwork on both sides. Compared: every
step's shift (train and eval), the accumulated clipped gradient before the Adam step, the post-Adam
parameters and normaliser statistics, the first step's losses, and ES / GS / LS. The model's lm_head
favours the evaluation rows' most common answer tokens (harness.favoured_model), so the scores are not all
0. The runs are the session fixture `single_site` (conftest.py), shared with test_divergences.
"""

import numpy as np
import pytest

from tests import margins
from tests.reference import refkit
from tests.reference.harness import SITE, trace_grads

# The reference's capture hooks a module whose inputs need no gradient; torch warns about it.
pytestmark = [pytest.mark.reference, pytest.mark.filterwarnings("ignore:Full backward hook is firing")]


def test_every_shift(single_site):
    setup, theirs, mine = single_site
    assert len(theirs["shifts"]) == 2 * setup.num_seq
    for split, offset in (("train", 0), ("eval", setup.num_seq)):
        for t in range(setup.num_seq):
            # Step 0 differs by float32 forward/backward rounding (~1e-6); later steps go through the
            # earlier shifts (and eval through the post-Adam nets): 1e-4.
            refkit.check(
                f"e2e {split} step {t} shift",
                mine["trace"][f"{split}/step{t}/{SITE}/shift"],
                theirs["shifts"][offset + t][SITE],
                1e-4,
            )


def test_first_step_losses(single_site):
    setup, theirs, mine = single_site
    # Step 0's window holds one step, so the reference's logged means are our per-step sums; its loc_loss
    # includes loc_coef. A float32 CE / KL through the model: 1e-5.
    logged = theirs["logged"][0]
    refkit.check("e2e step 0 gen_loss", mine["trace"]["train/step0/gen_loss"], logged["gen_loss"], 1e-5)
    loc = setup.editor["loc_coef"] * mine["trace"]["train/step0/loc_loss"]
    assert logged["loc_loss"] > 1e-6, "the shifts should move the locality distributions measurably"
    refkit.check("e2e step 0 loc_loss", loc, logged["loc_loss"], 1e-4)


def test_accumulated_clipped_gradient(single_site):
    _, theirs, mine = single_site
    grads = trace_grads(mine["trace"])
    assert grads.keys() == theirs["grads"].keys()
    norm = np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in theirs["grads"].values()))
    print(f"reference e2e accumulated grad: global norm {norm:.4f} (max_grad_norm 1: 1 when the last clip acted)")
    for name, g in theirs["grads"].items():
        # Backward through the model, the solve and the blocks, summed over 3 steps and clipped, in float32
        # on both sides: 1e-3 of each parameter's largest entry.
        refkit.check(f"e2e accumulated grad {name}", grads[name], g, 1e-3)


def test_post_adam_parameters_and_normaliser(single_site):
    setup, theirs, mine = single_site
    meta_lr, adam_eps = setup.editor["meta_lr"], 1e-8
    grads = trace_grads(mine["trace"])
    for name, value in theirs["after_train"].items():
        if ".normalizer." in name:
            # Running statistics of 3 steps x 2 micro-batches of captured rows, float32: 1e-5.
            refkit.check(f"e2e normaliser after training {name}", mine["hypernet"][name], value, 1e-5)
            continue
        # Adam's first step is -meta_lr * g / (|g| + eps): about meta_lr * sign(g), but where |g| ~ eps its
        # derivative eps / (|g| + eps)^2 turns the gradients' float32 difference into a visible one. Allowed, in
        # units of meta_lr: 1e-2 plus that derivative times the measured gradient difference.
        g_ours, g_ref = grads[name], theirs["grads"][name]
        small = np.minimum(np.abs(g_ours), np.abs(g_ref))
        allowed = 1e-2 + np.abs(g_ours - g_ref) * adam_eps / (small + adam_eps) ** 2
        diff = np.abs(mine["hypernet"][name] - value) / meta_lr
        moved = np.abs(value - theirs["initial"][name]).max() / meta_lr
        print(f"reference e2e post-Adam {name}: {diff.max():.2e} meta_lr (moved {moved:.2f} meta_lr)")
        margins.check(f"e2e post-Adam {name} (of the allowed difference)", (diff / allowed).max(), 1.0)


def test_es_gs_ls(single_site):
    _, theirs, mine = single_site
    (scores,) = [d for d in theirs["logged"] if "ES" in d]
    assert max(scores.values()) > 0, "the favoured tokens should make some score non-zero"
    for name in ("ES", "GS", "LS"):
        print(f"reference e2e {name}: ours {mine['metrics'][name]:.4f}, reference {scores[name]:.4f}")
        # Means of per-row token accuracies (ratios of small counts): equal up to float rounding.
        margins.check(f"e2e {name}", abs(mine["metrics"][name] - scores[name]), 1e-6)
