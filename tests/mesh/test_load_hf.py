"""`load_hf` onto a (2, 4) mesh: every checkpoint format gives the one-device load's values, each device
holding only its slice (the tied head of Gemma-2 included)."""

import jax
import numpy as np
import pytest

from rledit_jax import models
from rledit_jax.partitioning import rules
from rledit_jax.partitioning.mesh import make_mesh
from tests.mesh.setups import shard_shapes
from tests.tiny_hf import make_gptj, make_llamalike

pytestmark = pytest.mark.mesh
VOCAB = 104  # 8 x 13: the vocabulary splits on any mesh of 8


def mesh():
    return make_mesh({"data": 2, "model": 4})


def assert_loads_sharded(path):
    config, single = models.load_hf(str(path))
    shardings = rules.param_shardings(mesh(), config)
    _, params = models.load_hf(str(path), shardings=shardings)
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, params), jax.tree.map(np.asarray, single))
    for array, sharding in zip(jax.tree.leaves(params), jax.tree.leaves(shardings), strict=True):
        assert array.sharding == sharding and shard_shapes(array) == {sharding.shard_shape(array.shape)}
    return config, params


@pytest.mark.parametrize("safe_serialization", [True, False])
def test_gptj(tmp_path, safe_serialization):
    make_gptj(tmp_path / "m", vocab_size=VOCAB, safe_serialization=safe_serialization)
    _, params = assert_loads_sharded(tmp_path / "m")
    # n_embd 32, fc_in [32, 128]: column-parallel, a quarter of the MLP width per device.
    assert shard_shapes(params["transformer"]["h"]["0"]["mlp"]["fc_in"]["kernel"]) == {(32, 32)}
    assert shard_shapes(params["lm_head"]["kernel"]) == {(32, VOCAB // 4)}


def test_sharded_safetensors_files(tmp_path):
    make_gptj(tmp_path / "m", vocab_size=VOCAB)
    config, params = models.load_hf(str(tmp_path / "m"))
    models.save_hf(config, params, str(tmp_path / "split"), max_shard_bytes=60_000)
    assert (tmp_path / "split" / "model.safetensors.index.json").is_file()
    assert_loads_sharded(tmp_path / "split")


@pytest.mark.parametrize("family", ["llama", "gemma2"])
def test_llamalike(tmp_path, family):
    make_llamalike(family, tmp_path / "m", vocab_size=VOCAB)
    _, params = assert_loads_sharded(tmp_path / "m")
    # The embedding [vocab, 64] (Gemma-2's head too) is split over the vocabulary.
    assert shard_shapes(params["model"]["embed_tokens"]["embedding"]) == {(VOCAB // 4, 64)}
