"""Interop with the PyTorch reference's hypernetwork state dicts, files and names."""

import numpy as np
import pytest
import safetensors.torch
import torch

from rledit_jax.method import hypernet, normalizer, reference_io
from rledit_jax.method.spec import Hypernets
from tests.method.np_oracle import EPS32

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
    hypernets = reference_io.from_reference(state)
    nets, norms = hypernets.nets, hypernets.norms
    assert sorted(nets) == sorted(GROUPS) == sorted(norms)
    net = nets[(6, 4)]
    np.testing.assert_array_equal(net["blocks"][1]["scale"], state["(6, 4).blocks.1.scale.weight"])
    np.testing.assert_array_equal(net["lamda"], state["(6, 4).lamda.weight"][:, 0])
    np.testing.assert_array_equal(norms[(3, 5)].m2, state["(3, 5).normalizer.var"])
    assert norms[(3, 5)].n.shape == () and float(norms[(3, 5)].n) == 42.0
    assert_same_state(reference_io.to_reference(hypernets), state)


def test_reference_names_mean_what_the_reference_computes():
    """Torch forward of the reference's net (normaliser, clamp blocks, split) read straight off the names."""
    state = reference_state(14)
    hypernets = reference_io.from_reference(state)
    nets, norms = hypernets.nets, hypernets.norms
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

    hypernets = reference_io.from_reference(reference_state(20))
    nets, norms = hypernets.nets, hypernets.norms
    with pytest.raises(ValueError, match="different shapes"):
        reference_io.to_reference(Hypernets(nets=nets, norms={(6, 4): norms[(6, 4)]}))
