"""Checks a project config against the schema of `config_schema.py` before any work starts.

`validate(config)` raises `ConfigError` (a ValueError) for the first field that is missing, unknown or
out of range, naming the field, its value and what is allowed, e.g.

    config field hparams.lr=nan: must be a finite number > 0

Paths are checked to exist. The model is checked through its config alone (no weights read): the
tiny model's `model.tiny` fields as its architecture checks an HF config.json, a `model.path`'s
config.json, and that every edit site exists in it.
"""

import math
import os
from collections.abc import Callable

import ml_collections

from rledit_jax.baselines import methods
from rledit_jax.config_schema import (
    DATASETS,
    GENERAL_TASKS,
    GRADIENT_MODES,
    MATMUL_PRECISIONS,
    METHODS,
    MODEL_DTYPES,
    SCHEDULES,
    TOKEN_MODES,
    TRAIN_SCHEMES,
    default_config,
)
from rledit_jax.llm_config import model_config_of
from rledit_jax.method.sites import make_layout
from rledit_jax.models import registry
from rledit_jax.partitioning import rules


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


def general_tasks(name, value):
    if not isinstance(value, tuple) or not value or any(t not in GENERAL_TASKS for t in value):
        _fail(name, value, f"must be a non-empty tuple of tasks from {list(GENERAL_TASKS)}")


def any_int(name, value):
    _number(name, value, integer=True)


_MODEL_DIR = optional_path("dir")
_DATA_FILE = optional_path("file")
_TOKENIZER_DIR = optional_path("dir")
_HYPERNET_FILE = optional_path("file", (".pth", ".pt", ".npz", ".safetensors"))
_GENERAL_DIR = optional_path("dir")
PATH_RULES = (_MODEL_DIR, _DATA_FILE, _TOKENIZER_DIR, _HYPERNET_FILE, _GENERAL_DIR)

RULES: dict[str, Callable] = {
    "model.path": _MODEL_DIR,
    "model.dtype": one_of(*MODEL_DTYPES),
    "model.matmul_precision": one_of(*MATMUL_PRECISIONS),
    "model.edit_sites": edit_sites,
    "model.tiny.model_type": one_of(*registry.ARCHITECTURES),
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
    "hparams.rank": positive_int,
    "hparams.n_blocks": positive_int,
    "hparams.lr": positive_number,
    "hparams.meta_lr": positive_number,
    "hparams.loc_coef": non_negative_number,
    "hparams.reg_coef": non_negative_number,
    "hparams.max_grad_norm": positive_number,
    "hparams.time_decay": lambda n, v: _number(n, v, low=0, high=1, low_open=True),
    "hparams.back_depth": positive_int,
    "hparams.token": one_of(*TOKEN_MODES),
    "train.sequences": positive_int,
    "train.steps_per_sequence": positive_int,
    "train.seed": int_at_least_0,
    "train.gradient": one_of(*GRADIENT_MODES),
    "train.schedule": one_of(*SCHEDULES),
    "eval.steps": positive_int,
    "eval.curve_every": int_at_least_0,
    "eval.generative": boolean,
    "eval.general_path": _GENERAL_DIR,
    "eval.general_every": int_at_least_0,
    "eval.general_n": positive_int,
    "eval.general_tasks": general_tasks,
    "init.reference_hypernet": _HYPERNET_FILE,
    "checkpoint.every": positive_int,
    "checkpoint.keep": positive_int,
    "mesh.data": positive_int,
    "mesh.model": positive_int,
    "trace": boolean,
    "method": one_of(*METHODS),
    "train.scheme": lambda n, v: v is None or one_of(*TRAIN_SCHEMES)(n, v),
    "baselines.mend.rank": positive_int,
    "baselines.mend.n_blocks": positive_int,
    "baselines.mend.token": one_of(*TOKEN_MODES),
    "baselines.mend.loc_coef": non_negative_number,
    "baselines.mend.reg_coef": non_negative_number,
    "baselines.retrain.every": positive_int,
    "baselines.ridge.lr": positive_number,
    "baselines.ft.steps": positive_int,
    "baselines.ft.lr": positive_number,
}
# The tiny model's other fields are its architecture's HF config fields, checked by the architecture.
_TINY = "model.tiny."


def _leaves(config: ml_collections.ConfigDict, prefix: str = "") -> dict:
    out = {}
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _check_method(config) -> None:
    """The combinations of `method`, `train.scheme` / `train.gradient` and the fields only some methods
    read (README "Methods compared" has the table)."""
    name, method = config.method, methods.METHODS[config.method]
    if not method.trained and config.train.scheme is not None:
        _fail("train.scheme", config.train.scheme, f"method {name} is not trained; leave it unset")
    if methods.scheme_of(config) != "sequence" and config.train.gradient != "reference":
        why = "is not trained" if not method.trained else "trains per batch (train.scheme=per_batch)"
        _fail("train.gradient", config.train.gradient, f"method {name} {why}: only 'reference'")
    if config.init.reference_hypernet and (method.retrain or not method.trained):
        start = "from a fresh network at every retraining" if method.retrain else "without a trained network"
        _fail("init.reference_hypernet", config.init.reference_hypernet, f"method {name} edits {start}")
    if config.trace and not methods.sequence_trained(config):
        _fail("trace", config.trace, "traces are written for networks trained by train.scheme=sequence only")


def validate(config: ml_collections.ConfigDict, *, check_files: bool = True) -> None:
    """Raises `ConfigError` naming the first bad field; see the module docstring.

    `check_files=False` skips the existence of paths (for configs shipped with placeholder paths), and
    with them the check of a `model.path`'s edit sites.
    """
    fields = _leaves(config)
    schema = set(_leaves(default_config()))
    unknown = sorted(k for k in fields.keys() - schema if not k.startswith(_TINY))
    missing = sorted(k for k in schema - fields.keys() if k in RULES)
    if unknown or missing:
        raise ConfigError(f"config fields not in rledit_jax/config_schema.py: {unknown}; missing: {missing}")
    for name, check in RULES.items():
        if check in PATH_RULES:
            check(name, fields[name], check_files)
        else:
            check(name, fields[name])
    if config.data.batch_size > config.data.n_edits:
        _fail("data.batch_size", config.data.batch_size, f"must be <= data.n_edits={config.data.n_edits}")
    if bool(config.data.train_path) != bool(config.data.eval_path):
        name = "data.eval_path" if config.data.train_path else "data.train_path"
        _fail(name, None, "set both data.train_path and data.eval_path, or neither (synthetic facts)")
    _check_method(config)
    if config.model.path and not check_files:
        return
    try:
        llm_config = model_config_of(config.model)
    except ValueError as e:
        field = "model.path" if config.model.path else "model.tiny"
        raise ConfigError(f"config field {field}: {e}") from None
    try:
        make_layout(llm_config, config.model.edit_sites)
    except ValueError as e:
        raise ConfigError(f"config field model.edit_sites: {e}") from None
    check_mesh(llm_config, config.mesh)


def check_mesh(llm_config, mesh_config) -> None:
    """Raises `ConfigError` unless `mesh.model` divides every dimension of the LLM's weights it splits."""
    if mesh_config.model == 1:  # Splits nothing: skips tracing the model's shapes.
        return
    shapes = rules.param_shapes(llm_config)
    problems = rules.indivisible(llm_config, shapes, {"data": mesh_config.data, "model": mesh_config.model})
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        _fail(
            "mesh.model", mesh_config.model, f"must divide every weight dimension it splits, not {problems[0]}{more}"
        )
