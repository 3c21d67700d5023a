"""The project's real config files, loaded as `bin/train --config=configs/NAME.py` would."""

import importlib.util

from tests.paths import CONFIGS


def load_config(name: str):
    """`configs/{name}.py`'s `get_config()` (unlocked, so tests can shrink it)."""
    spec = importlib.util.spec_from_file_location(f"config_{name}", CONFIGS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def with_fields(config, **fields):
    """`config` with dotted fields set, e.g. `with_fields(c, **{"train.sequences": 2})`; returns it."""
    for key, value in fields.items():
        node = config
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return config
