"""The device mesh of a run: axes `data` x `model` with the sizes of `config.mesh`.

`config.mesh.data` splits a step's packed tokens (its micro-batches laid end to end), and
`config.mesh.model` splits the LLM's weights (`rules.py`); the product is the number of devices of
the run, on every host together. The default `1 x 1` runs on the default device, as a run without a
mesh. Both axes are `Auto`: XLA's SPMD partitioner decides everything the input shardings and the
programs' few constraints (`constraints.py`) leave open.
"""

import jax
from jax.sharding import AxisType, Mesh

from rledit_jax.config_validation import ConfigError
from rledit_jax.partitioning.rules import DATA, MODEL

AXES = (DATA, MODEL)


def axis_sizes(mesh_config) -> dict[str, int]:
    """`{"data": n, "model": m}` of `config.mesh`."""
    return {axis: mesh_config[axis] for axis in AXES}


def make_mesh(mesh_config, devices=None) -> Mesh:
    """The mesh of `config.mesh` over `devices` (default: every device of every process).

    Raises `ConfigError` naming `config.mesh` when its size is not the number of devices (a `1 x 1`
    mesh takes the first device).
    """
    devices = jax.devices() if devices is None else list(devices)
    sizes = axis_sizes(mesh_config)
    n = sizes[DATA] * sizes[MODEL]
    if n == 1:
        devices = devices[:1]
    if n != len(devices):
        raise ConfigError(
            f"config field mesh={sizes}: {n} devices, but the run has {len(devices)} "
            f"({devices[0].platform}, {jax.process_count()} process(es)); set mesh.data x mesh.model to {len(devices)}"
        )
    return jax.make_mesh(tuple(sizes.values()), AXES, (AxisType.Auto, AxisType.Auto), devices=devices)
