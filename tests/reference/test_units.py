"""Units of the official RLEdit (nets.py, util.py, editor/rledit.py) vs ours on random inputs.

Shapes: shape groups `(d_in, d_out)` = (24, 16) with two sites and (16, 24) with one; normaliser rows
`[R, d_in + d_out]`; one-micro-batch losses on logits `[B, L, V]` with labels `[B, L]` (-100 on prompt
and padding positions). Everything runs in float32 on both sides; each tolerance is stated where it is
checked, and `-s` prints every measured max relative error as `reference <unit>: <err>`.
"""

import numpy as np
import pytest
import torch

from tests.reference import harness, ours, refkit

pytestmark = pytest.mark.reference

GROUPS = {(24, 16): 2, (16, 24): 1}
# Site i of the fake model `layers.{i}`: (shape group, index within the group).
SITES = [((24, 16), 0), ((24, 16), 1), ((16, 24), 0)]
RANK, N_BLOCKS = 8, 2


def tensors(state):
    return {k: torch.from_numpy(np.array(v)) for k, v in state.items()}


def random_rows(rng, n, width, offset=0.0, scale=1.0):
    return (offset + scale * rng.standard_normal((n, width))).astype(np.float32)


# Normaliser -----------------------------------------------------------------------------------------


def test_normaliser_updates_and_forward(ref):
    rng = np.random.default_rng(0)
    width = 40
    theirs, state = ref.nets.RunningMeanStd(width), ours.normaliser_init(width)
    for step, rows in enumerate([5, 3, 9, 2, 17]):
        x = random_rows(rng, rows, width, offset=step - 2.0, scale=1.0 + step)
        theirs.update(torch.from_numpy(x))
        # Ours also gets padding rows (garbage, masked off), as a padded micro-batch hands them over.
        padded = np.concatenate([x, np.full((3, width), 1e30, np.float32)])
        state = ours.normaliser_update(state, padded, np.arange(rows + 3) < rows)
        stats = ours.normaliser_stats(state)
        # float32 sums over <= 36 rows, a few roundings each: 1e-5.
        for name in ("n", "mean", "var", "std"):
            refkit.check(f"normaliser update {step} {name}", stats[name], getattr(theirs, name).numpy(), 1e-5)
        probe = random_rows(rng, 6, width, scale=3.0)
        with torch.no_grad():
            expected = theirs(torch.from_numpy(probe)).numpy()
        refkit.check(f"normaliser forward {step}", ours.normalise(state, probe), expected, 1e-5)


def test_normaliser_two_sites_interleaved(ref):
    """Two sites of one shape share a normaliser: the reference's `BaseEditor.cache` merges micro-batch 0
    of site a, then of site b, then micro-batch 1 of a, ... Our step-level merge must group the same way
    (the reference's M depends on the grouping: it adds m * unbiased var per merge)."""
    rng = np.random.default_rng(1)
    shape, sites = (24, 16), [("a", (24, 16)), ("b", (24, 16))]
    n_micro, rows = 3, 6
    valid = [[6, 2, 4], [3, 5, 6]]  # Real rows per micro-batch, per site.
    captures = {}
    for (name, _), counts in zip(sites, valid):
        keys = np.stack([random_rows(rng, rows, 24, offset=m) for m in range(n_micro)])
        grads = np.stack([random_rows(rng, rows, 16, scale=0.1 * (m + 1)) for m in range(n_micro)])
        mask = np.arange(rows)[None, :] < np.array(counts)[:, None]
        captures[name] = (keys, grads, mask)
    theirs = ref.nets.RunningMeanStd(sum(shape))
    for m in range(n_micro):
        for name, _ in sites:
            k, g, mask = captures[name]
            theirs.update(torch.from_numpy(np.concatenate([k[m][mask[m]], g[m][mask[m]]], -1)))
    norms = ours.step_normaliser_update(sites, {shape: ours.normaliser_init(sum(shape))}, captures)
    stats = ours.normaliser_stats(norms[shape])
    for name in ("n", "mean", "var", "std"):
        # Six merges of <= 6 rows in float32: 1e-5.
        refkit.check(f"normaliser interleaved {name}", stats[name], getattr(theirs, name).numpy(), 1e-5)


# Hypernetwork, shift and its gradient -----------------------------------------------------------


