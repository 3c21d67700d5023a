"""Config validation: every field's range, the shipped config files, and command-line overrides."""

import math
from pathlib import Path

import ml_collections
import pytest
from absl import flags
from ml_collections import config_flags

from rledit_jax import config_schema, models
from rledit_jax.config_validation import RULES, ConfigError, _leaves, check_mesh, validate
from rledit_jax.llm_config import model_config_of
from rledit_jax.method.sites import make_layout
from rledit_jax.models import known_configs
from tests.config_files import CONFIGS, load_config, with_fields

# The known model whose shapes each shipped config targets (None: the built-in tiny model).
CONFIG_MODELS = {
    "tiny": None,
    "tiny_llama": None,
    "bench_gptj_8l": None,
    "gptj": "gpt-j-6b",
    "llama3_8b_instruct": "meta-llama-3-8b-instruct",
    "llama3_70b_instruct": "meta-llama-3-70b-instruct",
    "mistral_7b": "mistral-7b-v0.3",
    "gemma2_9b": "gemma-2-9b",
    "qwen2_5_7b": "qwen2.5-7b-instruct",
}


def test_rules_cover_exactly_the_schema():
    # The tiny model's other fields are its architecture's HF config fields, checked by it.
    schema = {k for k in _leaves(config_schema.default_config()) if not k.startswith("model.tiny.")}
    assert set(RULES) == schema | {"model.tiny.model_type", "model.tiny.seed"}


def test_default_and_tiny_configs_are_valid():
    validate(config_schema.default_config())
    validate(load_config("tiny"))


@pytest.mark.parametrize("name", sorted(p.stem for p in CONFIGS.glob("*.py")))
def test_every_shipped_config_validates(name):
    assert name in CONFIG_MODELS, f"add configs/{name}.py to CONFIG_MODELS"
    config = load_config(name)
    # Shipped configs may name placeholder paths (e.g. /path/to/gpt-j-6b) that users set.
    validate(config, check_files=False)
    known = CONFIG_MODELS[name]
    if known is None:
        llm = model_config_of(config.model)
    else:
        llm = models.config_from_hf(known_configs.KNOWN_CONFIGS[known])
    assert make_layout(llm, config.model.edit_sites).names == config.model.edit_sites
    check_mesh(llm, config.mesh)  # the mesh divides every weight it splits


def shrunk(**fields):
    return with_fields(load_config("tiny"), **fields)


