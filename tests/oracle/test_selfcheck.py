"""Self-checks of the torch RLEdit oracle (tests/oracle/torch_rledit.py) against independent arithmetic.

CPU only, tiny random GPT-J built here; no downloads.
"""

import copy

import numpy as np
import pytest
import torch
from transformers import GPTJConfig, GPTJForCausalLM

from tests.oracle import torch_rledit as orc

VOCAB = 97
SITES = [
    "transformer.h.0.mlp.fc_out",  # (64, 32)
    "transformer.h.1.mlp.fc_in",  # (32, 64)
    "transformer.h.1.mlp.fc_out",  # (64, 32): shares a net with h.0.mlp.fc_out
]


def tiny_model(dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    config = GPTJConfig(
        vocab_size=VOCAB,
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=4,
        rotary_dim=4,
        n_inner=64,
        initializer_range=0.2,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        attn_implementation="eager",
    )
    return GPTJForCausalLM(config).to(dtype).eval()


def make_mb(rng, b, L, with_old=False):
    """Right-padded micro-batch: input = prompt + answer[:-1], labels -100 on first len(prompt)-1."""
    ids = torch.zeros(b, L, dtype=torch.long)
    att = torch.zeros(b, L, dtype=torch.long)
    labels = torch.full((b, L), -100, dtype=torch.long)
    old = torch.full((b, L), -100, dtype=torch.long)
    for r in range(b):
        n = int(rng.integers(3, L + 1))
        p = int(rng.integers(1, n + 1))
        a = n - p + 1
        prompt = rng.integers(1, VOCAB, size=p)
        answer = rng.integers(1, VOCAB, size=a)
        ids[r, :n] = torch.as_tensor(np.concatenate([prompt, answer[:-1]]))
        att[r, :n] = 1
        labels[r, p - 1 : n] = torch.as_tensor(answer)
        old[r, p - 1 : n] = torch.as_tensor(rng.integers(1, VOCAB, size=a))
    mb = {"input_ids": ids, "attention_mask": att, "labels": labels}
    if with_old:
        mb["old_labels"] = old
    return mb


def make_step(rng, sizes=(3, 2), L=9):
    return {kind: [make_mb(rng, b, L) for b in sizes] for kind in ("edit", "equiv", "unrel")}


def make_nets(model, dtype=torch.float64, lr=1e-6, rank=8, n_blocks=2, seed=0):
    return orc.make_hypernets(
        orc.site_shapes_of(model, SITES), rank=rank, n_blocks=n_blocks, lr=lr, seed=seed, dtype=dtype
    )


def randomise_nets(nets, seed=1, scale=0.1):
    """Move the nets off their identity init (nonzero B, bias, shift; scale != 1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in nets.named_parameters():
            if name.endswith(("blocks.0.B", "blocks.1.B", ".bias", "shift.weight")):
                p.copy_(scale * torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype))
            elif name.endswith("scale.weight"):
                p.copy_(1 + scale * torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype))


def np_(x):
    return x.detach().cpu().numpy().astype(np.float64)


# --------------------------------------------------------------------------------------------------


def test_hypernet_names_shapes_init():
    model = tiny_model()
    nets = make_nets(model, dtype=torch.float32, lr=1e-6, rank=8, n_blocks=2)
    assert list(nets.keys()) == ["(64, 32)", "(32, 64)"]
    expected = {}
    for key, width, n_sites in (("(64, 32)", 96, 2), ("(32, 64)", 96, 1)):
        for i in range(2):
            expected[f"{key}.blocks.{i}.A"] = (width, 8)
            expected[f"{key}.blocks.{i}.B"] = (8, width)
            expected[f"{key}.blocks.{i}.bias"] = (width,)
            expected[f"{key}.blocks.{i}.scale.weight"] = (n_sites, width)
            expected[f"{key}.blocks.{i}.shift.weight"] = (n_sites, width)
        expected[f"{key}.lr.weight"] = (n_sites, 1)
        expected[f"{key}.lamda.weight"] = (n_sites, 1)
        for b in ("mean", "var", "std"):
            expected[f"{key}.normalizer.{b}"] = (width,)
        expected[f"{key}.normalizer.n"] = (1,)
    sd = nets.state_dict()
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected
    for k, v in sd.items():
        if k.endswith(".A"):
            assert v.std() > 0.5
        elif k.endswith(".scale.weight"):
            assert torch.all(v == 1)
        elif k.endswith(".lr.weight"):
            assert torch.all(v == torch.tensor(1e-6, dtype=torch.float32))
        else:
            assert torch.all(v == 0), k
    # same seed -> same A in float32 and float64; state_dict round trip
    nets64 = make_nets(model, dtype=torch.float64, lr=1e-6, rank=8, n_blocks=2)
    for k, v in nets64.state_dict().items():
        assert v.dtype == torch.float64
        assert torch.equal(v.float(), sd[k])
    other = make_nets(model, dtype=torch.float32, seed=5)
    other.load_state_dict(sd)
    assert all(torch.equal(other.state_dict()[k], sd[k]) for k in sd)


@pytest.mark.parametrize("token", ["ans", "all"])
def test_capture_keys_match_manual_forward(token):
    model = tiny_model()
    rng = np.random.default_rng(0)
    mbs = [make_mb(rng, 3, 8), make_mb(rng, 2, 6)]
    captured = orc.capture(model, SITES, mbs, token=token)
    for mb, per_site in zip(mbs, captured):
        with torch.no_grad():
            hs = model(
                input_ids=mb["input_ids"],
                attention_mask=mb["attention_mask"],
                output_hidden_states=True,
                use_cache=False,
            ).hidden_states
        mask = (mb["labels"] != -100) if token == "ans" else (mb["attention_mask"] == 1)
        rows = [(b, i) for b in range(mask.shape[0]) for i in range(mask.shape[1]) if mask[b, i]]
        for site in SITES:
            layer = int(site.split(".")[2])
            block = model.transformer.h[layer]
            with torch.no_grad():
                ln = block.ln_1(hs[layer])
                key = ln if site.endswith("fc_in") else block.mlp.act(block.mlp.fc_in(ln))
            expected = torch.stack([key[b, i] for b, i in rows])
            K, G = per_site[site]
            assert K.shape == expected.shape
            torch.testing.assert_close(K, expected, rtol=1e-12, atol=1e-12)
            assert G.shape == (len(rows), site_linear_out(model, site))


def site_linear_out(model, site):
    return model.get_submodule(site).out_features


def test_value_grads_match_zero_probe():
    model = tiny_model()
    rng = np.random.default_rng(1)
    mbs = [make_mb(rng, 3, 8), make_mb(rng, 1, 5)]
    captured = orc.capture(model, SITES, mbs)
    for mb, per_site in zip(mbs, captured):
        b, L = mb["input_ids"].shape
        probes = {
            s: torch.zeros(b, L, site_linear_out(model, s), dtype=torch.float64, requires_grad=True) for s in SITES
        }
        handles = [
            model.get_submodule(s).register_forward_hook(lambda mod, args, out, s=s, probes=probes: out + probes[s])
            for s in SITES
        ]
        try:
            logits = model(input_ids=mb["input_ids"], attention_mask=mb["attention_mask"], use_cache=False).logits
        finally:
            for h in handles:
                h.remove()
        mask = mb["labels"] != -100
        logp = torch.log_softmax(logits, -1)
        nll = -logp.gather(-1, mb["labels"].clamp(min=0)[..., None])[..., 0]
        loss = (nll * mask).sum() / mask.sum()
        grads = torch.autograd.grad(loss, [probes[s] for s in SITES])
        for s, g in zip(SITES, grads):
            torch.testing.assert_close(per_site[s][1], g[mask], rtol=1e-10, atol=1e-14)
            assert per_site[s][1].abs().max() > 0


def np_merge(n, mean, M, x):
    m = x.shape[0]
    bm = x.mean(0)
    bv = x.var(0, ddof=1) if m >= 2 else np.zeros_like(bm)
    delta = bm - mean
    mean = mean + m * delta / (n + m)
    M = M + m * bv + n * m * delta**2 / (n + m)
    return n + m, mean, M


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_normaliser_matches_numpy(dtype):
    rng = np.random.default_rng(2)
    width = 7
    norm = orc.Normalizer(width, dtype)
    eps = float(np.finfo(np.float32 if dtype == torch.float32 else np.float64).eps)
    n, mean, M = 0, np.zeros(width), np.zeros(width)
    batches = [rng.normal(loc=i, scale=1 + i, size=(m, width)) for i, m in enumerate([3, 5, 2, 4, 6])]
    for x in batches:
        norm.update(torch.as_tensor(x, dtype=dtype))
        n, mean, M = np_merge(n, mean, M, x)
        std = np.sqrt(M / (n - 1 + eps))
        tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=2e-5, atol=2e-5)
        np.testing.assert_allclose(np_(norm.n), [n], **tol)
        np.testing.assert_allclose(np_(norm.mean), mean, **tol)
        np.testing.assert_allclose(np_(norm.var), M, **tol)
        np.testing.assert_allclose(np_(norm.std), std, **tol)
    # the running mean is the mean of all rows seen
    np.testing.assert_allclose(
        np_(norm.mean), np.concatenate(batches).mean(0), rtol=1e-5 if dtype == torch.float32 else 1e-12
    )
    x = rng.normal(size=(4, width))
    np.testing.assert_allclose(
        np_(norm(torch.as_tensor(x, dtype=dtype))),
        (x - np_(norm.mean)) / (np_(norm.std) + eps),
        rtol=1e-5 if dtype == torch.float32 else 1e-12,
    )
    # single-row batch: variance term 0, stays finite (documented divergence from the reference)
    single = rng.normal(size=(1, width))
    norm.update(torch.as_tensor(single, dtype=dtype))
    n, mean, M = np_merge(n, mean, M, single)
    assert torch.all(torch.isfinite(norm.std))
    np.testing.assert_allclose(np_(norm.var), M, rtol=1e-5 if dtype == torch.float32 else 1e-12)
    # very first update with a single row
    fresh = orc.Normalizer(width, dtype)
    fresh.update(torch.as_tensor(single, dtype=dtype))
    assert torch.all(fresh.std == 0) and torch.equal(fresh.mean, torch.as_tensor(single[0], dtype=dtype))
    assert torch.all(fresh(torch.as_tensor(single, dtype=dtype)) == 0)
    # eps override (e.g. float32's epsilon in a float64 oracle)
    e32 = float(np.finfo(np.float32).eps)
    over = orc.Normalizer(width, dtype, eps=e32)
    over.update(torch.as_tensor(batches[0], dtype=dtype))
    M0 = np_merge(0, np.zeros(width), np.zeros(width), batches[0])[2]
    np.testing.assert_allclose(np_(over.std), np.sqrt(M0 / (2 + e32)), rtol=1e-6)
    assert over.eps == e32 and "_eps" not in over.state_dict()


def test_normaliser_update_order_in_edit_step():
    model = tiny_model()
    nets = make_nets(model)
    rng = np.random.default_rng(3)
    mbs = [make_mb(rng, 3, 8), make_mb(rng, 1, 8)]
    captured = orc.capture(model, SITES, mbs)
    orc.edit_step(model, nets, SITES, mbs, {"token": "ans"})
    expected = {"(64, 32)": (0, np.zeros(96), np.zeros(96)), "(32, 64)": (0, np.zeros(96), np.zeros(96))}
    for per_site in captured:  # micro-batch major, then site
        for s in SITES:
            key = orc.shape_key(*model.get_submodule(s).weight.T.shape)
            k, g = per_site[s]
            expected[key] = np_merge(*expected[key], np.concatenate([np_(k), np_(g)], -1))
    eps = np.finfo(np.float64).eps
    for key, (n, mean, M) in expected.items():
        nz = nets[key].normalizer
        np.testing.assert_allclose(np_(nz.n), [n])
        np.testing.assert_allclose(np_(nz.mean), mean, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(np_(nz.var), M, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(np_(nz.std), np.sqrt(M / (n - 1 + eps)), rtol=1e-10, atol=1e-14)


def test_net_is_identity_at_init():
    model = tiny_model()
    nets = make_nets(model, rank=8, n_blocks=3)
    net = nets["(64, 32)"]
    rng = np.random.default_rng(4)
    net.normalizer.update(torch.as_tensor(rng.normal(size=(10, 96))))
    x = torch.as_tensor(rng.normal(size=(5, 96)))
    for i in range(2):
        out = net(x, i)
        torch.testing.assert_close(out, net.normalizer(x), rtol=0, atol=0)


def np_blocks(h, blocks, i):
    for blk in blocks:
        pre = h @ np_(blk.A) @ np_(blk.B) + np_(blk.bias)
        h = h + np_(blk.scale.weight)[i] * np.maximum(pre, 0) + np_(blk.shift.weight)[i]
    return h


def test_shift_matches_numpy():
    model = tiny_model()
    nets = make_nets(model, lr=0.3)
    randomise_nets(nets)
    rng = np.random.default_rng(5)
    net = nets["(64, 32)"]
    with torch.no_grad():
        net.lamda.weight.copy_(torch.tensor([[0.7], [-0.4]], dtype=torch.float64))
        net.lr.weight.copy_(torch.tensor([[0.3], [2.0]], dtype=torch.float64))
    N = 9
    K = rng.normal(size=(N, 64))
    G = rng.normal(scale=0.1, size=(N, 32))
    net.normalizer.update(torch.as_tensor(np.concatenate([K, G], -1)))
    eps = np.finfo(np.float64).eps
    for i in range(2):
        S = orc.predict_shift(net, i, torch.as_tensor(K), torch.as_tensor(G))
        h = (np.concatenate([K, G], -1) - np_(net.normalizer.mean)) / (np_(net.normalizer.std) + eps)
        out = np_blocks(h, net.blocks, i)
        kt, gt = out[:, :64], out[:, 64:]
        lr, lam = np_(net.lr.weight)[i, 0], np_(net.lamda.weight)[i, 0]
        D = -lr * (K * kt).sum(-1, keepdims=True) * gt
        # ridge regression via an augmented least-squares problem
        A = np.concatenate([K, np.sqrt(np.exp(lam)) * np.eye(64)])
        b = np.concatenate([D, np.zeros((64, 32))])
        S_lstsq = np.linalg.lstsq(A, b, rcond=None)[0]
        np.testing.assert_allclose(np_(S), S_lstsq, rtol=1e-8, atol=1e-12)
        # push-through form, and rank <= N
        S_push = K.T @ np.linalg.solve(K @ K.T + np.exp(lam) * np.eye(N), D)
        np.testing.assert_allclose(np_(S), S_push, rtol=1e-8, atol=1e-12)
        assert np.linalg.matrix_rank(np_(S)) <= N
    # applied as weight += S.T
    shifts = {SITES[0]: S}
    w0 = model.get_submodule(SITES[0]).weight.detach().clone()
    orc.apply_shifts(model, shifts)
    torch.testing.assert_close(model.get_submodule(SITES[0]).weight, w0 + S.T, rtol=0, atol=0)


def test_clamp_gradient_at_zero_and_B_learns_at_init():
    x = torch.zeros(3, requires_grad=True)
    torch.clamp(x, min=0).sum().backward()
    assert torch.all(x.grad == 1)
    model = tiny_model()
    nets = make_nets(model, lr=1.0)
    opt = torch.optim.Adam(nets.parameters(), lr=1e-5)
    rng = np.random.default_rng(6)
    trace = orc.train_sequence(
        model, nets, opt, [make_step(rng)], SITES, orc.OracleConfig(back_depth=1, max_grad_norm=1e9)
    )
    grads = trace["steps"][0]["grads"]
    for key in nets:
        for i in range(2):
            assert grads[f"{key}.blocks.{i}.B"].abs().max() > 0
            assert grads[f"{key}.blocks.{i}.bias"].abs().max() > 0
            assert grads[f"{key}.blocks.{i}.shift.weight"].abs().max() > 0
            # A's gradient goes through B = 0
            assert grads[f"{key}.blocks.{i}.A"].abs().max() == 0


def manual_logits(model, shifts_list, mb):
    m = copy.deepcopy(model)
    with torch.no_grad():
        for shifts in shifts_list:
            for s, S in shifts.items():
                m.get_submodule(s).weight += S.T
        return m(input_ids=mb["input_ids"], attention_mask=mb["attention_mask"], use_cache=False).logits


def manual_ce(logits, labels):
    mask = labels != -100
    logp = torch.log_softmax(logits, -1)
    return -(logp.gather(-1, labels.clamp(min=0)[..., None])[..., 0] * mask).sum() / mask.sum()


def manual_kl(lb, la, labels):
    mask = labels != -100
    pb = torch.softmax(lb, -1)
    kl = (pb * (torch.log(pb) - torch.log_softmax(la, -1))).sum(-1)
    return (kl * mask).sum() / mask.sum()


def test_train_sequence_T2_losses_clipping_adam():
    model = tiny_model()
    nets = make_nets(model, lr=1.0)
    randomise_nets(nets)
    init_sd = copy.deepcopy(nets.state_dict())
    w0 = {s: model.get_submodule(s).weight.detach().clone() for s in SITES}
    rng = np.random.default_rng(7)
    steps = [make_step(rng, sizes=(3, 2)), make_step(rng, sizes=(2, 2, 1))]
    cfg = orc.OracleConfig(back_depth=2, time_decay=0.9, loc_coef=0.6, reg_coef=0.3, max_grad_norm=1e-3, token="ans")
    meta_lr = 1e-2
    opt = torch.optim.Adam(nets.parameters(), lr=meta_lr)
    trace = orc.train_sequence(model, nets, opt, steps, SITES, cfg)
    # weights restored
    for s in SITES:
        assert torch.equal(model.get_submodule(s).weight, w0[s])
    S1, _S2 = trace["steps"][0]["shifts"], trace["steps"][1]["shifts"]
    assert all(S.abs().max() > 0 for S in S1.values())
    # step 2 captured at W_0 + S_1
    m1 = copy.deepcopy(model)
    orc.apply_shifts(m1, S1)
    KG2 = orc.stack_captured(orc.capture(m1, SITES, steps[1]["edit"]), SITES)
    for s in SITES:
        torch.testing.assert_close(trace["steps"][1]["K"][s], KG2[s][0], rtol=1e-12, atol=1e-12)
    # loss terms recomputed by hand
    for t, prior in ((0, []), (1, [S1])):
        cur = trace["steps"][t]["shifts"]
        gen = loc = 0.0
        for i in range(min(t + 1, cfg.back_depth)):
            past = steps[t - i]
            w = cfg.time_decay**i
            gen += w * sum(manual_ce(manual_logits(model, prior + [cur], mb), mb["labels"]) for mb in past["equiv"])
            loc += w * sum(
                manual_kl(manual_logits(model, prior, mb), manual_logits(model, prior + [cur], mb), mb["labels"])
                for mb in past["unrel"]
            )
        reg = sum((S**2).sum() for S in cur.values())
        rec = trace["steps"][t]
        torch.testing.assert_close(rec["gen_loss"], gen, rtol=1e-10, atol=0)
        torch.testing.assert_close(rec["loc_loss"], loc, rtol=1e-8, atol=1e-14)
        assert rec["loc_loss"] > 0
        torch.testing.assert_close(rec["reg"], reg, rtol=1e-10, atol=0)
        torch.testing.assert_close(rec["loss"], gen + cfg.loc_coef * loc + cfg.reg_coef * reg, rtol=1e-10, atol=0)
        # clipped accumulator
        norm = torch.sqrt(sum((g**2).sum() for g in rec["grads"].values()))
        assert rec["grad_norm"] > cfg.max_grad_norm  # clipping was active
        assert norm <= cfg.max_grad_norm * (1 + 1e-6)
    # one Adam step from the accumulated clipped grads: first step moves by lr * g / (|g| + 1e-8)
    g_final = trace["steps"][-1]["grads"]
    for name, g in g_final.items():
        expected = init_sd[name] - meta_lr * g / (g.abs() + 1e-8)
        torch.testing.assert_close(trace["state_dict"][name], expected, rtol=1e-10, atol=1e-12)
        assert nets.state_dict()[name].equal(trace["state_dict"][name])
        assert getattr(nets.get_parameter(name), "grad", None) is None  # zero_grad
    # normaliser stats recorded after the step's updates
    for key in nets:
        assert trace["steps"][1]["norm_stats"][key]["n"] > trace["steps"][0]["norm_stats"][key]["n"]
        torch.testing.assert_close(
            trace["state_dict"][f"{key}.normalizer.mean"], trace["steps"][1]["norm_stats"][key]["mean"], rtol=0, atol=0
        )


def test_gradient_matches_finite_differences():
    model = tiny_model()
    nets = make_nets(model, lr=1.0)
    randomise_nets(nets, scale=0.2)
    snapshot = copy.deepcopy(nets.state_dict())
    rng = np.random.default_rng(8)
    steps = [make_step(rng, sizes=(2, 2))]
    cfg = orc.OracleConfig(back_depth=3, time_decay=0.95, loc_coef=0.6, reg_coef=0.5, max_grad_norm=1e12)

    def run(name=None, idx=None, delta=0.0):
        nets.load_state_dict(snapshot)
        if name is not None:
            with torch.no_grad():
                nets.get_parameter(name)[idx] += delta
        opt = torch.optim.SGD(nets.parameters(), lr=0.0)
        return orc.train_sequence(model, nets, opt, steps, SITES, cfg)["steps"][0]

    grads = run()["grads"]
    checks = [
        ("(64, 32).blocks.0.B", (1, 3)),
        ("(64, 32).blocks.1.A", (5, 2)),
        ("(64, 32).blocks.1.bias", (70,)),
        ("(64, 32).blocks.0.scale.weight", (1, 4)),
        ("(64, 32).blocks.1.shift.weight", (0, 80)),
        ("(64, 32).lr.weight", (1, 0)),
        ("(64, 32).lamda.weight", (0, 0)),
        ("(32, 64).blocks.0.B", (2, 40)),
        ("(32, 64).lamda.weight", (0, 0)),
        ("(32, 64).lr.weight", (0, 0)),
    ]
    for name, idx in checks:
        h = 1e-5 * max(1.0, abs(float(snapshot[name][idx])))
        fd = (run(name, idx, h)["loss"] - run(name, idx, -h)["loss"]) / (2 * h)
        g = grads[name][idx]
        assert abs(float(g)) > 1e-9, name
        np.testing.assert_allclose(float(g), float(fd), rtol=1e-5, atol=1e-10, err_msg=name)


def test_evaluate_hand_made():
    model = tiny_model()
    nets = make_nets(model, lr=0.0)  # lr = 0 -> every shift is exactly zero
    rng = np.random.default_rng(9)
    L = 6
    ids = torch.as_tensor(rng.integers(1, VOCAB, size=(3, L)))
    att = torch.ones(3, L, dtype=torch.long)
    att[2, 4:] = 0
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=att, use_cache=False).logits
    top = logits.argmax(-1)
    bottom = logits.argmin(-1)
    wrong = (top + 1) % VOCAB
    labels = torch.full((3, L), -100, dtype=torch.long)
    labels[0, 2:5] = top[0, 2:5]
    labels[0, 3] = wrong[0, 3]  # row 0: 2 of 3 right
    labels[1, 1:6] = top[1, 1:6]  # row 1: 5 of 5
    labels[2, 1:4] = wrong[2, 1:4]  # row 2: 0 of 3
    mb = {"input_ids": ids, "attention_mask": att, "labels": labels}
    mb_half = {"input_ids": ids[:1], "attention_mask": att[:1], "labels": labels[:1]}
    step = {"edit": [mb], "equiv": [mb_half], "unrel": [mb, mb_half]}
    n_before = nets["(64, 32)"].normalizer.n.clone()
    w0 = {s: model.get_submodule(s).weight.detach().clone() for s in SITES}
    res = orc.evaluate(model, nets, [step], SITES, {"token": "ans"}, metric="token")
    torch.testing.assert_close(res["per_row"]["edit"], torch.tensor([2 / 3, 1.0, 0.0], dtype=torch.float64))
    assert res["ES"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert res["GS"] == pytest.approx(2 / 3)
    assert res["LS"] == pytest.approx((2 / 3 + 1 + 0 + 2 / 3) / 4)
    assert res["LS_agreement"] == 1.0  # zero shifts: the model agrees with itself
    # normaliser updated (2 fc_out sites x 11 answer rows), weights restored
    assert float(nets["(64, 32)"].normalizer.n - n_before) == 2 * 11
    for s in SITES:
        assert torch.equal(model.get_submodule(s).weight, w0[s])

    # counterfact (the reference's succ_ratios): old labels collated to their own width (4 < L), padded
    # with 0; both cut to the shorter width, a position succeeds when logit[new] > logit[old], and the
    # divisor is the new-answer tokens left after the cut.
    new = torch.full((3, L), -100, dtype=torch.long)
    old = torch.full((3, 4), -100, dtype=torch.long)
    new[0, 1:5], old[0, 1:4] = top[0, 1:5], bottom[0, 1:4]  # position 4 is cut: 3/3
    new[1, 0:4], old[1, 0:4] = bottom[1, 0:4], top[1, 0:4]  # 0/4
    new[2, 0:4], old[2, 0:2], old[2, 2:4] = top[2, 0:4], bottom[2, 0:2], 0  # the old answer is 2 long
    old[2, 1] = top[2, 1]  # pos 1 tie (not >) fails; pos 2, 3 beat the padding id 0 -> 3/4
    assert (top[2, 2:4] != 0).all()
    cf = {"input_ids": ids, "attention_mask": att, "labels": new, "old_labels": old}
    swapped = {"input_ids": ids, "attention_mask": att, "labels": old, "old_labels": new}
    res = orc.evaluate(
        model, nets, [{"edit": [cf], "equiv": [cf], "unrel": [swapped]}], SITES, None, metric="counterfact"
    )
    torch.testing.assert_close(res["per_row"]["edit"], torch.tensor([1.0, 0.0, 3 / 4], dtype=torch.float64))
    assert res["ES"] == pytest.approx(7 / 12)
    torch.testing.assert_close(res["per_row"]["unrel"], torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))


def test_evaluate_applies_edits_in_sequence():
    model = tiny_model()
    nets = make_nets(model, lr=1.0)
    randomise_nets(nets)
    rng = np.random.default_rng(10)
    steps = [make_step(rng, sizes=(2, 1)), make_step(rng, sizes=(3,))]
    nets_copy = copy.deepcopy(nets)
    res = orc.evaluate(model, nets, steps, SITES, orc.OracleConfig(), metric="token")
    # replay by hand: capture / normalise / shift at the running weights
    m = copy.deepcopy(model)
    for step, shifts in zip(steps, res["shifts"]):
        assert all(S.abs().max() > 0 for S in shifts.values())
        mine = orc.edit_step(m, nets_copy, SITES, step["edit"], None)
        for s in SITES:
            torch.testing.assert_close(mine[s], shifts[s], rtol=1e-12, atol=1e-15)
    for kind in ("edit", "equiv", "unrel"):
        rows = []
        for step in steps:
            for mb in step[kind]:
                with torch.no_grad():
                    lg = m(input_ids=mb["input_ids"], attention_mask=mb["attention_mask"], use_cache=False).logits
                mask = mb["labels"] != -100
                ok = (lg.argmax(-1) == mb["labels"]) & mask
                rows += [float(ok[r].sum()) / float(mask[r].sum()) for r in range(mask.shape[0])]
        np.testing.assert_allclose(np_(res["per_row"][kind]), rows)


def test_float32_path_runs():
    model = tiny_model(dtype=torch.float32)
    nets = make_nets(model, dtype=torch.float32, lr=1.0)
    rng = np.random.default_rng(11)
    steps = [make_step(rng), make_step(rng)]
    opt = torch.optim.Adam(nets.parameters(), lr=1e-5)
    trace = orc.train_sequence(model, nets, opt, steps, SITES, orc.OracleConfig(back_depth=2))
    assert all(v.dtype == torch.float32 for v in trace["state_dict"].values())
    assert all(torch.isfinite(trace["steps"][-1]["loss"]) for _ in [0])
    norm = torch.sqrt(sum((g**2).sum() for g in trace["steps"][-1]["grads"].values()))
    assert norm <= 1.0 * (1 + 1e-5)
