"""Bad model input stops with a message that names the problem."""

import json

import jax.numpy as jnp
import pytest

from rledit_jax import models, probes
from tests.tiny_hf import make_gptj


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "model"
    make_gptj(path)
    return path, *models.load_hf(str(path))


def _edit_config(path, **changes):
    config = json.loads((path / "config.json").read_text())
    config.update(changes)
    (path / "config.json").write_text(json.dumps(config))


def test_unknown_site_lists_valid_ones(tiny):
    _, config, params = tiny
    batch = {k: jnp.zeros((1, 4), jnp.int32) for k in ("input_ids", "attention_mask", "labels")}
    with pytest.raises(
        ValueError, match=r"unknown edit site 'transformer\.h\.9\.mlp\.fc_out'.*transformer\.h\.0\.attn\.q_proj"
    ):
        probes.capture(config, params, ("transformer.h.9.mlp.fc_out",), batch)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"activation_function": "relu"}, "activation_function='relu' is not supported"),
        ({"attn_pdrop": 0.1}, "attn_pdrop=0.1 is not supported"),
        ({"rope_scaling": {"type": "linear"}}, r"does not support: \['rope_scaling'\]"),
        ({"rotary_dim": 12}, "rotary_dim=12 must be even and at most the head dim 8"),
        ({"model_type": "mamba"}, "model_type 'mamba' is not supported"),
    ],
)
def test_unsupported_config_field(tmp_path, changes, message):
    make_gptj(tmp_path / "m")
    _edit_config(tmp_path / "m", **changes)
    with pytest.raises(ValueError, match=message):
        models.load_hf(str(tmp_path / "m"))


def test_sequence_longer_than_n_positions(tiny):
    _, config, params = tiny
    ids = jnp.zeros((1, config.n_positions + 1), jnp.int32)
    with pytest.raises(ValueError, match="sequence length 257 exceeds the model's 256 positions"):
        models.forward(config, params, ids, jnp.ones_like(ids))


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        models.load_hf(str(tmp_path / "nowhere"))
    make_gptj(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no weights in model directory"):
        models.load_hf(str(tmp_path / "m"))
    (tmp_path / "m" / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        models.load_hf(str(tmp_path / "m"))


def test_weights_that_do_not_match_config(tmp_path):
    make_gptj(tmp_path / "m")
    _edit_config(tmp_path / "m", n_layer=3)
    with pytest.raises(ValueError, match=r"missing tensors \['transformer\.h\.2\."):
        models.load_hf(str(tmp_path / "m"))


def test_save_refuses_to_clobber(tiny, tmp_path):
    _, config, params = tiny
    (tmp_path / "out").mkdir()
    with pytest.raises(FileExistsError, match="exists"):
        models.save_hf(config, params, str(tmp_path / "out"))
    assert list(tmp_path.iterdir()) == [tmp_path / "out"]