def random_editor_state(seed: int):
    """Our nets, perturbed off the identity, with normalisers that have seen rows and non-trivial
    per-site lr / lamda."""
    rng = np.random.default_rng(seed)
    nets, norms = ours.init_hypernets(GROUPS, rank=RANK, n_blocks=N_BLOCKS, lr=1e-2, seed=seed, perturb=0.3)
    lr = {shape: rng.uniform(0.05, 0.2, n).astype(np.float32) for shape, n in GROUPS.items()}
    lamda = {shape: rng.uniform(-1.0, 1.0, n).astype(np.float32) for shape, n in GROUPS.items()}
    nets = ours.with_site_tables(nets, lr, lamda)
    for shape in GROUPS:
        for rows in (7, 4):
            norms[shape] = ours.normaliser_update(norms[shape], random_rows(rng, rows, sum(shape), 0.5, 2.0))
    return nets, norms


def test_hypernet_forward(ref):
    nets, norms = random_editor_state(2)
    theirs = torch.nn.ModuleDict(
        {str(shape): ref.nets.RLEditNet(*shape, RANK, N_BLOCKS, n, 1e-6) for shape, n in GROUPS.items()}
    )
    theirs.load_state_dict(tensors(ours.to_reference(nets, norms)))
    rng = np.random.default_rng(3)
    for shape, index in SITES:
        keys, grads = random_rows(rng, 9, shape[0], 0.3, 2.0), random_rows(rng, 9, shape[1], 0.0, 0.5)
        with torch.no_grad():
            k_ref, g_ref = theirs[str(shape)](torch.from_numpy(keys), torch.from_numpy(grads), torch.tensor([index]))
        k_ours, g_ours = ours.hypernet_forward(nets, norms, shape, keys, grads, index)
        # Two blocks of [9, 40] @ [40, 8] @ [8, 40] products in float32: 1e-5.
        refkit.check(f"hypernet forward {shape} site {index} k~", k_ours, k_ref.numpy(), 1e-5)
        refkit.check(f"hypernet forward {shape} site {index} g~", g_ours, g_ref.numpy(), 1e-5)


N_EDITS, BATCH_SIZE = 6, 2
ROWS = [5, 3, 6]  # Answer rows of the three micro-batches (ceil(6 / 2) = 3).


@pytest.fixture(scope="module")
def shift_case(ref, tmp_path_factory):
    """A reference RLEDIT over the sites alone, its cache files written as `BaseEditor.cache` writes them,
    its nets loaded from ours; `captures` holds what ours gets for the same rows, per site."""
    nets, norms = random_editor_state(4)
    # A row chunk of 4 (128 in the paper's config) makes the reference pad 14 rows to 16.
    editor = harness.fake_editor(
        ref,
        tmp_path_factory.mktemp("cache"),
        [shape for shape, _ in SITES],
        nets,
        norms,
        n_edits=N_EDITS,
        batch_size=BATCH_SIZE,
        row_chunk=4,
    )
    rng = np.random.default_rng(5)
    captures = {}
    for i, (shape, index) in enumerate(SITES):
        keys = [random_rows(rng, n, shape[0], 0.2, 1.5) for n in ROWS]
        grads = [random_rows(rng, n, shape[1], 0.0, 0.3) for n in ROWS]
        harness.write_cache(editor, i, keys, grads)
        # Ours gets the rows of a padded capture: 3 garbage rows, masked off, after the real ones.
        pad = np.full((3, 1), 7.0, np.float32)
        k_all = np.concatenate(keys + [np.repeat(pad, shape[0], 1)])
        g_all = np.concatenate(grads + [np.repeat(pad, shape[1], 1)])
        captures[f"layers.{i}"] = (shape, index, k_all, g_all, np.arange(len(k_all)) < sum(ROWS))
    return editor, nets, norms, captures


def test_predict_param_shifts(shift_case):
    editor, nets, norms, captures = shift_case
    shifts = editor.predict_param_shifts()
    for name, (shape, index, keys, grads, mask) in captures.items():
        ours_shift = ours.shift_matrix(nets, norms, shape, keys, grads, mask, index)
        # d_in x d_in solve (reference) vs N x N Cholesky (ours); Gram conditioning ~1e2 in float32: 1e-4.
        refkit.check(f"shift {name}", ours_shift, shifts[name].numpy(), 1e-4)


