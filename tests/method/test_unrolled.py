"""Gradients through the unrolled edit trajectory (DESIGN.md section 4).

The hand-written two-scan gradient of `unrolled.py` is checked against plain autodiff through a
differentiable scan, against central finite differences in float64, and against the `reference`
mode's per-step gradients where the two must agree.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rledit_jax import data, models
from rledit_jax.method import edit_step as es
from rledit_jax.method import sequence, unrolled
from rledit_jax.method.packing import Lengths
from rledit_jax.method.sites import make_layout
from rledit_jax.method.spec import Spec, init_hypernets
from tests import margins
from tests.method.helpers import UNROLLED_HP, stop_carry_grads

SITES = ("transformer.h.0.mlp.fc_out", "transformer.h.1.mlp.fc_out")


def problem(n_steps, dtype="float32", seed=0):
    """A tiny GPT-J, a hypernetwork moved off its init, and `n_steps` step batches."""
    config = models.GPTJConfig(
        vocab_size=data.TINY_VOCAB_SIZE,
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=4,
        rotary_dim=4,
        n_inner=48,
        param_dtype=dtype,
        dtype=dtype,
    )
    params = models.init_params(config, jax.random.PRNGKey(seed))
    facts = data.make_synthetic_facts(n_steps * 3, seed)
    batches = data.build_step_batches(
        data.load_tokenizer(None), facts, data.draw_stream(len(facts), n_steps, 3, seed), batch_size=2, max_length=64
    )
    layout = make_layout(config, SITES)
    hp = UNROLLED_HP
    hypernets = init_hypernets(jax.random.PRNGKey(seed + 1), layout, hp)
    leaves, tree = jax.tree.flatten(hypernets.nets)
    keys = jax.random.split(jax.random.PRNGKey(seed + 2), len(leaves))
    nets = tree.unflatten([x + 0.05 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)])
    spec = Spec(model=config, layout=layout, hparams=hp, lengths=Lengths.of(batches))
    return spec, params, hypernets.replace(nets=nets), batches


def grads_of(mode, spec, params, hypernets, batches):
    spec = dataclasses.replace(spec, gradient="unrolled" if mode == "stop_carry" else mode)
    if mode == "stop_carry":
        return stop_carry_grads(spec, params, hypernets, batches)
    if mode == "reference":
        return jax.jit(functools.partial(sequence.train_sequence, spec))(params, hypernets, batches)[0]
    return jax.jit(functools.partial(unrolled.sequence_grads, spec))(params, hypernets, batches)[0]


def plain_sequence_loss(nets, spec, params, hypernets, batches):
    """sum_t loss_t by a differentiable scan: autodiff stores every step (fine at this size)."""

    def step(carry, t):
        kernels, norms, rings = carry
        rings = rings.push(spec, params, batches, t)
        loss, (kernels, _, norms) = unrolled.step_objective(nets, kernels, spec, params, batches, norms, rings, t)
        return (kernels, norms, rings), loss

    carry = (es.base_kernels(spec, params), hypernets.norms, sequence.Rings.empty(spec, params, batches))
    return jnp.sum(jax.lax.scan(step, carry, jnp.arange(batches.edit.input_ids.shape[0]))[1])


def max_rel(a, b):
    return max(
        jax.tree.leaves(jax.tree.map(lambda x, y: float(jnp.abs(x - y).max() / (jnp.abs(y).max() + 1e-30)), a, b))
    )


def test_one_step_all_modes_agree():
    args = problem(1)
    ref = grads_of("reference", *args)
    for mode in (*unrolled.MODES, "stop_carry"):
        margins.check(f"one step {mode} vs reference", max_rel(grads_of(mode, *args), ref), 1e-5)


def test_stop_carry_equals_reference_and_trajectory_matters():
    args = problem(3)
    ref = grads_of("reference", *args)  # max_grad_norm is huge: no clipping, a plain sum
    margins.check("stop_carry vs reference", max_rel(grads_of("stop_carry", *args), ref), 1e-5)
    # Through the trajectory the gradient is a different one.
    assert max_rel(grads_of("unrolled", *args), ref) > 1e-2


@pytest.mark.parametrize("mode", ["unrolled", "unrolled_second_order"])
def test_two_scan_gradient_equals_autodiff_through_the_scan(mode):
    spec, params, hypernets, batches = problem(3)
    ours = grads_of(mode, spec, params, hypernets, batches)
    spec = dataclasses.replace(spec, gradient=mode)
    auto = jax.jit(jax.grad(plain_sequence_loss), static_argnums=1)(hypernets.nets, spec, params, hypernets, batches)
    margins.check(f"{mode} two-scan vs autodiff", max_rel(ours, auto), 1e-4)


def test_second_order_matches_finite_differences_in_float64():
    with jax.enable_x64(True):
        spec, params, hypernets, batches = problem(3, dtype="float64")
        nets = hypernets.nets
        assert jax.tree.leaves(nets)[0].dtype == jnp.float64
        grads = grads_of("unrolled_second_order", spec, params, hypernets, batches)
        spec = dataclasses.replace(spec, gradient="unrolled_second_order")
        loss = jax.jit(plain_sequence_loss, static_argnums=1)
        rng = np.random.default_rng(0)
        eps = 1e-5
        for _ in range(3):
            direction = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape)), nets)
            shifted = lambda s, direction=direction: jax.tree.map(lambda x, v: x + s * eps * v, nets, direction)
            fd = (
                loss(shifted(1), spec, params, hypernets, batches)
                - loss(shifted(-1), spec, params, hypernets, batches)
            ) / (2 * eps)
            analytic = sum(jnp.vdot(g, d) for g, d in zip(jax.tree.leaves(grads), jax.tree.leaves(direction)))
            margins.check(
                "second order vs finite differences", abs(float(analytic) - float(fd)) / abs(float(fd)), 1e-6
            )
