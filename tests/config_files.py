"""The project's real config files, loaded as `bin/train --config=configs/NAME.py` would."""

import importlib.util
from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def load_config(name: str):
    """`configs/{name}.py`'s `get_config()` (unlocked, so tests can shrink it)."""
    spec = importlib.util.spec_from_file_location(f"config_{name}", CONFIGS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()
