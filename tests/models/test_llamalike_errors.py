"""Bad Llama-like input stops with a message that names the problem."""

import json

import jax.numpy as jnp
import pytest

from rledit_jax import models, probes
from tests.tiny_hf import make_llamalike


def _edit_config(path, **changes):
    config = json.loads((path / "config.json").read_text())
    config.update(changes)
    (path / "config.json").write_text(json.dumps(config))


LLAMA3 = dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0)


@pytest.mark.parametrize(
    "family, changes, message",
    [
        ("llama", {"attention_bias": True}, r"Llama config field attention_bias=True is not supported"),
        ("llama", {"mlp_bias": True}, r"mlp_bias=True is not supported"),
        ("llama", {"hidden_act": "gelu"}, r"hidden_act='gelu' is not supported \(supported: \('silu',\)\)"),
        ("llama", {"rope_parameters": {"rope_type": "yarn", "factor": 4.0}}, r"rope_type 'yarn' is not supported"),
        ("llama", {"rope_scaling": {"type": "linear", "factor": 2.0}}, r"rope_type 'linear' is not supported"),
        ("llama", {"rope_scaling": dict(LLAMA3, attention_factor=1.0)}, r"keys \['attention_factor'\] are not"),
        ("llama", {"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, r"needs rope scaling keys \['high_"),
        ("llama", {"partial_rotary_factor": 0.5}, r"does not support: \['partial_rotary_factor'\]"),
        ("llama", {"layer_types": ["sliding_attention"] * 3}, r"Llama config has fields .*\['layer_types'\]"),
        ("llama", {"num_key_value_heads": 3}, r"num_attention_heads=4 is not a multiple of num_key_value_heads=3"),
        ("mistral", {"head_dim": 25}, r"head_dim must be a positive even int"),
        ("mistral", {"sliding_window": 0}, r"Mistral config field sliding_window must be a positive int, got 0"),
        ("qwen2", {"use_sliding_window": True}, r"Qwen2 config field use_sliding_window=True is not supported"),
        ("gemma2", {"use_bidirectional_attention": True}, r"use_bidirectional_attention=True is not supported"),
        ("gemma2", {"layer_types": ["chunked_attention"] * 3}, r"layer_types: \['chunked_attention'\] not supp"),
        ("gemma2", {"layer_types": ["full_attention"]}, r"layer_types must list 3 layers"),
        ("gemma2", {"sliding_window_size": 99}, r"sliding_window_size=99 differs from window=41"),
        ("gemma2", {"final_logit_softcapping": -1.0}, r"final_logit_softcapping must be a positive number or null"),
        ("gemma2", {"hidden_activation": "gelu"}, r"hidden_activation='gelu' is not supported"),
    ],
)
def test_unsupported_config_field(tmp_path, family, changes, message):
    make_llamalike(family, tmp_path / "m", num_hidden_layers=3)
    _edit_config(tmp_path / "m", **changes)
    with pytest.raises(ValueError, match=message):
        models.load_hf(str(tmp_path / "m"))


@pytest.fixture(scope="module")
def gemma(tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "model"
    make_llamalike("gemma2", path)
    return models.load_hf(str(path))


@pytest.mark.parametrize("site", ["model.layers.3.mlp.gate_proj", "lm_head", "model.layers.0.mlp.fc_out"])
def test_unknown_site_lists_valid_ones(gemma, site):
    config, params = gemma
    batch = {k: jnp.zeros((1, 4), jnp.int32) for k in ("input_ids", "attention_mask", "labels")}
    pattern = r"model\.layers\.\{0\.\.2\}\.mlp\.gate_proj"  # tied: no lm_head among them
    with pytest.raises(ValueError, match=rf"unknown edit site '{site}' of this gemma2 model.*{pattern}"):
        probes.capture(config, params, (site,), batch)


def test_sequence_longer_than_the_positions(gemma):
    config, params = gemma
    ids = jnp.zeros((1, config.max_position_embeddings + 1), jnp.int32)
    with pytest.raises(ValueError, match="sequence length 513 exceeds the model's 512 positions"):
        models.forward(config, params, ids, jnp.ones_like(ids))


def test_weights_that_do_not_match_config(tmp_path):
    make_llamalike("qwen2", tmp_path / "m")
    _edit_config(tmp_path / "m", num_hidden_layers=3, layer_types=None)
    with pytest.raises(ValueError, match=r"missing tensors \['model\.layers\.2\."):
        models.load_hf(str(tmp_path / "m"))
    # Declared tied, but the checkpoint's lm_head.weight is its own tensor.
    _edit_config(tmp_path / "m", num_hidden_layers=2, tie_word_embeddings=True)
    with pytest.raises(ValueError, match=r"the tied tensors model\.embed_tokens\.weight and lm_head\.weight differ"):
        models.load_hf(str(tmp_path / "m"))