def test_update_hypernet_gradient_and_clipping(shift_case):
    """Two steps of `update_hypernet` (gradients accumulate on the nets, clip_grad_norm_ after each)
    vs our vjp of the shifts with the module gradients as cotangents, accumulated and clipped."""
    editor, nets, norms, captures = shift_case
    editor.opt.zero_grad()
    shifts = editor.predict_param_shifts()
    rng = np.random.default_rng(6)
    acc = None
    for step in range(2):
        sites = []
        for name, (shape, index, keys, grads, mask) in captures.items():
            module_grad = (3.0 * rng.standard_normal(shape)).astype(np.float32)  # [d_in, d_out]
            editor.model.get_submodule(name).weight.grad = torch.from_numpy(module_grad.T.copy())
            sites.append((shape, index, keys, grads, mask, module_grad))
        editor.update_hypernet(shifts, False)
        acc, norm = ours.accumulate_and_clip(acc, ours.shift_grads(nets, norms, sites), 1.0)
        print(f"reference update_hypernet step {step}: norm before clipping {float(norm):.3e}")
        assert float(norm) > 1.0, "the module gradients should be large enough for the clipping to act"
        acc_ref = ours.grads_to_reference(acc, norms)
        for name, p in editor.net.named_parameters():
            # Through the solve and two blocks, then a common clip factor, in float32: 1e-4. The lamda
            # gradient, -e^lamda <(K^T K + e^lamda I)^-1 G_W, S>, is a sum with cancellation (its entries are
            # ~1e-3 of the others), which the reference takes from a float32 d_in x d_in solve: against a
            # float64 recomputation ours was within 1e-6 and the reference within 4e-4 (relative): 2e-3.
            tol = 2e-3 if name.endswith("lamda.weight") else 1e-4
            refkit.check(f"hypernet grad step {step} {name}", acc_ref[name], p.grad.numpy(), tol)


# Losses and metrics -----------------------------------------------------------------------------------


def micro_batch(seed: int, vocab: int = 13):
    """Logits [3, 7, V] and labels with answers of 3, 1 and 2 tokens after prompts of 2, 5 and 1 tokens
    (rows padded to 7), so the answer positions are not aligned across rows."""
    rng = np.random.default_rng(seed)
    logits = (2.0 * rng.standard_normal((3, 7, vocab))).astype(np.float32)
    labels = np.full((3, 7), -100, np.int64)
    for row, (prompt, answer) in enumerate([(2, 3), (5, 1), (1, 2)]):
        labels[row, prompt - 1 : prompt - 1 + answer] = rng.integers(0, vocab, answer)
    return logits, labels


def test_cross_entropy(ref):
    logits, labels = micro_batch(7)
    expected = ref.util.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels)).item()
    # One log-softmax and a mean over 6 positions in float32: 1e-6.
    refkit.check("cross_entropy", ours.cross_entropy(logits, labels), expected, 1e-6)


def test_kl_div(ref):
    before, labels = micro_batch(8)
    after = before + np.random.default_rng(9).standard_normal(before.shape).astype(np.float32)
    expected = ref.util.kl_div(torch.from_numpy(before), torch.from_numpy(after), torch.from_numpy(labels)).item()
    # A KL of order 1 from log-softmax differences (reference) vs expm1 of logit differences (ours): 1e-5.
    refkit.check("kl_div", ours.kl(before, after, labels), expected, 1e-5)


def test_succ_ratios_token_accuracy(ref):
    logits, labels = micro_batch(10)
    # Plant argmax hits at some answer positions so the accuracies are not all 0.
    for row, col in [(0, 1), (0, 3), (1, 4), (2, 0), (2, 1)]:
        logits[row, col, labels[row, col]] = 50.0
    expected = ref.util.succ_ratios(torch.from_numpy(logits), torch.from_numpy(labels))
    assert 0 < np.mean(expected) < 1
    # Ratios of small counts: exact up to float32 division, 1e-7.
    refkit.check("succ_ratios token accuracy", ours.token_accuracy(logits, labels), np.array(expected), 1e-7)


# CounterFact's new-vs-old score: ragged answers of different lengths -------------------------------------

# Rows (prompt tokens, new answer tokens, old answer tokens) of two micro-batches. In the first the old
# answers' padded width (6) exceeds the labels' (5): the reference cuts old_labels; in the second the labels'
# width (5) exceeds the old answers' (4): it cuts labels, dropping new-answer tokens from the denominator.
COUNTERFACT_ROWS = [[(3, 3, 1), (5, 1, 2), (2, 2, 4)], [(2, 4, 1), (3, 1, 2)]]


