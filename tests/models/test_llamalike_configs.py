"""Llama-like configs read as transformers reads them: defaults, legacy and new rotary fields, known configs.

Oracle: transformers' own config classes (`AutoConfig.for_model`), viewed in our fields' terms; the
sliding-window layers follow each HF modeling file (Mistral: every layer when `sliding_window` is
set; Gemma-2 and Qwen2: their `layer_types`).
"""

import dataclasses
import json

import pytest
import transformers

from rledit_jax import models
from rledit_jax.models import known_configs, registry
from rledit_jax.models.llamalike import FULL, SLIDING
from tests.tiny_hf import make_llamalike

FAMILIES = ("llama", "mistral", "gemma2", "qwen2")


def hf_view(hf: transformers.PretrainedConfig) -> dict:
    """What HF's model will compute with, in our config's field names."""
    rope = dict(hf.rope_parameters)
    rope_type = rope.pop("rope_type")
    theta = rope.pop("rope_theta")
    heads = hf.num_attention_heads
    if hf.model_type == "mistral":
        types = (FULL if hf.sliding_window is None else SLIDING,) * hf.num_hidden_layers
    else:
        types = tuple(getattr(hf, "layer_types", None) or (FULL,) * hf.num_hidden_layers)
    eos = hf.eos_token_id
    return dict(
        vocab_size=hf.vocab_size,
        hidden_size=hf.hidden_size,
        intermediate_size=hf.intermediate_size,
        num_hidden_layers=hf.num_hidden_layers,
        num_attention_heads=heads,
        num_key_value_heads=hf.num_key_value_heads,
        head_dim=getattr(hf, "head_dim", None) or hf.hidden_size // heads,
        max_position_embeddings=hf.max_position_embeddings,
        rms_norm_eps=hf.rms_norm_eps,
        rope_theta=theta,
        rope_scaling=None if rope_type == "default" else rope,
        layer_types=types,
        sliding_window=hf.sliding_window if SLIDING in types else None,
        tie_word_embeddings=hf.tie_word_embeddings,
        # Gemma-2 only (the others scale by head_dim ** -0.5 and cap nothing).
        query_pre_attn_scalar=getattr(hf, "query_pre_attn_scalar", None),
        attn_logit_softcapping=getattr(hf, "attn_logit_softcapping", None),
        final_logit_softcapping=getattr(hf, "final_logit_softcapping", None),
        bos_token_id=hf.bos_token_id,
        eos_token_id=tuple(eos) if isinstance(eos, list) else eos,
        pad_token_id=hf.pad_token_id,
    )


def our_view(config) -> dict:
    view = {k: v for k, v in dataclasses.asdict(config).items() if k not in ("param_dtype", "dtype")}
    if SLIDING not in config.layer_types:
        view["sliding_window"] = None
    return view


def assert_read_as_hf(hf_dict: dict):
    ours = models.config_from_hf(hf_dict)
    fields = {k: v for k, v in hf_dict.items() if k != "model_type"}
    theirs = transformers.AutoConfig.for_model(hf_dict["model_type"], **fields)
    assert our_view(ours) == hf_view(theirs)
    return ours


@pytest.mark.parametrize("family", FAMILIES)
def test_absent_fields_take_hf_defaults(family):
    assert_read_as_hf({"model_type": family})


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_test_configs_as_transformers_writes_them(tmp_path, family):
    make_llamalike(family, tmp_path)  # transformers 5 writes `rope_parameters`, Gemma-2/Qwen2 `layer_types`
    assert_read_as_hf(json.loads((tmp_path / "config.json").read_text()))


LLAMALIKE_KNOWN = sorted(n for n, c in known_configs.KNOWN_CONFIGS.items() if c["model_type"] in FAMILIES)


@pytest.mark.parametrize("name", LLAMALIKE_KNOWN)
def test_known_configs_read_as_transformers_reads_them(name):
    """Published configs use the legacy `rope_theta` / `rope_scaling` fields."""
    config = assert_read_as_hf(known_configs.KNOWN_CONFIGS[name])
    # config_to_hf writes what transformers and we read back as the same model.
    written = registry.architecture(config.model_type).config_to_hf(config)
    assert models.config_from_hf(json.loads(json.dumps(written))) == config
    assert our_view(config) == hf_view(transformers.AutoConfig.for_model(**written))


def test_legacy_and_new_rope_fields_agree():
    legacy = known_configs.KNOWN_CONFIGS["llama-3.1-8b-instruct"]
    new = {k: v for k, v in legacy.items() if k not in ("rope_theta", "rope_scaling")}
    new["rope_parameters"] = {**legacy["rope_scaling"], "rope_theta": legacy["rope_theta"]}
    assert models.config_from_hf(legacy) == models.config_from_hf(new)
    assert models.config_from_hf(new).rope_scaling.factor == 8.0
