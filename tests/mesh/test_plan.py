"""`bin/plan` on a (1, 8) mesh: per device, the inputs are the one-device plan's less the LLM weights
each device does not hold, computed here from the rules' shard shapes. (The edit step takes the edited
kernels, float32 and split as their weights, in place of the sites' weights, which it does not use and
jit drops: the same bytes on a float32 model.)"""

import jax
import numpy as np
import pytest

from rledit_jax import planning
from rledit_jax.partitioning import rules
from rledit_jax.partitioning.mesh import make_mesh
from tests.test_planning import config as planning_config

pytestmark = pytest.mark.mesh


def plan(**mesh):
    c = planning_config()
    c.model.tiny.vocab_size = 640  # the tiny tokenizer's 622 tokens, padded to a multiple of 8
    c.mesh.update(mesh)
    return planning.plan(c, modes=["reference"], steps_list=[4], seq_len=16, answer_len=3)


def not_held(shapes, shardings) -> int:
    """Bytes of `shapes` (a pytree) that one device does not hold with `shardings`."""
    pairs = zip(jax.tree.leaves(shapes), jax.tree.leaves(shardings), strict=True)
    return sum((x.size - np.prod(s.shard_shape(x.shape))) * x.dtype.itemsize for x, s in pairs)


def test_inputs_per_device_hold_only_the_weights_slices():
    llm, _, single = plan()
    _, _, sharded = plan(data=1, model=8)
    mesh = make_mesh({"data": 1, "model": 8}, planning.devices_for(8))
    shapes = rules.param_shapes(llm)
    weights = not_held(shapes, rules.param_shardings(mesh, llm))
    assert weights > 0.75 * sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(shapes))
    for one, eight in zip(single, sharded, strict=True):
        assert (one.program, one.mode, one.steps) == (eight.program, eight.mode, eight.steps)
        print(f"\n{one.program}: inputs per device {one.args_bytes} on one device, {eight.args_bytes} on 8")
        assert eight.args_bytes == one.args_bytes - weights
        assert eight.peak_bytes < one.peak_bytes