def counterfact_micro_batch(ref, rows, seed: int, vocab: int = 128):
    """`(logits, labels, old_labels as the reference collates them, the token rows)`.

    The reference's side is its own `BaseDataset.pad_tok_tuples` on rows shaped like
    `COUNTERFACTDataset.tok_tuples` output: labels padded with -100, old_labels (to their own width) with 0.
    Ours lays the same token rows out itself (`ours.new_beats_old`; test_data checks that layout against
    the reference's collation of real rows). The vocabulary must exceed 100: the reference gathers logits
    at label -100 too (masked afterwards), indexing from the end.
    """
    rng = np.random.default_rng(seed)
    tuples, token_rows = [], []
    for p, a, o in rows:
        new, old = rng.integers(1, vocab, a), rng.integers(1, vocab, o)
        head = np.full(p - 1, -100)
        row = {
            "input_ids": rng.integers(0, vocab, p + a - 1),
            "attention_mask": np.ones(p + a - 1, np.int64),
            "labels": np.concatenate([head, new]),
            "old_labels": np.concatenate([head, old]),
        }
        tuples.append({k: torch.from_numpy(v)[None] for k, v in row.items()})
        token_rows.append({k: row[k] for k in ("input_ids", "labels", "old_labels")})
    padded = ref.base_data.BaseDataset.pad_tok_tuples(refkit.namespace(dict(device="cpu")), tuples)
    labels, old_ref = padded["labels"].numpy(), padded["old_labels"].numpy()
    logits = rng.standard_normal((*labels.shape, vocab)).astype(np.float32)
    # The new answer wins at its first position and at about half of the others, so no score is trivially 0.
    wins = rng.random(labels.shape) < 0.5
    wins[np.arange(len(rows)), [p - 1 for p, _, _ in rows]] = True
    np.put_along_axis(logits, np.where(labels >= 0, labels, 0)[..., None], np.where(wins, 10.0, -10.0)[..., None], -1)
    return logits, labels, old_ref, token_rows


def design_formula(logits, labels, old_labels):
    """DESIGN section 3, written from its text: cut both padded label arrays to the shorter padded width; a
    position succeeds when both labels are set (!= -100; the reference's 0 padding of old_labels counts as
    set) and new beats old; divide by the new-answer tokens left after the cut."""
    width = min(labels.shape[1], old_labels.shape[1])
    labels, old_labels = labels[:, :width], old_labels[:, :width]
    valid = (labels != -100) & (old_labels != -100)
    pick = lambda ids: np.take_along_axis(logits[:, :width], np.where(valid, ids, 0)[..., None], -1)[..., 0]
    wins = (pick(labels) > pick(old_labels)) & valid
    return wins.sum(-1) / (labels != -100).sum(-1)


def reference_succ_ratios(ref, logits, labels, old_ref):
    args = (torch.from_numpy(logits), torch.from_numpy(labels), torch.from_numpy(old_ref))
    return np.array(ref.util.succ_ratios(*args))


@pytest.mark.parametrize("case", range(len(COUNTERFACT_ROWS)))
def test_succ_ratios_old_labels_is_the_design_formula(ref, case):
    logits, labels, old_ref, _ = counterfact_micro_batch(ref, COUNTERFACT_ROWS[case], case)
    assert (old_ref == 0).any(), "the case should hold old_labels padding (0 in the reference)"
    refkit.check(
        f"succ_ratios old_labels vs DESIGN formula, case {case}",
        design_formula(logits, labels, old_ref),
        reference_succ_ratios(ref, logits, labels, old_ref),
        1e-7,
    )


@pytest.mark.parametrize("case", range(len(COUNTERFACT_ROWS)))
def test_new_beats_old_equals_succ_ratios(ref, case):
    logits, labels, old_ref, rows = counterfact_micro_batch(ref, COUNTERFACT_ROWS[case], case)
    refkit.check(
        f"new_beats_old case {case}",
        ours.new_beats_old(logits, rows),
        reference_succ_ratios(ref, logits, labels, old_ref),
        1e-6,
    )


@pytest.mark.parametrize("move", [1.0, 100.0, 1e3])
def test_kl_div_equal_at_large_logit_moves(ref, move):
    """One token's logit moved by `move` everywhere, up to far past where a float32 exp overflows (~88):
    ours equals the reference's `kl_div`. (Small moves, where the reference's float32 difference of
    log-softmaxes loses accuracy, are a listed difference: test_divergences.)"""
    before, labels = micro_batch(11)
    after = before.copy()
    after[:, :, 3] += move
    expected = ref.util.kl_div(torch.from_numpy(before), torch.from_numpy(after), torch.from_numpy(labels)).item()
    assert np.isfinite(expected) and expected > 0
    refkit.check(f"kl_div at a {move:g}-logit move", ours.kl(before, after, labels), expected, 1e-5)
