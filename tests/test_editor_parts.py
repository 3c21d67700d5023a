"""Normaliser, hypernetwork, shift and reference interop, against float64 numpy and torch oracles.

Every expected number comes from a closed form written here (numpy float64) or from torch autograd;
DESIGN.md section 3 is the specification.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.torch
import torch

from rledit_jax.editor import hypernet, normalizer, reference_io, shift

jax.config.update("jax_default_matmul_precision", "highest")

EPS32 = float(np.finfo(np.float32).eps)


# ----------------------------------------------------------------------------- float64 oracles


def np_merge(stats, rows):
    """DESIGN section 3 merge of the (valid) `rows` into (n, mean, m2, std), in float64."""
    n, mean, m2, std = stats
    m = len(rows)
    if m == 0:
        return stats
    var_b = rows.var(0, ddof=1) if m > 1 else np.zeros_like(mean)
    delta = rows.mean(0) - mean
    n_new = n + m
    mean = mean + m * delta / n_new
    m2 = m2 + m * var_b + n * m * delta**2 / n_new
    return n_new, mean, m2, np.sqrt(m2 / (n_new - 1 + EPS32))


def np_hypernet(params, h, site):
    for block in params["blocks"]:
        pre = h @ block["A"] @ block["B"] + block["bias"]
        h = h + block["scale"][site] * np.maximum(pre, 0.0) + block["shift"][site]
    return h


def np_direct_shift(params, stats, keys, value_grads, site):
    """S = (K^T K + e^lamda I)^-1 K^T D over the valid rows only, in float64."""
    params = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
    _, mean, _, std = (np.asarray(s, np.float64) for s in stats)
    d_in = keys.shape[1]
    h = (np.concatenate([keys, value_grads], 1) - mean) / (std + EPS32)
    out = np_hypernet(params, h, site)
    k_tilde, g_tilde = out[:, :d_in], out[:, d_in:]
    d = -params["lr"][site] * np.sum(keys * k_tilde, 1, keepdims=True) * g_tilde
    gram = keys.T @ keys + np.exp(params["lamda"][site]) * np.eye(d_in)
    return np.linalg.solve(gram, keys.T @ d)


def random_params(seed, d_in, d_out, n_sites, rank, n_blocks):
    """Hypernetwork params with every leaf random (B, bias, scale, shift, lr, lamda per site)."""
    rng = np.random.default_rng(seed)
    width = d_in + d_out
    blocks = [
        {
            "A": rng.normal(size=(width, rank)),
            "B": rng.normal(size=(rank, width)) / rank,
            "bias": 0.3 * rng.normal(size=width),
            "scale": 1 + 0.3 * rng.normal(size=(n_sites, width)),
            "shift": 0.3 * rng.normal(size=(n_sites, width)),
        }
        for _ in range(n_blocks)
    ]
    params = {"blocks": blocks, "lr": rng.uniform(0.5, 2.0, n_sites), "lamda": rng.uniform(-1, 1, n_sites)}
    return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)


def random_norm(seed, width):
    rng = np.random.default_rng(seed)
    return normalizer.NormState(
        n=jnp.float32(17.0),
        mean=jnp.asarray(rng.normal(size=width), jnp.float32),
        m2=jnp.asarray(rng.uniform(1, 2, width), jnp.float32),
        std=jnp.asarray(rng.uniform(0.5, 2, width), jnp.float32),
    )


def as_tuple(state):
    return tuple(np.asarray(x, np.float64) for x in (state.n, state.mean, state.m2, state.std))


# ----------------------------------------------------------------------------- normaliser


def test_masked_merges_match_float64_formula():
    rng = np.random.default_rng(0)
    width, rows = 5, 6
    update = jax.jit(normalizer.update)
    state = normalizer.init(width)
    expected = (0.0, np.zeros(width), np.zeros(width), np.zeros(width))
    for valid_count in (4, 2, 6, 3, 5):
        x = rng.normal(2.0, 3.0, size=(rows, width))
        mask = np.zeros(rows, bool)
        mask[rng.choice(rows, valid_count, replace=False)] = True
        garbage = np.where(mask[:, None], x, np.array([np.nan, np.inf, -np.inf, 1e30, 0.0]))
        state = update(state, jnp.asarray(garbage, jnp.float32), jnp.asarray(mask))
        expected = np_merge(expected, x[mask])
        for got, want in zip(as_tuple(state), expected):
            np.testing.assert_allclose(got, want, rtol=2e-6)


def test_running_mean_and_m2_over_batches_of_at_least_two_rows():
    rng = np.random.default_rng(1)
    width = 4
    state = normalizer.init(width)
    seen, batch_vars = [], []
    for valid_count in (2, 5, 3, 7):
        x = rng.normal(-1.0, 2.0, size=(8, width))
        mask = np.arange(8) < valid_count
        state = normalizer.update(state, jnp.asarray(x, jnp.float32), jnp.asarray(mask))
        seen.append(x[mask])
        batch_vars.append(x[mask].var(0, ddof=1))
    everything = np.concatenate(seen)
    np.testing.assert_allclose(state.n, len(everything))
    np.testing.assert_allclose(state.mean, everything.mean(0), rtol=1e-6, atol=1e-6)
    # m*var_b instead of the batch's sum of squares adds exactly one var_b per batch to M.
    total_sq = np.sum((everything - everything.mean(0)) ** 2, 0)
    np.testing.assert_allclose(state.m2, total_sq + np.sum(batch_vars, 0), rtol=1e-6)


def test_single_row_merge_has_zero_batch_variance():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 4))
    x32 = jnp.asarray(x, jnp.float32)
    state = normalizer.update(normalizer.init(4), x32, jnp.array([False, True, False]))
    np.testing.assert_array_equal(state.n, 1.0)
    np.testing.assert_allclose(state.mean, x[1], rtol=1e-6)
    np.testing.assert_array_equal(state.m2, 0.0)
    np.testing.assert_array_equal(state.std, 0.0)
    expected = np_merge(as_tuple(state), x[2:3])
    state = normalizer.update(state, x32, jnp.array([False, False, True]))
    for got, want in zip(as_tuple(state), expected):
        assert np.all(np.isfinite(got))
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_empty_merge_leaves_state_unchanged():
    update = jax.jit(normalizer.update)
    x = jnp.full((3, 4), jnp.nan)
    none = jnp.zeros(3, bool)
    fresh = normalizer.init(4)
    for before in (fresh, normalizer.update(fresh, jnp.arange(12.0).reshape(3, 4), jnp.ones(3, bool))):
        after = update(before, x, none)
        jax.tree.map(np.testing.assert_array_equal, after, before)


def test_normalize():
    state = random_norm(3, 6)
    x = np.random.default_rng(30).normal(size=(2, 6))
    expected = (x - np.asarray(state.mean, np.float64)) / (np.asarray(state.std, np.float64) + EPS32)
    np.testing.assert_allclose(normalizer.normalize(state, jnp.asarray(x, jnp.float32)), expected, rtol=1e-6)


# ----------------------------------------------------------------------------- hypernetwork


def test_hypernet_init_is_identity():
    params = hypernet.init_hypernet(jax.random.key(0), 3, 4, n_sites=2, rank=5, n_blocks=3, lr=1e-6)
    h = jax.random.normal(jax.random.key(1), (6, 7))
    np.testing.assert_array_equal(hypernet.apply_hypernet(params, h, 1), h)
    assert len(params["blocks"]) == 3
    assert params["blocks"][0]["A"].shape == (7, 5) and params["blocks"][0]["scale"].shape == (2, 7)
    np.testing.assert_array_equal(params["lr"], np.float32(1e-6))
    np.testing.assert_array_equal(params["lamda"], 0.0)


def test_hypernet_forward_matches_numpy():
    params = random_params(4, 3, 4, n_sites=3, rank=5, n_blocks=2)
    h = np.random.default_rng(4).normal(size=(6, 7))
    apply = jax.jit(hypernet.apply_hypernet)
    params64 = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
    for site in range(3):
        got = apply(params, jnp.asarray(h, jnp.float32), site)
        np.testing.assert_allclose(got, np_hypernet(params64, h, site), rtol=1e-5, atol=1e-5)


def test_hypernet_out_of_range_site_is_nan():
    params = hypernet.init_hypernet(jax.random.key(0), 2, 2, n_sites=2, rank=3, n_blocks=1, lr=1.0)
    assert np.all(np.isnan(jax.jit(hypernet.apply_hypernet)(params, jnp.ones((1, 4)), 2)))


def torch_block_grads(params, h, weights, site):
    """Gradients of sum(weights * hypernet(h)) with torch clamp(min=0), as in the reference."""
    leaves = {k: torch.tensor(np.asarray(v), requires_grad=True) for k, v in params["blocks"][0].items()}
    x = torch.tensor(np.asarray(h))
    pre = x @ leaves["A"] @ leaves["B"] + leaves["bias"]
    out = x + leaves["scale"][site] * pre.clamp(min=0) + leaves["shift"][site]
    (out * torch.tensor(np.asarray(weights))).sum().backward()
    return {k: v.grad.numpy() for k, v in leaves.items()}


@pytest.mark.parametrize("at_init", [True, False])
def test_block_gradient_matches_torch_clamp(at_init):
    if at_init:
        params = hypernet.init_hypernet(jax.random.key(5), 3, 4, n_sites=2, rank=5, n_blocks=1, lr=1.0)
    else:
        params = random_params(5, 3, 4, n_sites=2, rank=5, n_blocks=1)
    h = jax.random.normal(jax.random.key(6), (6, 7))
    weights = jax.random.normal(jax.random.key(7), (6, 7))
    grads = jax.grad(lambda p: jnp.sum(weights * hypernet.apply_hypernet(p, h, 1)))(params)
    expected = torch_block_grads(params, h, weights, 1)
    for name, want in expected.items():
        np.testing.assert_allclose(grads["blocks"][0][name], want, rtol=1e-5, atol=1e-5)
    if at_init:  # relu0'(0) = 1: B learns from the identity init (jax.nn.relu would give exactly 0).
        assert np.abs(grads["blocks"][0]["B"]).min() > 0


# ----------------------------------------------------------------------------- shift

D_IN, D_OUT, N_SITES = 7, 5, 3


def shift_inputs(seed, rows, valid):
    rng = np.random.default_rng(seed)
    keys = rng.normal(size=(rows, D_IN))
    value_grads = rng.normal(size=(rows, D_OUT))
    mask = np.zeros(rows, bool)
    mask[rng.choice(rows, valid, replace=False)] = True
    return keys, value_grads, mask


def test_push_through_shift_matches_direct_solve_per_site():
    params = random_params(8, D_IN, D_OUT, N_SITES, rank=4, n_blocks=2)
    norm = random_norm(8, D_IN + D_OUT)
    keys, value_grads, mask = shift_inputs(8, rows=6, valid=4)
    predict = jax.jit(shift.predict_shift)
    shifts = []
    for site in range(N_SITES):
        got = predict(
            params,
            norm,
            jnp.asarray(keys, jnp.float32),
            jnp.asarray(value_grads, jnp.float32),
            jnp.asarray(mask),
            site,
        )
        want = np_direct_shift(params, as_tuple(norm), keys[mask], value_grads[mask], site)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
        shifts.append(want)
    # Sites differ only in their lr / lamda / scale / shift rows, and each one's own row is used.
    assert not np.allclose(shifts[0], shifts[1], rtol=1e-2)


def test_shift_is_linear_in_the_site_lr():
    params = random_params(9, D_IN, D_OUT, N_SITES, rank=4, n_blocks=2)
    norm = random_norm(9, D_IN + D_OUT)
    keys, value_grads, mask = (jnp.asarray(a) for a in shift_inputs(9, rows=5, valid=5))
    base = shift.predict_shift(params, norm, keys, value_grads, mask, 1)
    tripled = dict(params, lr=params["lr"].at[1].multiply(3.0))
    got = shift.predict_shift(tripled, norm, keys, value_grads, mask, 1)
    np.testing.assert_allclose(got, 3 * base, rtol=1e-5)
    np.testing.assert_array_equal(
        shift.predict_shift(tripled, norm, keys, value_grads, mask, 0),
        shift.predict_shift(params, norm, keys, value_grads, mask, 0),
    )


def test_shift_factors_rank_and_masking():
    params = random_params(10, D_IN, D_OUT, N_SITES, rank=4, n_blocks=2)
    norm = random_norm(10, D_IN + D_OUT)
    keys, value_grads, mask = shift_inputs(10, rows=8, valid=3)
    k, c = shift.shift_factors(params, norm, keys, value_grads, mask, 2)
    assert k.shape == (8, D_IN) and c.shape == (8, D_OUT)
    np.testing.assert_array_equal(k, np.where(mask[:, None], keys, 0.0).astype(np.float32))
    np.testing.assert_array_equal(c[~mask], 0.0)
    s = np.asarray(k.T @ c, np.float64)
    want = np_direct_shift(params, as_tuple(norm), keys[mask], value_grads[mask], 2)
    np.testing.assert_allclose(s, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
    assert np.linalg.matrix_rank(s, tol=1e-5 * np.abs(s).max()) == 3


def test_masked_rows_are_irrelevant():
    params = random_params(11, D_IN, D_OUT, N_SITES, rank=4, n_blocks=2)
    norm = random_norm(11, D_IN + D_OUT)
    keys, value_grads, mask = shift_inputs(11, rows=6, valid=4)
    predict = jax.jit(shift.predict_shift)
    valid = mask[:, None]
    clean = predict(params, norm, np.where(valid, keys, 0.0), np.where(valid, value_grads, 0.0), mask, 0)
    garbage = predict(params, norm, np.where(valid, keys, np.nan), np.where(valid, value_grads, 1e30), mask, 0)
    np.testing.assert_array_equal(garbage, clean)
    only_valid = predict(params, norm, keys[mask], value_grads[mask], np.ones(4, bool), 0)
    np.testing.assert_allclose(clean, only_valid, rtol=1e-5, atol=1e-6 * np.abs(only_valid).max())


def torch_shift(params, norm, keys, value_grads, site):
    """Float64 torch version of DESIGN section 3 (direct d_in x d_in solve, clamp(min=0) relu)."""
    p = jax.tree.map(lambda x: torch.tensor(np.asarray(x, np.float64), requires_grad=True), params)
    mean, std = (torch.tensor(np.asarray(x, np.float64)) for x in (norm.mean, norm.std))
    k, g = torch.tensor(keys), torch.tensor(value_grads)
    h = (torch.cat([k, g], -1) - mean) / (std + EPS32)
    for block in p["blocks"]:
        pre = h @ block["A"] @ block["B"] + block["bias"]
        h = h + block["scale"][site] * pre.clamp(min=0) + block["shift"][site]
    k_tilde, g_tilde = h.split([D_IN, D_OUT], -1)
    d = -p["lr"][site] * (k * k_tilde).sum(-1, keepdim=True) * g_tilde
    s = torch.linalg.solve(k.T @ k + p["lamda"][site].exp() * torch.eye(D_IN, dtype=torch.float64), k.T @ d)
    return p, s


def test_shift_gradient_matches_torch():
    params = random_params(12, D_IN, D_OUT, N_SITES, rank=4, n_blocks=2)
    norm = random_norm(12, D_IN + D_OUT)
    keys, value_grads, mask = shift_inputs(12, rows=6, valid=4)
    weights = np.random.default_rng(12).normal(size=(D_IN, D_OUT))
    loss = lambda p: jnp.sum(weights * shift.predict_shift(p, norm, keys, value_grads, mask, 1))
    grads = jax.jit(jax.grad(loss))(params)
    torch_params, s = torch_shift(params, norm, keys[mask], value_grads[mask], 1)
    (torch.tensor(weights) * s).sum().backward()
    want = jax.tree.map(lambda t: t.grad.numpy(), torch_params)
    for got_leaf, want_leaf in zip(jax.tree.leaves(grads), jax.tree.leaves(want)):
        np.testing.assert_allclose(got_leaf, want_leaf, rtol=2e-4, atol=2e-5 * np.abs(want_leaf).max())
    assert np.abs(want["lamda"][1]) > 0 and np.abs(want["lr"][1]) > 0


# ----------------------------------------------------------------------------- reference interop

GROUPS = {(6, 4): dict(n_sites=2), (3, 5): dict(n_sites=1)}
RANK, N_BLOCKS = 3, 2


def reference_state(seed):
    """A reference-named state dict with random float32 values, written out by hand."""
    rng = np.random.default_rng(seed)
    state = {}
    for (d_in, d_out), group in GROUPS.items():
        prefix, width, sites = f"({d_in}, {d_out})", d_in + d_out, group["n_sites"]
        for i in range(N_BLOCKS):
            state[f"{prefix}.blocks.{i}.A"] = rng.normal(size=(width, RANK))
            state[f"{prefix}.blocks.{i}.B"] = rng.normal(size=(RANK, width)) / RANK
            state[f"{prefix}.blocks.{i}.bias"] = rng.normal(size=width)
            state[f"{prefix}.blocks.{i}.scale.weight"] = rng.normal(size=(sites, width))
            state[f"{prefix}.blocks.{i}.shift.weight"] = rng.normal(size=(sites, width))
        state[f"{prefix}.lr.weight"] = rng.uniform(size=(sites, 1))
        state[f"{prefix}.lamda.weight"] = rng.normal(size=(sites, 1))
        state[f"{prefix}.normalizer.n"] = np.array([42.0])
        state[f"{prefix}.normalizer.mean"] = rng.normal(size=width)
        state[f"{prefix}.normalizer.var"] = rng.uniform(1, 2, width)
        state[f"{prefix}.normalizer.std"] = rng.uniform(0.5, 2, width)
    return {name: value.astype(np.float32) for name, value in state.items()}


def assert_same_state(got, want):
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name].dtype == np.float32, name
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_reference_round_trip_is_exact():
    state = reference_state(13)
    nets, norms = reference_io.from_reference(state)
    assert sorted(nets) == sorted(GROUPS) == sorted(norms)
    net = nets[(6, 4)]
    np.testing.assert_array_equal(net["blocks"][1]["scale"], state["(6, 4).blocks.1.scale.weight"])
    np.testing.assert_array_equal(net["lamda"], state["(6, 4).lamda.weight"][:, 0])
    np.testing.assert_array_equal(norms[(3, 5)].m2, state["(3, 5).normalizer.var"])
    assert norms[(3, 5)].n.shape == () and float(norms[(3, 5)].n) == 42.0
    assert_same_state(reference_io.to_reference(nets, norms), state)


def test_reference_names_mean_what_the_reference_computes():
    """Torch forward of the reference's net (normaliser, clamp blocks, split) read straight off the names."""
    state = reference_state(14)
    nets, norms = reference_io.from_reference(state)
    site, prefix = 1, "(6, 4)"
    x = np.random.default_rng(14).normal(size=(5, 10)).astype(np.float32)
    t = {name[len(prefix) + 1 :]: torch.tensor(v) for name, v in state.items() if name.startswith(prefix)}
    h = (torch.tensor(x) - t["normalizer.mean"]) / (t["normalizer.std"] + EPS32)
    for i in range(N_BLOCKS):
        pre = (h @ t[f"blocks.{i}.A"] @ t[f"blocks.{i}.B"] + t[f"blocks.{i}.bias"]).clamp(min=0)
        h = h + t[f"blocks.{i}.scale.weight"][site] * pre + t[f"blocks.{i}.shift.weight"][site]
    got = hypernet.apply_hypernet(nets[(6, 4)], normalizer.normalize(norms[(6, 4)], x), site)
    np.testing.assert_allclose(got, h.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_reference_file_round_trip(tmp_path, suffix):
    state = reference_state(15)
    path = tmp_path / f"net{suffix}"
    reference_io.save_reference_file(path, state)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    assert_same_state(reference_io.load_reference_file(path), state)
    if suffix == ".safetensors":  # The reference can read it with the safetensors torch API.
        assert_same_state({k: v.numpy() for k, v in safetensors.torch.load_file(path).items()}, state)


def test_reference_pth_written_by_torch(tmp_path):
    state = reference_state(16)
    path = tmp_path / "net.pth"
    torch.save({name: torch.from_numpy(value) for name, value in state.items()}, path)
    assert_same_state(reference_io.load_reference_file(path), state)
    torch.save([torch.zeros(1)], tmp_path / "not_a_state_dict.pt")
    with pytest.raises(ValueError, match="expected a state_dict"):
        reference_io.load_reference_file(tmp_path / "not_a_state_dict.pt")


def test_unknown_extension(tmp_path):
    with pytest.raises(ValueError, match="unknown extension"):
        reference_io.load_reference_file(tmp_path / "net.bin")
    with pytest.raises(ValueError, match="can only write"):
        reference_io.save_reference_file(tmp_path / "net.pth", reference_state(17))


def test_failed_save_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    state = reference_state(18)
    path = tmp_path / "net.npz"
    reference_io.save_reference_file(path, state)

    def fail(*args, **kwargs):
        raise OSError("disk full")

    with pytest.raises(ValueError, match="empty state dict"):
        reference_io.save_reference_file(path, {})
    monkeypatch.setattr(np, "savez", fail)
    with pytest.raises(OSError, match="disk full"):
        reference_io.save_reference_file(path, reference_state(19))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.npz"]
    assert_same_state(reference_io.load_reference_file(path), state)


def test_invalid_state_dicts_name_the_culprits():
    missing = reference_state(20)
    del missing["(6, 4).blocks.1.bias"]
    with pytest.raises(ValueError, match=r"missing \['\(6, 4\)\.blocks\.1\.bias'\]"):
        reference_io.from_reference(missing)

    misshapen = reference_state(20)
    misshapen["(3, 5).lr.weight"] = np.zeros(1, np.float32)
    with pytest.raises(ValueError, match=r"\(3, 5\)\.lr\.weight: \(1,\) != \(1, 1\)"):
        reference_io.from_reference(misshapen)

    extra = dict(reference_state(20), **{"(3, 5).blocks.0.extra": np.zeros(1), "optimizer": np.zeros(1)})
    with pytest.raises(ValueError, match=r"(?s)'optimizer'.*unexpected \['\(3, 5\)\.blocks\.0\.extra'\]"):
        reference_io.from_reference(extra)

    gap = {name.replace("blocks.1.", "blocks.2."): v for name, v in reference_state(20).items()}
    with pytest.raises(ValueError, match=r"(?s)n_blocks=2.*missing \['\(3, 5\)\.blocks\.1\.A'.*unexpected"):
        reference_io.from_reference(gap)

    nets, norms = reference_io.from_reference(reference_state(20))
    with pytest.raises(ValueError, match="different shapes"):
        reference_io.to_reference(nets, {(6, 4): norms[(6, 4)]})
