"""Self-checks of the trajectory-gradient oracle (tests/oracle/torch_unrolled.py).

CPU only, float64, tiny random GPT-J (helpers from test_oracle_selfcheck); no downloads.

Finite differences: directions are random per parameter tensor, scaled by the tensor's RMS (the
hypernetwork's ``lr`` is ~3e-5 while the other params are O(1), so an isotropic direction would be
all ``lr``); the models use ``full_precision_attention`` (HF's eager GPT-J attention computes q.k^T
in float32, which limits a "float64" finite difference to ~1e-3 relative agreement or worse).
"""

import copy

import numpy as np
import pytest
import torch

from tests.oracle import torch_rledit as orc
from tests.oracle import torch_unrolled as tu
from tests.oracle.test_selfcheck import SITES, make_mb, make_nets, randomise_nets, tiny_model

LR = 3e-5  # shifts of norm ~0.5 on site weights of norm ~9: trajectory matters, losses stay sane
FD_H = 1e-6  # relative step (directions are RMS-scaled)
FD_RTOL = 1e-6


def make_step(rng, L=9):
    # two edit micro-batches (normaliser merges per micro-batch), one equiv / unrel (keeps it fast)
    return {
        "edit": [make_mb(rng, 2, L), make_mb(rng, 1, L)],
        "equiv": [make_mb(rng, 3, L)],
        "unrel": [make_mb(rng, 3, L)],
    }


def setup(T, seed=0, back_depth=2):
    model = tu.full_precision_attention(tiny_model())
    nets = make_nets(model, lr=LR)
    randomise_nets(nets, scale=0.2)
    g = torch.Generator().manual_seed(100 + seed)
    with torch.no_grad():
        for net in nets.values():
            net.lr.weight.mul_(1 + 0.2 * torch.randn(net.lr.weight.shape, generator=g, dtype=torch.float64))
            net.lamda.weight.copy_(0.3 * torch.randn(net.lamda.weight.shape, generator=g, dtype=torch.float64))
    rng = np.random.default_rng(seed)
    steps = [make_step(rng) for _ in range(T)]
    cfg = orc.OracleConfig(
        back_depth=back_depth, time_decay=0.9, loc_coef=0.6, reg_coef=0.5, max_grad_norm=1e12, token="ans"
    )
    return model, nets, steps, cfg


def run_mode(model, nets, steps, cfg, mode, **kw):
    """(sequence_loss result, grads) on a deep copy of the nets (their normalisers stay as is)."""
    copy_ = copy.deepcopy(nets)
    res = tu.sequence_loss(model, copy_, steps, SITES, cfg, mode, **kw)
    named = list(copy_.named_parameters())
    grads = torch.autograd.grad(res["total"], [p for _, p in named], allow_unused=True)
    grads = {name: g if g is not None else torch.zeros_like(p) for (name, p), g in zip(named, grads)}
    return res, grads


@pytest.fixture(scope="module")
def case3():
    """T=3, back_depth=2: every mode's forward result and gradient, computed once."""
    model, nets, steps, cfg = setup(T=3, back_depth=2)
    runs = {mode: run_mode(model, nets, steps, cfg, mode) for mode in tu.MODES}
    return dict(
        model=model,
        nets=nets,
        steps=steps,
        cfg=cfg,
        res={m: r for m, (r, _) in runs.items()},
        grads={m: g for m, (_, g) in runs.items()},
    )


def flat(grads):
    return torch.cat([g.flatten() for _, g in sorted(grads.items())])


def rms_directions(nets, n, seed):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        out.append(
            {
                name: torch.randn(p.shape, generator=g, dtype=torch.float64) * p.detach().pow(2).mean().sqrt()
                for name, p in nets.named_parameters()
            }
        )
    return out


def directional(grads, v):
    return sum(float((grads[name] * v[name]).sum()) for name in v)


def total_at(c, v, h, **kw):
    """Sequence total with the params moved by h*v, from the nets' normaliser state."""
    moved = copy.deepcopy(c["nets"])
    with torch.no_grad():
        for name, p in moved.named_parameters():
            p.add_(h * v[name])
        return float(tu.sequence_loss(c["model"], moved, c["steps"], SITES, c["cfg"], "stop_carry", **kw)["total"])


def central_fd(c, v, **kw):
    return (total_at(c, v, FD_H, **kw) - total_at(c, v, -FD_H, **kw)) / (2 * FD_H)


# --------------------------------------------------------------------------------------------------


