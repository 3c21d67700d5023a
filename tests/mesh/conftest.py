"""The mesh tests need 8 devices: `make test` runs them on fake CPU devices in a process of their own,
  XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m pytest -q -m mesh
(the flag must be set before jax starts, so they cannot share the main test process)."""

import jax
import pytest

N_DEVICES = 8


@pytest.fixture(autouse=True)
def eight_devices():
    if jax.device_count() < N_DEVICES:
        pytest.skip(f"needs {N_DEVICES} devices: XLA_FLAGS=--xla_force_host_platform_device_count=8 pytest -m mesh")
