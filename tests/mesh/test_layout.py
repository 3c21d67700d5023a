"""Where the params lie on a (2, 4) mesh: each device holds only its slice of a split weight (shapes
written out by hand from the rule of `partitioning/rules.py`), the values are the one-device params,
and a mesh that does not fit the devices or the weights stops with a one-line config error."""

import jax
import numpy as np
import pytest

from rledit_jax import run
from rledit_jax.config_validation import ConfigError, validate
from rledit_jax.partitioning.mesh import make_mesh
from tests.mesh.setups import MESH, shard_shapes, tiny_config

pytestmark = pytest.mark.mesh

# Per architecture: a param's dotted path, its global shape and the part one device holds with
# mesh.model = 4 (d = 64, MLP width 256, vocabulary 640; Llama: 2 key/value heads of 16).
SLICES = {
    "tiny": {
        "transformer.wte.embedding": ((640, 64), (160, 64)),
        "transformer.h.0.attn.q_proj.kernel": ((64, 64), (64, 16)),
        "transformer.h.0.attn.out_proj.kernel": ((64, 64), (16, 64)),
        "transformer.h.1.mlp.fc_in.kernel": ((64, 256), (64, 64)),
        "transformer.h.1.mlp.fc_in.bias": ((256,), (64,)),
        "transformer.h.1.mlp.fc_out.kernel": ((256, 64), (64, 64)),
        "transformer.h.1.mlp.fc_out.bias": ((64,), (64,)),
        "transformer.ln_f.scale": ((64,), (64,)),
        "lm_head.kernel": ((64, 640), (64, 160)),
    },
    "tiny_llama": {
        "model.embed_tokens.embedding": ((640, 64), (160, 64)),
        "model.layers.0.self_attn.k_proj.kernel": ((64, 32), (64, 8)),
        "model.layers.0.self_attn.o_proj.kernel": ((64, 64), (16, 64)),
        "model.layers.1.mlp.gate_proj.kernel": ((64, 256), (64, 64)),
        "model.layers.1.mlp.down_proj.kernel": ((256, 64), (64, 64)),
        "model.layers.1.input_layernorm.scale": ((64,), (64,)),
        "lm_head.kernel": ((64, 640), (64, 160)),
    },
}


def leaf(params, dotted):
    for key in dotted.split("."):
        params = params[key]
    return params


@pytest.mark.parametrize("name", sorted(SLICES))
def test_each_device_holds_its_slice(name):
    _, single = run.load_model(tiny_config(name).model)
    config = tiny_config(name, **MESH)
    _, params = run.load_model(config.model, make_mesh(config.mesh))
    for dotted, (shape, part) in SLICES[name].items():
        array = leaf(params, dotted)
        assert array.shape == shape and shard_shapes(array) == {part}, dotted
        assert len(array.addressable_shards) == 8
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, params), jax.tree.map(np.asarray, single))
    # Per device, the model's bytes are those of its whole norms and biases plus a quarter of the rest.
    per_device = sum(s.data.nbytes for p in jax.tree.leaves(params) for s in p.addressable_shards if s.device.id == 0)
    whole = sum(p.nbytes for p in jax.tree.leaves(params))
    assert whole / 4 < per_device < whole / 3


@pytest.mark.parametrize(
    ("mesh", "message"),
    [
        ({"mesh.data": 3}, r"config field mesh=\{'data': 3, 'model': 1\}: 3 devices, but the run has 8"),
        (
            {"mesh.data": 1, "mesh.model": 8, "model.tiny.vocab_size": 644},
            r"mesh.model=8: must divide every weight dimension it splits, not lm_head.bias \[644\] dimension 0 \(",
        ),
    ],
)
def test_mesh_that_does_not_fit_stops(mesh, message):
    config = tiny_config(**mesh)
    with pytest.raises(ConfigError, match=message):
        validate(config)
        make_mesh(config.mesh)
