"""Checkpoints saved on a (2, 4) mesh restore bitwise on a (1, 8) mesh and on one device, each array
with the restoring run's sharding: the training state (whole on every device) and model-split arrays."""

import jax
import numpy as np
import pytest

from rledit_jax import checkpoint, models, run
from rledit_jax.partitioning import placement, rules
from rledit_jax.partitioning.mesh import make_mesh
from tests.mesh.setups import shard_shapes, tiny_config

pytestmark = pytest.mark.mesh
MESHES = {"(2, 4)": (2, 4), "(1, 8)": (1, 8), "one device": (1, 1)}


def mesh(name):
    data, model = MESHES[name]
    return make_mesh({"data": data, "model": model})


def training_state():
    """The training state of a tiny run, every leaf random (so a restore from zeros shows)."""
    r = run.setup(tiny_config())
    rng = np.random.default_rng(0)
    state = {"nets": r.hypernets.nets, "opt_state": r.opt_state, "norms": r.hypernets.norms}
    return jax.tree.map(lambda x: (rng.standard_normal(x.shape) * 10).astype(x.dtype), state)


def kernels(name, *, zeros=False):
    """The edit sites' kernels of the tiny model (or zeros like them), split as on mesh `name`."""
    config = tiny_config()
    llm_config, params = run.load_model(config.model)
    host = {s: np.asarray(models.get_site(llm_config, params, s)) for s in config.model.edit_sites}
    shardings = rules.named(mesh(name), {s: rules.site_spec(llm_config, s) for s in host})
    return placement.place(jax.tree.map(np.zeros_like, host) if zeros else host, shardings)


def checkpointer(directory):
    return checkpoint.Checkpointer(str(directory), every=1, keep=1, config={}, digests=["d"], padded_lengths={})


@pytest.mark.parametrize("target", ["(1, 8)", "one device"])
def test_training_state_restores_on_another_mesh(tmp_path, target):
    host = training_state()
    with checkpointer(tmp_path) as saver:
        saver.save(1, placement.place(host, placement.replicated(mesh("(2, 4)"), host)))
    on_target = placement.replicated(mesh(target), host)
    fresh = placement.place(jax.tree.map(np.zeros_like, host), on_target)
    with checkpointer(tmp_path) as restorer:
        done, state = restorer.restore(fresh)
    assert done == 1
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, state), host)
    for array, sharding in zip(jax.tree.leaves(state), jax.tree.leaves(on_target), strict=True):
        assert array.sharding.is_equivalent_to(sharding, array.ndim)


@pytest.mark.parametrize("target", ["(1, 8)", "one device"])
def test_model_split_arrays_reshard(tmp_path, target):
    saved = kernels("(2, 4)")
    fc_out = "transformer.h.1.mlp.fc_out"
    assert shard_shapes(saved[fc_out]) == {(256 // 4, 64)}
    with checkpointer(tmp_path) as saver:
        saver.save(1, {"kernels": saved})
    with checkpointer(tmp_path) as restorer:
        _, state = restorer.restore({"kernels": kernels(target, zeros=True)})
    restored = state["kernels"]
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, restored), jax.tree.map(np.asarray, saved))
    assert shard_shapes(restored[fc_out]) == {(256 // MESHES[target][1], 64)}
