"""Checks a project config against the schema of `config_schema.py` before any work starts.

`validate(config)` raises `ConfigError` (a ValueError) for the first field that is missing, unknown or
out of range, naming the field, its value and what is allowed, e.g.

    config field editor.lr=nan: must be a finite number > 0

Paths are checked to exist; whether the edit sites exist depends on the model and is checked where
its config is read (`editor.sites.make_layout`), still before any weights load.
"""

import math
import os
from collections.abc import Callable

import ml_collections

from rledit_jax.config_schema import DATASETS, GRADIENT_MODES, MODEL_DTYPES, TOKEN_MODES, default_config


class ConfigError(ValueError):
    """A config field that is missing, unknown or out of range."""


def _fail(name: str, value, allowed: str):
    raise ConfigError(f"config field {name}={value!r}: {allowed}")


def _number(name, value, *, low=None, high=None, low_open=False, integer=False):
    bounds = []
    if low is not None:
        bounds.append(f"> {low}" if low_open else f">= {low}")
    if high is not None:
        bounds.append(f"<= {high}")
    allowed = " ".join(["must be", "an int" if integer else "a finite number", " and ".join(bounds)]).strip()
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or (not integer and not math.isfinite(value)):
        _fail(name, value, allowed)
    if (low is not None and (value <= low if low_open else value < low)) or (high is not None and value > high):
        _fail(name, value, allowed)


def positive_int(name, value):
    _number(name, value, low=1, integer=True)


def int_at_least_0(name, value):
    _number(name, value, low=0, integer=True)


def positive_number(name, value):
    _number(name, value, low=0, low_open=True)


def non_negative_number(name, value):
    _number(name, value, low=0)


def one_of(*choices) -> Callable:
    def check(name, value):
        if value not in choices:
            _fail(name, value, f"must be one of {list(choices)}")

    return check


def boolean(name, value):
    if not isinstance(value, bool):
        _fail(name, value, "must be True or False")


def optional_path(kind: str, suffixes: tuple[str, ...] = ()) -> Callable:
    """Unset, or an existing file (`kind="file"`) / directory (`kind="dir"`) with one of `suffixes`."""
    exists = os.path.isfile if kind == "file" else os.path.isdir

    def check(name, value, check_files=True):
        if value is None:
            return
        if not isinstance(value, str) or not value:
            _fail(name, value, f"must be a {kind} path or unset")
        if check_files and not exists(value):
            _fail(name, value, f"no such {'directory' if kind == 'dir' else kind}")
        if suffixes and not value.endswith(suffixes):
            _fail(name, value, f"must end in one of {list(suffixes)}")

    return check


def edit_sites(name, value):
    if not isinstance(value, tuple) or not value or not all(isinstance(s, str) and s for s in value):
        _fail(name, value, "must be a non-empty tuple of HF linear names, e.g. ('transformer.h.3.mlp.fc_out',)")
    if len(set(value)) != len(value):
        _fail(name, value, "names a site twice")


def any_int(name, value):
    _number(name, value, integer=True)


_MODEL_DIR = optional_path("dir")
_DATA_FILE = optional_path("file")
_TOKENIZER_DIR = optional_path("dir")
_HYPERNET_FILE = optional_path("file", (".pth", ".pt", ".npz", ".safetensors"))
PATH_RULES = (_MODEL_DIR, _DATA_FILE, _TOKENIZER_DIR, _HYPERNET_FILE)

RULES: dict[str, Callable] = {
    "model.path": _MODEL_DIR,
    "model.dtype": one_of(*MODEL_DTYPES),
    "model.edit_sites": edit_sites,
    "model.tiny.n_positions": positive_int,
    "model.tiny.n_embd": positive_int,
    "model.tiny.n_layer": positive_int,
    "model.tiny.n_head": positive_int,
    "model.tiny.rotary_dim": positive_int,
    "model.tiny.n_inner": positive_int,
    "model.tiny.seed": any_int,
    "data.name": one_of(*DATASETS),
    "data.train_path": _DATA_FILE,
    "data.eval_path": _DATA_FILE,
    "data.tokenizer_path": _TOKENIZER_DIR,
    "data.n_edits": positive_int,
    "data.batch_size": positive_int,
    "data.stream_file": _DATA_FILE,
    "data.truncate": boolean,
    "data.skip_malformed": boolean,
    "editor.rank": positive_int,
    "editor.n_blocks": positive_int,
    "editor.lr": positive_number,
    "editor.meta_lr": positive_number,
    "editor.loc_coef": non_negative_number,
    "editor.reg_coef": non_negative_number,
    "editor.max_grad_norm": positive_number,
    "editor.time_decay": lambda n, v: _number(n, v, low=0, high=1, low_open=True),
    "editor.back_depth": positive_int,
    "editor.n_epochs": positive_int,
    "editor.token": one_of(*TOKEN_MODES),
    "train.num_seq": positive_int,
    "train.seed": int_at_least_0,
    "train.gradient": one_of(*GRADIENT_MODES),
    "eval.num_seq": positive_int,
    "init.reference_hypernet": _HYPERNET_FILE,
    "checkpoint.every": positive_int,
    "checkpoint.keep": positive_int,
    "trace": boolean,
}


def _leaves(config: ml_collections.ConfigDict, prefix: str = "") -> dict:
    out = {}
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def validate(config: ml_collections.ConfigDict, *, check_files: bool = True) -> None:
    """Raises `ConfigError` naming the first bad field; see the module docstring.

    `check_files=False` skips the existence of paths (for configs shipped with placeholder paths).
    """
    fields = _leaves(config)
    schema = set(_leaves(default_config()))
    unknown = sorted(fields.keys() - schema)
    missing = sorted(schema - fields.keys())
    if unknown or missing:
        raise ConfigError(f"config fields not in rledit_jax/config_schema.py: {unknown}; missing: {missing}")
    for name, check in RULES.items():
        if check in PATH_RULES:
            check(name, fields[name], check_files)
        else:
            check(name, fields[name])
    tiny = config.model.tiny
    if tiny.n_embd % tiny.n_head:
        _fail("model.tiny.n_head", tiny.n_head, f"must divide model.tiny.n_embd={tiny.n_embd}")
    head_dim = tiny.n_embd // tiny.n_head
    if tiny.rotary_dim % 2 or tiny.rotary_dim > head_dim:
        _fail("model.tiny.rotary_dim", tiny.rotary_dim, f"must be even and at most the head dim {head_dim}")
    if config.data.batch_size > config.data.n_edits:
        _fail("data.batch_size", config.data.batch_size, f"must be <= data.n_edits={config.data.n_edits}")
    if bool(config.data.train_path) != bool(config.data.eval_path):
        name = "data.eval_path" if config.data.train_path else "data.train_path"
        _fail(name, None, "set both data.train_path and data.eval_path, or neither (synthetic facts)")
