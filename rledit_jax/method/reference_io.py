"""Interop with the PyTorch reference's hypernetwork state dicts (an `nn.ModuleDict` of nets by shape).

Each shape group `(d_in, d_out)` has the prefix `str((d_in, d_out))`, e.g. "(16384, 4096)". With
width = d_in + d_out, the reference names map onto our pytrees (`hypernet.Params`,
`normalizer.NormState`) as

  reference name                    reference shape    ours
  {prefix}.blocks.{i}.A             [width, rank]      params["blocks"][i]["A"]
  {prefix}.blocks.{i}.B             [rank, width]      params["blocks"][i]["B"]
  {prefix}.blocks.{i}.bias          [width]            params["blocks"][i]["bias"]
  {prefix}.blocks.{i}.scale.weight  [n_sites, width]   params["blocks"][i]["scale"]
  {prefix}.blocks.{i}.shift.weight  [n_sites, width]   params["blocks"][i]["shift"]
  {prefix}.lr.weight                [n_sites, 1]       params["lr"]      [n_sites]
  {prefix}.lamda.weight             [n_sites, 1]       params["lamda"]   [n_sites]
  {prefix}.normalizer.n             [1]                NormState.n       []
  {prefix}.normalizer.mean          [width]            NormState.mean
  {prefix}.normalizer.var           [width]            NormState.m2
  {prefix}.normalizer.std           [width]            NormState.std

Everything is float32. In memory a state dict is `dict[str, np.ndarray]`; on disk it is `.pth`/`.pt`
(read only, as written by the reference's `torch.save(net.state_dict(), ...)`), `.npz` or `.safetensors`.
"""

import os
import re
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import safetensors.numpy

from rledit_jax import atomic
from rledit_jax.dtypes import working_float
from rledit_jax.method.normalizer import NormState
from rledit_jax.method.spec import Hypernets

Shape = tuple[int, int]

# Reference block leaf -> our block key; reference normaliser buffer -> our NormState field.
_BLOCK_LEAVES = {"A": "A", "B": "B", "bias": "bias", "scale.weight": "scale", "shift.weight": "shift"}
_NORM_LEAVES = {"n": "n", "mean": "mean", "var": "m2", "std": "std"}
_NAME = re.compile(r"\((\d+), (\d+)\)\.(.+)")
_BLOCK_INDEX = re.compile(r"blocks\.(\d+)\.")


def _prefix(shape: Shape) -> str:
    return f"({int(shape[0])}, {int(shape[1])})"


def _reference_shapes(shape: Shape, rank: int, n_sites: int, n_blocks: int) -> dict[str, tuple]:
    """Expected reference names (without the group prefix) and shapes of one group."""
    width = shape[0] + shape[1]
    block = {
        "A": (width, rank),
        "B": (rank, width),
        "bias": (width,),
        "scale.weight": (n_sites, width),
        "shift.weight": (n_sites, width),
    }
    shapes = {f"blocks.{i}.{leaf}": s for i in range(n_blocks) for leaf, s in block.items()}
    shapes.update({"lr.weight": (n_sites, 1), "lamda.weight": (n_sites, 1), "normalizer.n": (1,)})
    shapes.update({f"normalizer.{leaf}": (width,) for leaf in ("mean", "var", "std")})
    return shapes


def _dim(array: np.ndarray | None, axis: int) -> int | None:
    return array.shape[axis] if array is not None and array.ndim > axis else None


def _n_blocks(leaves: Mapping[str, np.ndarray]) -> int:
    """The number of distinct block indices; a gap in the numbering shows up as missing names."""
    return len({m[1] for m in map(_BLOCK_INDEX.match, leaves) if m})


def _check_group(shape: Shape, leaves: dict[str, np.ndarray]) -> list[str]:
    """Problems with one group's leaves; n_blocks, rank and n_sites are read off the leaves."""
    prefix = _prefix(shape)
    n_blocks = _n_blocks(leaves)
    rank = _dim(leaves.get("blocks.0.A"), 1)
    n_sites = _dim(leaves.get("lr.weight"), 0)
    expected = _reference_shapes(shape, rank, n_sites, n_blocks)
    missing = sorted(f"{prefix}.{leaf}" for leaf in expected.keys() - leaves.keys())
    unexpected = sorted(f"{prefix}.{leaf}" for leaf in leaves.keys() - expected.keys())
    wrong = sorted(
        f"{prefix}.{leaf}: {leaves[leaf].shape} != {expected[leaf]}"
        for leaf in expected.keys() & leaves.keys()
        if leaves[leaf].shape != expected[leaf]
    )
    problems = []
    if n_blocks == 0:
        problems.append(f"{prefix}: no blocks")
    if missing:
        problems.append(f"{prefix} (n_blocks={n_blocks} distinct block indices): missing {missing}")
    if unexpected:
        problems.append(f"unexpected {unexpected}")
    if wrong:
        read_off = f"rank={rank} from blocks.0.A, n_sites={n_sites} from lr.weight"
        problems.append(f"shape mismatch ({read_off}): {wrong}")
    return problems


