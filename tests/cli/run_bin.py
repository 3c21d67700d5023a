"""Runs a `bin/` script as a user would, in a subprocess on the CPU."""

import os
import subprocess
import sys

from tests.paths import ROOT


def run_bin(script: str, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run(
        [sys.executable, str(ROOT / "bin" / script), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
