"""README "Where we differ from the reference on purpose": each difference shown against the real reference
code, with its measured size (printed with -s as `reference divergence <what>: ...`).

Unit cases use the shapes of test_units ((24, 16) sites, random rows); whole-run cases the tiny GPT-J and
zsRE rows of harness.zsre_setup (kernel [128, 32]).
"""

import numpy as np
import pytest
import torch

from tests import margins
from tests.reference import harness, ours, refkit

pytestmark = [
    pytest.mark.reference,
    pytest.mark.filterwarnings("ignore:Full backward hook is firing"),
    pytest.mark.filterwarnings("ignore:var.*degrees of freedom"),  # The reference's 1-row variance.
]

SHAPE = (24, 16)


def rows(rng, n, width, offset=0.0, scale=1.0):
    return (offset + scale * rng.standard_normal((n, width))).astype(np.float32)


def editor_state(seed):
    return ours.init_hypernets({SHAPE: 1}, rank=8, n_blocks=2, lr=0.1, seed=seed, perturb=0.3)


# A micro-batch with a single answer row ---------------------------------------------------------------


def test_single_row_normaliser_update(ref):
    """The reference's unbiased variance of one row is NaN, and stays in its statistics forever; ours takes
    that row's variance term as 0. The mean is unaffected on both sides."""
    rng = np.random.default_rng(0)
    width = sum(SHAPE)
    theirs, state = ref.nets.RunningMeanStd(width), ours.normaliser_init(width)
    for step, n in enumerate([5, 1, 4]):
        x = rows(rng, n, width, 1.0, 2.0)
        before = {k: getattr(theirs, k).numpy().copy() for k in ("n", "mean", "var")}
        theirs.update(torch.from_numpy(x))
        state = ours.normaliser_update(state, x)
        stats = ours.normaliser_stats(state)
        refkit.check(f"divergence single-row normaliser mean, update {step}", stats["mean"], theirs.mean.numpy(), 1e-6)
        assert np.isfinite(stats["var"]).all() and np.isfinite(stats["std"]).all()
        if step == 0:
            refkit.check("divergence single-row normaliser var, update 0", stats["var"], theirs.var.numpy(), 1e-6)
        else:
            assert np.isnan(theirs.var.numpy()).all() and np.isnan(theirs.std.numpy()).all()
        if step == 1:
            # DESIGN's merge with var_b := 0 for the one row, from the reference's statistics before it.
            n, delta = before["n"][0], x[0] - before["mean"]
            expected = before["var"] + n * delta**2 / (n + 1)
            refkit.check("divergence single-row normaliser var (var_b = 0)", stats["var"], expected, 1e-6)
    print("reference divergence single-row normaliser: reference std NaN after the 1-row merge, ours finite")


def test_single_row_micro_batch_shift(ref, tmp_path):
    """Through `cache`-ordered normaliser merges and `predict_param_shifts`: a step whose micro-batch 1 holds
    one answer row gives the reference a NaN shift; ours is finite."""
    nets, norms = editor_state(1)
    editor = harness.fake_editor(ref, tmp_path, [SHAPE], nets, norms, n_edits=6, batch_size=2, row_chunk=128)
    rng = np.random.default_rng(2)
    counts = [4, 1, 3]
    keys = [rows(rng, n, SHAPE[0], 0.2, 1.5) for n in counts]
    grads = [rows(rng, n, SHAPE[1], 0.0, 0.3) for n in counts]
    harness.write_cache(editor, 0, keys, grads)
    for k, g in zip(keys, grads):  # BaseEditor.cache's merges, micro-batch by micro-batch.
        editor.net[str(SHAPE)].normalizer.update(torch.from_numpy(np.concatenate([k, g], -1)))
    theirs = editor.predict_param_shifts()["layers.0"].numpy()

    width = max(counts)
    pad = lambda blocks, d: np.stack([np.concatenate([b, np.zeros((width - len(b), d), np.float32)]) for b in blocks])
    mask = np.arange(width)[None] < np.array(counts)[:, None]
    captures = {"layers.0": (pad(keys, SHAPE[0]), pad(grads, SHAPE[1]), mask)}
    norms = ours.step_normaliser_update([("layers.0", SHAPE)], norms, captures)
    mine = ours.shift_matrix(nets, norms, SHAPE, np.concatenate(keys), np.concatenate(grads), np.ones(8, bool), 0)
    nan, largest = np.isnan(theirs).all(), np.abs(mine).max()
    print(f"reference divergence single-row shift: reference all NaN {nan}, ours finite, |S|max {largest:.3e}")
    assert np.isnan(theirs).all()
    assert np.isfinite(mine).all() and np.abs(mine).max() > 0