def test_forward_matches_train_sequence_and_model_untouched(case3):
    """Forward values equal torch_rledit.train_sequence's, in every mode; the model is not modified;
    normalisers are updated once per step / micro-batch / site; snapshot/restore round-trips."""
    model, nets, steps, cfg = (case3[k] for k in ("model", "nets", "steps", "cfg"))
    w0 = {name: p.detach().clone() for name, p in model.named_parameters()}
    ref_nets = copy.deepcopy(nets)
    trace = orc.train_sequence(model, ref_nets, torch.optim.SGD(ref_nets.parameters(), lr=0.0), steps, SITES, cfg)[
        "steps"
    ]
    for mode in tu.MODES:
        res = case3["res"][mode]
        assert len(res["loss"]) == 3
        for t, rec in enumerate(trace):
            for s in SITES:
                torch.testing.assert_close(res["K"][t][s], rec["K"][s], rtol=1e-10, atol=1e-12)
                torch.testing.assert_close(res["G"][t][s], rec["G"][s], rtol=1e-10, atol=1e-14)
                torch.testing.assert_close(res["shifts"][t][s].detach(), rec["shifts"][s], rtol=1e-9, atol=1e-12)
                assert res["shifts"][t][s].abs().max() > 1e-3
            for name in ("loss", "gen_loss", "loc_loss", "reg"):
                torch.testing.assert_close(res[name][t].detach(), rec[name], rtol=1e-9, atol=1e-14)
            for key in nets:
                for b in ("n", "mean", "var", "std"):
                    torch.testing.assert_close(
                        res["norm_stats"][t][key][b], rec["norm_stats"][key][b], rtol=1e-10, atol=1e-14
                    )
        torch.testing.assert_close(res["total"].detach(), sum(rec["loss"] for rec in trace), rtol=1e-9, atol=0)
    for name, p in model.named_parameters():
        assert torch.equal(p, w0[name]), name
    # normalisers mutated exactly as train_sequence does; snapshot / restore round-trips
    mine = copy.deepcopy(nets)
    before = tu.snapshot_normalisers(mine)
    res = tu.sequence_loss(
        model, mine, steps, SITES, cfg, "unrolled", frozen_captures=case3["res"]["unrolled"]["captured"]
    )
    for key in nets:
        assert torch.equal(mine[key].normalizer.n, ref_nets[key].normalizer.n)
        torch.testing.assert_close(mine[key].normalizer.std, ref_nets[key].normalizer.std, rtol=1e-10, atol=1e-14)
    tu.restore_normalisers(mine, before)
    for key in nets:
        for b in ("n", "mean", "var", "std"):
            assert torch.equal(getattr(mine[key].normalizer, b), getattr(nets[key].normalizer, b))
    # frozen captures / frozen stats reproduce the same values
    torch.testing.assert_close(res["total"], case3["res"]["unrolled"]["total"], rtol=1e-12, atol=0)
    frozen = tu.sequence_loss(
        model, copy.deepcopy(nets), steps, SITES, cfg, "unrolled", frozen_norm_stats=res["norm_stats"]
    )
    torch.testing.assert_close(frozen["total"], res["total"], rtol=1e-12, atol=0)
    with pytest.raises(ValueError):
        tu.sequence_loss(
            model, copy.deepcopy(nets), steps, SITES, cfg, "unrolled_second_order", frozen_captures=res["captured"]
        )
    with pytest.raises(ValueError):
        tu.sequence_loss(model, copy.deepcopy(nets), steps, SITES, cfg, "reference")


def test_T1_all_modes_identical():
    model, nets, steps, cfg = setup(T=1)
    grads = {mode: tu.sequence_grads(model, copy.deepcopy(nets), steps, SITES, cfg, mode) for mode in tu.MODES}
    ref = grads["stop_carry"]
    assert flat(ref).abs().max() > 0
    for mode in ("unrolled", "unrolled_second_order"):
        for name in ref:
            torch.testing.assert_close(
                grads[mode][name],
                ref[name],
                rtol=1e-12,
                atol=1e-15,
                msg=lambda m, name=name, mode=mode: f"{mode} {name}: {m}",
            )


def test_stop_carry_equals_sum_of_reference_step_grads(case3):
    model, nets, steps, cfg = (case3[k] for k in ("model", "nets", "steps", "cfg"))
    mine = case3["grads"]["stop_carry"]
    ref_nets = copy.deepcopy(nets)
    trace = orc.train_sequence(model, ref_nets, torch.optim.SGD(ref_nets.parameters(), lr=0.0), steps, SITES, cfg)[
        "steps"
    ]
    accumulated = trace[-1]["grads"]  # max_grad_norm huge: clipping multiplies by exactly 1
    assert set(mine) == set(accumulated)
    assert float(trace[-1]["grad_norm"]) < cfg.max_grad_norm
    scale = float(flat(accumulated).abs().max())
    for name in mine:
        torch.testing.assert_close(
            mine[name], accumulated[name], rtol=1e-8, atol=1e-10 * scale, msg=lambda m, name=name: f"{name}: {m}"
        )