def _parse(state: Mapping[str, object]) -> Hypernets:
    """Validates a reference state dict and splits it into numpy-backed nets and norms."""
    groups: dict[Shape, dict[str, np.ndarray]] = {}
    problems = []
    for name, value in state.items():
        match = _NAME.fullmatch(name)
        if match is None:
            problems.append(f"unexpected {name!r} (not '(d_in, d_out).<leaf>')")
            continue
        groups.setdefault((int(match[1]), int(match[2])), {})[match[3]] = np.asarray(value)
    if not state:
        problems.append("empty state dict")
    for shape, leaves in groups.items():
        problems += _check_group(shape, leaves)
    if problems:
        raise ValueError("invalid reference hypernetwork state dict:\n  " + "\n  ".join(problems))

    nets, norms = {}, {}
    for shape, leaves in groups.items():
        nets[shape] = {
            "blocks": [
                {ours: leaves[f"blocks.{i}.{ref}"] for ref, ours in _BLOCK_LEAVES.items()}
                for i in range(_n_blocks(leaves))
            ],
            "lr": leaves["lr.weight"][:, 0],
            "lamda": leaves["lamda.weight"][:, 0],
        }
        norm = {ours: leaves[f"normalizer.{ref}"] for ref, ours in _NORM_LEAVES.items()}
        norms[shape] = NormState(**norm).replace(n=norm["n"].reshape(()))
    return Hypernets(nets=nets, norms=norms)


def from_reference(state: Mapping[str, object]) -> Hypernets:
    """Reference state dict (values array-like) -> `Hypernets` keyed by `(d_in, d_out)`.

    Values are cast to the working float (float32; float64 under `jax_enable_x64`). Raises ValueError
    listing every unparseable, missing, unexpected or misshapen name.
    """
    return jax.tree.map(lambda x: jnp.asarray(x, working_float()), _parse(state))


def to_reference(hypernets: Hypernets) -> dict[str, np.ndarray]:
    """`Hypernets` keyed by `(d_in, d_out)` -> reference state dict of float32 numpy arrays.

    `hypernets.nets` may be any pytree shaped like the nets, e.g. their gradients.
    """
    nets, norms = hypernets.nets, hypernets.norms
    if nets.keys() != norms.keys():
        raise ValueError(f"nets and norms cover different shapes: {sorted(nets)} vs {sorted(norms)}")
    state = {}
    for shape, params in nets.items():
        prefix = _prefix(shape)
        for i, block in enumerate(params["blocks"]):
            for ref, ours in _BLOCK_LEAVES.items():
                state[f"{prefix}.blocks.{i}.{ref}"] = np.asarray(block[ours], np.float32)
        state[f"{prefix}.lr.weight"] = np.asarray(params["lr"], np.float32)[:, None]
        state[f"{prefix}.lamda.weight"] = np.asarray(params["lamda"], np.float32)[:, None]
        for ref, ours in _NORM_LEAVES.items():
            state[f"{prefix}.normalizer.{ref}"] = np.asarray(getattr(norms[shape], ours), np.float32)
        state[f"{prefix}.normalizer.n"] = state[f"{prefix}.normalizer.n"].reshape(1)
    _parse(state)  # The same validation as on reading, so a malformed pytree fails here, not in torch.
    return state


def load_reference_file(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a reference state dict from `.pth`/`.pt` (needs torch), `.npz` or `.safetensors`."""
    suffix = os.path.splitext(path)[1]
    if suffix in (".pth", ".pt"):
        import torch  # Not a runtime dependency: only reading reference checkpoints needs it.

        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ValueError(f"{path}: expected a state_dict (names -> tensors), got {type(state).__name__}")
        return {name: value.numpy() for name, value in state.items()}
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    if suffix == ".safetensors":
        return safetensors.numpy.load_file(path)
    raise ValueError(f"{path}: unknown extension {suffix!r}; expected .pth, .pt, .npz or .safetensors")


def save_reference_file(path: str | os.PathLike, state: Mapping[str, np.ndarray]) -> None:
    """Writes a validated reference state dict to `.npz` or `.safetensors`, atomically (`rledit_jax.atomic`).

    The reference reads `.safetensors` with `net.load_state_dict(safetensors.torch.load_file(path))`.
    """
    suffix = os.path.splitext(path)[1]
    if suffix not in (".npz", ".safetensors"):
        raise ValueError(f"{path}: can only write .npz or .safetensors, not {suffix!r}")
    _parse(state)
    arrays = {name: np.ascontiguousarray(value, np.float32) for name, value in state.items()}
    with atomic.atomic_path(path) as tmp:
        if suffix == ".npz":
            np.savez(tmp, **arrays)
        else:
            safetensors.numpy.save_file(arrays, tmp)