# batch_size not dividing n_edits ----------------------------------------------------------------------


def test_ragged_micro_batch_value_grads(ref, tmp_path):
    """With n_edits = 5 and batch_size = 2 the reference does not crash: its `predict_param_shifts` loads the
    keys of ceil(5 / 2) = 3 micro-batches but the value-gradients of 5 // 2 = 2, so the ragged micro-batch's
    keys meet zero value-gradients (pad_tensor's padding). Ours uses the real ones. Shown exactly: the
    reference's shift is ours with those value-gradients zeroed."""
    nets, norms = editor_state(3)
    for n in (7, 4):
        norms[SHAPE] = ours.normaliser_update(norms[SHAPE], rows(np.random.default_rng(n), n, sum(SHAPE), 0.5, 2.0))
    editor = harness.fake_editor(ref, tmp_path, [SHAPE], nets, norms, n_edits=5, batch_size=2, row_chunk=4)
    rng = np.random.default_rng(4)
    counts = [4, 3, 2]
    keys = [rows(rng, n, SHAPE[0], 0.2, 1.5) for n in counts]
    grads = [rows(rng, n, SHAPE[1], 0.0, 0.3) for n in counts]
    harness.write_cache(editor, 0, keys, grads)
    theirs = editor.predict_param_shifts()["layers.0"].numpy()

    k, g, mask = np.concatenate(keys), np.concatenate(grads), np.ones(sum(counts), bool)
    zeroed = g.copy()
    zeroed[sum(counts[:2]) :] = 0.0
    # d_in x d_in solve vs N x N Cholesky in float32: 1e-4 (as test_units' shift).
    refkit.check(
        "divergence ragged: reference = ours with zero value-grads",
        ours.shift_matrix(nets, norms, SHAPE, k, zeroed, mask, 0),
        theirs,
        1e-4,
    )
    err = refkit.max_rel_err(ours.shift_matrix(nets, norms, SHAPE, k, g, mask, 0), theirs)
    print(f"reference divergence ragged micro-batch shift (ours with real value-grads vs reference): {err:.2e}")
    assert err > 1e-2


def test_ragged_micro_batch_end_to_end(ref, tiny_model, tmp_path):
    """The same on whole runs (n_edits 5, batch_size 2): both run; the shifts differ from step 0 on."""
    setup, theirs, mine = harness.both_runs(ref, tiny_model, tmp_path, [harness.SITE], n_edits=5, num_seq=2)
    err = refkit.max_rel_err(mine["trace"][f"train/step0/{harness.SITE}/shift"], theirs["shifts"][0][harness.SITE])
    print(f"reference divergence ragged micro-batch, e2e step 0 shift: {err:.2e}")
    assert err > 1e-2
    assert all(np.isfinite(mine["metrics"][k]) for k in ("ES", "GS", "LS"))


def test_batch_size_over_n_edits(ref, tiny_model, tmp_path):
    """batch_size > n_edits: the reference crashes (it loads 3 // 4 = 0 value-gradient files, an empty
    torch.cat); ours refuses the config before any work (a one-line error naming data.batch_size)."""
    setup = harness.zsre_setup(tiny_model, [harness.SITE], n_edits=3, batch_size=4, num_seq=1)
    # torch.cat's error type depends on the torch version (ValueError in 2.13, RuntimeError before).
    with pytest.raises((RuntimeError, ValueError), match="non-empty list of Tensors"):
        harness.run_reference(ref, setup, tmp_path / "reference", run=False)
    with pytest.raises(ours.ConfigError, match="data.batch_size"):
        harness.run_ours(setup, tmp_path / "ours", tmp_path / "reference" / "initial.npz")


# The L2 term ----------------------------------------------------------------------------------------