BAD = {
    "hparams.lr=nan": ({"hparams.lr": math.nan}, r"hparams\.lr=nan: must be a finite number > 0"),
    "hparams.lr=-1": ({"hparams.lr": -1e-6}, r"hparams\.lr=-1e-06: must be a finite number > 0"),
    "hparams.meta_lr=inf": ({"hparams.meta_lr": math.inf}, r"hparams\.meta_lr=inf: must be a finite number > 0"),
    "back_depth=0": ({"hparams.back_depth": 0}, r"hparams\.back_depth=0: must be an int >= 1"),
    "time_decay=1.5": ({"hparams.time_decay": 1.5}, r"hparams\.time_decay=1\.5: must be a finite number > 0 and <= 1"),
    "loc_coef<0": ({"hparams.loc_coef": -0.1}, r"hparams\.loc_coef=-0\.1: must be a finite number >= 0"),
    "batch_size>n_edits": ({"data.batch_size": 9}, r"data\.batch_size=9: must be <= data\.n_edits=8"),
    "data.name": ({"data.name": "squad"}, r"data\.name='squad': must be one of \['zsre', 'counterfact', 'fever'\]"),
    "token": ({"hparams.token": "every"}, r"hparams\.token='every': must be one of \['ans', 'all'\]"),
    "gradient": ({"train.gradient": "full"}, r"train\.gradient='full': must be one of \['reference', "),
    "dtype": ({"model.dtype": "float16"}, r"model\.dtype='float16': must be one of \['float32', 'bfloat16'\]"),
    "no sites": ({"model.edit_sites": ()}, r"model\.edit_sites=\(\): must be a non-empty tuple"),
    "site twice": ({"model.edit_sites": ("a", "a")}, r"model\.edit_sites=\('a', 'a'\): names a site twice"),
    "n_head": ({"model.tiny.n_head": 3}, r"config field model\.tiny: n_embd=64 is not divisible by n_head=3"),
    "rotary_dim": ({"model.tiny.rotary_dim": 7}, r"config field model\.tiny: rotary_dim=7 must be even"),
    "tiny model_type": ({"model.tiny.model_type": "rwkv"}, r"model\.tiny\.model_type='rwkv': must be one of \['gptj'"),
    "unknown site": (
        {"model.edit_sites": ("transformer.h.9.mlp.fc_out",)},
        r"config field model\.edit_sites: unknown edit site 'transformer\.h\.9\.mlp\.fc_out' of this gptj model",
    ),
    "missing model": ({"model.path": "/no/such/model"}, r"model\.path='/no/such/model': no such directory"),
    "one data path": ({"data.train_path": __file__}, r"data\.eval_path=None: set both data\.train_path"),
    "hypernet suffix": ({"init.reference_hypernet": __file__}, r"init\.reference_hypernet=.*must end in one of"),
    "checkpoint.keep": ({"checkpoint.keep": 0}, r"checkpoint\.keep=0: must be an int >= 1"),
    "schedule": ({"train.schedule": "never"}, r"train\.schedule='never': must be one of \['evaluate_each_sequence', "),
    "curve_every<0": ({"eval.curve_every": -1}, r"eval\.curve_every=-1: must be an int >= 0"),
    "general task": (
        {"eval.general_tasks": ("sst2", "squad")},
        r"eval\.general_tasks=.*must be a non-empty tuple of tasks",
    ),
    "general_path": ({"eval.general_path": "/no/such/dir"}, r"eval\.general_path='/no/such/dir': no such directory"),
    "method": ({"method": "sgd"}, r"method='sgd': must be one of \['rledit', 'malmen', 'mend', "),
    "scheme": ({"train.scheme": "epoch"}, r"train\.scheme='epoch': must be one of \['sequence', 'per_batch'\]"),
    "untrained scheme": (
        {"method": "ridge", "train.scheme": "sequence"},
        r"train\.scheme='sequence': method ridge is not trained; leave it unset",
    ),
    "per_batch gradient": (
        {"method": "malmen", "train.gradient": "unrolled"},
        r"train\.gradient='unrolled': method malmen trains per batch \(train\.scheme=per_batch\): only 'reference'",
    ),
    "per_batch trace": (
        {"method": "mend", "trace": True},
        r"trace=True: traces are written for networks trained by train\.scheme=sequence only",
    ),
    "ft steps": ({"method": "ft", "baselines.ft.steps": 0}, r"baselines\.ft\.steps=0: must be an int >= 1"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_out_of_range_values_are_refused_by_name(case):
    fields, message = BAD[case]
    with pytest.raises(ConfigError, match=message):
        validate(shrunk(**fields))


def test_tiny_fields_are_checked_by_the_architecture():
    config = load_config("tiny")
    config.model.tiny.n_kv_heads = 2
    with pytest.raises(
        ConfigError, match=r"model\.tiny: GPT-J config has fields this implementation does not support"
    ):
        validate(config)


def test_unknown_and_missing_fields_are_refused():
    config = load_config("tiny")
    config.hparams.rnak = 8
    with pytest.raises(ConfigError, match=r"not in rledit_jax/config_schema\.py: \['hparams\.rnak'\]; missing: \[\]"):
        validate(config)


def _non_scalar_fields(config, prefix=""):
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            yield from _non_scalar_fields(value, f"{prefix}{key}.")
        elif isinstance(value, (tuple, list, dict)):
            yield f"{prefix}{key}", value


OVERRIDES = {"model.edit_sites": ("transformer.h.5.mlp.fc_out",), "eval.general_tasks": ("sst2", "mmlu")}


def test_every_non_scalar_field_is_overridable_from_the_command_line():
    """As `bin/train` parses them: --config.<field>='<python literal>' on a locked config file."""
    fields = dict(_non_scalar_fields(config_schema.default_config()))
    assert set(fields) == set(OVERRIDES), "add the new non-scalar field to OVERRIDES"
    for name, value in OVERRIDES.items():
        assert isinstance(fields[name], tuple), f"{name} must be a tuple (lists cannot be overridden)"
        argv = ["bin/train", f"--config={Path(CONFIGS) / 'tiny.py'}", f"--config.{name}={value!r}"]
        flag_values = flags.FlagValues()
        config_flags.DEFINE_config_file("config", None, "", flag_values=flag_values, lock_config=True, sys_argv=argv)
        flag_values(argv)
        node = flag_values.config
        for part in name.split("."):
            node = node[part]
        assert node == value


# The kernel-shape groups (one hypernetwork and normaliser each) the model configs' docstrings state.
SHAPE_GROUPS = {
    "tiny_llama": {(64, 256): 1, (256, 64): 1},
    "llama3_8b_instruct": {(4096, 14336): 18},
    "llama3_70b_instruct": {(8192, 28672): 18},
    "mistral_7b": {(14336, 4096): 2},
    "gemma2_9b": {(3584, 14336): 18},
    "qwen2_5_7b": {(3584, 18944): 16},
}


@pytest.mark.parametrize("name", sorted(SHAPE_GROUPS))
def test_shape_groups_of_the_model_configs(name):
    config = load_config(name)
    known = CONFIG_MODELS[name]
    llm = model_config_of(config.model) if known is None else models.config_from_hf(known_configs.KNOWN_CONFIGS[known])
    groups = make_layout(llm, config.model.edit_sites).groups
    assert {shape: len(sites) for shape, sites in groups.items()} == SHAPE_GROUPS[name]