def test_unrolled_matches_fd_with_frozen_captures(case3):
    """d/dθ of the sequence loss with K_t, G_t (and thus the normaliser stats) frozen at the
    recorded unperturbed values == the "unrolled" gradient."""
    grads, sc = case3["grads"]["unrolled"], case3["grads"]["stop_carry"]
    captured = case3["res"]["unrolled"]["captured"]
    for v in rms_directions(case3["nets"], 3, seed=7):
        analytic = directional(grads, v)
        fd = central_fd(case3, v, frozen_captures=captured)
        np.testing.assert_allclose(analytic, fd, rtol=FD_RTOL)
        # the trajectory term is visible along this direction
        assert abs(analytic - directional(sc, v)) > 1e-3 * abs(analytic)


def test_second_order_matches_fd_of_plain_loss(case3):
    """The "unrolled_second_order" gradient is the exact derivative of the plain sequence loss:
    central finite differences with NOTHING frozen (captures and the normaliser statistics within
    the sequence recomputed at the perturbed parameters)."""
    grads, first = case3["grads"]["unrolled_second_order"], case3["grads"]["unrolled"]
    for v in rms_directions(case3["nets"], 3, seed=8):
        analytic = directional(grads, v)
        fd = central_fd(case3, v)
        np.testing.assert_allclose(analytic, fd, rtol=FD_RTOL)
        # the K/G path is visible along this direction
        assert abs(analytic - directional(first, v)) > 1e-3 * abs(analytic)


def test_second_order_frozen_norm_stats_matches_fd_with_frozen_stats(case3):
    """With ``frozen_norm_stats`` the statistics are constants (the former semantics): the gradient
    matches finite differences of the loss with the statistics held at the same values, and differs
    from the exact gradient by the statistics' path."""
    stats = case3["res"]["unrolled"]["norm_stats"]
    _, grads = run_mode(
        case3["model"], case3["nets"], case3["steps"], case3["cfg"], "unrolled_second_order", frozen_norm_stats=stats
    )
    exact = case3["grads"]["unrolled_second_order"]
    for v in rms_directions(case3["nets"], 3, seed=9):
        analytic = directional(grads, v)
        fd = central_fd(case3, v, frozen_norm_stats=stats)
        np.testing.assert_allclose(analytic, fd, rtol=FD_RTOL)
        # the normaliser-statistics path is visible along this direction
        assert abs(analytic - directional(exact, v)) > 1e-3 * abs(analytic)


def test_trajectory_changes_the_gradient(case3):
    # compare in RMS-scaled coordinates (grad * rms(param)): the raw norm is all lr's gradient
    rms = {name: p.detach().pow(2).mean().sqrt() for name, p in case3["nets"].named_parameters()}
    g = {mode: flat({n: gr * rms[n] for n, gr in case3["grads"][mode].items()}) for mode in tu.MODES}
    norm = float(g["stop_carry"].norm())
    assert norm > 0
    assert float((g["unrolled"] - g["stop_carry"]).norm()) > 0.03 * norm
    assert float((g["unrolled_second_order"] - g["unrolled"]).norm()) > 0.03 * norm
    # every hypernet param gets a gradient (no accidental detach)
    for mode in tu.MODES:
        for name, gr in case3["grads"][mode].items():
            assert gr.abs().max() > 0, (mode, name)


def test_merge_stats_matches_normalizer_update():
    """merge_stats reproduces Normalizer.update bit for bit (m >= 2, m = 1, m = 0), keeps the graph,
    and its gradient matches finite differences."""
    g = torch.Generator().manual_seed(3)
    norm = orc.Normalizer(5, torch.float64)
    stats = {k: v.clone() for k, v in norm.state_dict().items()}
    xs = [torch.randn(m, 5, generator=g, dtype=torch.float64) for m in (3, 1, 0, 4)]
    for x in xs:
        norm.update(x)
        stats = tu.merge_stats(stats, x, norm.eps)
        for name in ("n", "mean", "var", "std"):
            assert torch.equal(stats[name], getattr(norm, name)), name
    x = xs[-1].clone().requires_grad_(True)
    base = {k: v.clone() for k, v in norm.state_dict().items()}
    w = torch.randn(5, generator=g, dtype=torch.float64)

    def f(x):
        s = tu.merge_stats(base, x, norm.eps)
        return (s["std"] * w).sum() + (s["mean"] * w).sum()

    (grad,) = torch.autograd.grad(f(x), [x])
    v = torch.randn(x.shape, generator=g, dtype=torch.float64)
    h = 1e-6
    fd = (f(x.detach() + h * v) - f(x.detach() - h * v)) / (2 * h)
    np.testing.assert_allclose(float((grad * v).sum()), float(fd), rtol=1e-7)