def test_l2_term_is_differentiated(ref, single_site, tmp_path):
    """reg_coef > 0 leaves the reference's gradient bitwise unchanged (its shift is built without autograd);
    ours adds reg_coef * d||S||^2 / d nets."""
    setup, theirs0, mine0 = single_site
    reg = harness.zsre_setup(setup.model_dir, setup.sites, reg_coef=1e-4)  # The paper's value.
    theirs = harness.run_reference(ref, reg, tmp_path / "reference", run=False)
    for name, value in theirs0["initial"].items():
        np.testing.assert_array_equal(theirs["initial"][name], value)
    for name, g in theirs0["grads"].items():
        np.testing.assert_array_equal(theirs["grads"][name], g, err_msg=name)
    mine = harness.run_ours(reg, tmp_path / "ours", tmp_path / "reference" / "initial.npz")
    g0, g1 = harness.trace_grads(mine0["trace"]), harness.trace_grads(mine["trace"])
    err = max(refkit.max_rel_err(g1[name], g0[name]) for name in g0)
    print(f"reference divergence L2 (reg_coef 1e-4): ours' gradient moves by {err:.2e}, the reference's by 0")
    assert err > 1e-3


# Several edit sites: the locality gradient ------------------------------------------------------------


@pytest.fixture(scope="module")
def two_sites(ref, favoured_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("two_sites")
    with_loc = harness.both_runs(ref, favoured_model, root / "loc", harness.SITES)
    without_loc = harness.both_runs(ref, favoured_model, root / "no_loc", harness.SITES, loc_coef=0.0)
    return with_loc, without_loc


def test_two_sites_shifts_equal(two_sites):
    """Within a sequence the nets are fixed, so the training shifts do not depend on the locality backward:
    equal on both sides. Evaluation runs the post-Adam nets, which inherit the gradient's difference; without
    the locality term (loc_coef 0) they are equal too."""
    (setup, theirs, mine), (_, theirs0, mine0) = two_sites
    for site in setup.sites:
        for run, splits in (("", ("train",)), (", loc_coef 0", ("train", "eval"))):
            record, trace = (theirs, mine["trace"]) if not run else (theirs0, mine0["trace"])
            for split in splits:
                offset = 0 if split == "train" else setup.num_seq
                for t in range(setup.num_seq):
                    # As the single-site end-to-end test: 1e-4.
                    refkit.check(
                        f"divergence two sites{run} {split} step {t} shift {site}",
                        trace[f"{split}/step{t}/{site}/shift"],
                        record["shifts"][offset + t][site],
                        1e-4,
                    )
        err = refkit.max_rel_err(mine["trace"][f"eval/step0/{site}/shift"], theirs["shifts"][setup.num_seq][site])
        print(f"reference divergence two sites, eval step 0 shift {site} after the differing Adam step: {err:.2e}")


def test_two_sites_locality_gradient(two_sites):
    """The reference runs the locality backward after reverting the shifts, so the gradient reaching
    layer 0's site through layer 1's (shifted) site uses layer 1's unshifted weight; ours differentiates the
    shifted model. Without the locality term (loc_coef 0) the gradients agree; with it they differ by a small
    measured amount."""
    (_, theirs, mine), (_, theirs0, mine0) = two_sites
    g0 = harness.trace_grads(mine0["trace"])
    for name, g in theirs0["grads"].items():
        # As the single-site end-to-end gradient: 1e-3.
        refkit.check(f"divergence two sites, loc_coef 0, grad {name}", g0[name], g, 1e-3)
    g1 = harness.trace_grads(mine["trace"])
    err = max(refkit.max_rel_err(g1[name], g) for name, g in theirs["grads"].items())
    print(f"reference divergence two sites, locality gradient: max relative difference {err:.2e}")
    assert 1e-3 < err < 0.5


# Numerics of the locality KL --------------------------------------------------------------------------


def test_small_kl_precision(ref):
    """Our KL works in logit differences (log1p / expm1); the reference subtracts two log-softmaxes, which in
    float32 loses ~1e-7 * log V absolute against a KL of ~5e-7 (one step's shift barely moves unrelated
    prompts). Against the reference's own kl_div in float64: ours within 1e-4, the reference's float32 not."""
    rng = np.random.default_rng(12)
    before = (2.0 * rng.standard_normal((3, 7, 1000))).astype(np.float32)
    labels = np.full((3, 7), -100)
    labels[:, 2:5] = rng.integers(0, 1000, (3, 3))
    after = before + (1e-3 * rng.standard_normal(before.shape)).astype(np.float32)
    t = torch.from_numpy
    exact = ref.util.kl_div(t(before).double(), t(after).double(), t(labels)).item()
    theirs = ref.util.kl_div(t(before), t(after), t(labels)).item()
    mine = ours.kl(before, after, labels)
    err_ours, err_theirs = abs(mine - exact) / exact, abs(theirs - exact) / exact
    print(f"reference divergence small KL ({exact:.2e}): error ours {err_ours:.2e}, reference f32 {err_theirs:.2e}")
    margins.check("small KL, ours vs float64", err_ours, 1e-4)
    assert err_theirs > 1e-2


# Paraphrase and neighbour draws --------------------------------------------------------------------------


def test_draws_are_seeded_per_row(ref, tmp_path):
    """Where a row offers a list (CounterFact paraphrases / neighbours, FEVER paraphrases) the reference draws
    with Python's global `random.choice` at every `__getitem__`; ours draws once per row from
    numpy.random.default_rng([seed, row]): the same facts for the same seed, whatever ran before."""
    if not refkit.COUNTERFACT_EASYEDIT.is_file() or not refkit.TOKENIZERS["gpt2"].is_dir():
        pytest.skip(f"shared CounterFact data or GPT-2 tokenizer not found under {refkit.SHARED}")
    import json
    import random

    path = tmp_path / "rome.json"
    path.write_text(json.dumps(refkit.rome_rows(json.loads(refkit.COUNTERFACT_EASYEDIT.read_text())[:41])))
    tok = ref.base_data.AutoTokenizer.from_pretrained(str(refkit.TOKENIZERS["gpt2"]))
    dataset = ref.counterfact.COUNTERFACTDataset(
        refkit.namespace(dict(batch_size=4, n_edits=8)), str(path), tok, "cpu"
    )

    def reference_draws(seed):
        random.seed(seed)
        return [dataset[i]["equiv_tuples"]["input_ids"][0].tolist() for i in range(len(dataset))]

    assert reference_draws(0) != reference_draws(1)
    draws = lambda seed: [ours.fact_texts(f)["equiv"][0] for f in ours.load_facts("counterfact", path, seed=seed)[0]]
    random.seed(1)
    first = draws(0)
    random.seed(2)
    assert draws(0) == first and draws(1) != first
    print("reference divergence draws: reference depends on the global random state, ours on (seed, row)")


# bf16 models -----------------------------------------------------------------------------------------


def test_bf16_shift_accumulation(ref, tiny_model):
    """On a bf16 model the reference adds each shift, rounded to bf16, to bf16 weights (`edit_model`), so
    shifts below half a bf16 ulp of the weight vanish; ours accumulates them on a float32 copy."""
    site = harness.SITE
    config = refkit.reference_config(
        cache_dir="unused", edit_modules=[site], n_edits=1, batch_size=1, model_path=tiny_model
    )
    config.model.half = True
    editor = ref.base.BaseEditor(config, ref.model.make_model(config.model))
    module = editor.model.get_submodule(site)
    base = module.weight.detach().float().numpy().T.astype(np.float64)  # [d_in, d_out]
    rng = np.random.default_rng(5)
    shifts = [(1e-5 * rng.standard_normal(base.shape)).astype(np.float32) for _ in range(64)]
    for s in shifts:
        editor.edit_model({site: torch.from_numpy(s)}, False)
    theirs = module.weight.detach().float().numpy().T.astype(np.float64)

    our_base, mine = ours.accumulate_shifts(tiny_model, site, shifts, "bfloat16")
    np.testing.assert_array_equal(our_base, base)  # The same bf16 rounding of the float32 checkpoint.
    total = np.sum(np.asarray(shifts, np.float64), axis=0)
    lost = lambda edited: np.linalg.norm(edited - base - total) / np.linalg.norm(total)
    print(f"reference divergence bf16: error / |sum of shifts|: reference {lost(theirs):.2e}, ours {lost(mine):.2e}")
    assert lost(theirs) > 0.5
    assert lost(mine) < 1e-3
