"""Unrolled-trajectory gradients vs torch autograd through the oracle's unrolled loop (float64).

Both sides run in float64 (`jax_enable_x64`; the torch GPT-J with full-precision attention), from the
same weights, hypernetwork and step batches, so agreement is limited by float64 rounding.
"""

import copy

import jax
import numpy as np
import pytest
import torch

from rledit_jax import data, models
from rledit_jax.method import reference_io, unrolled
from rledit_jax.method.packing import Lengths
from rledit_jax.method.sites import make_layout
from rledit_jax.method.spec import Spec
from tests import margins
from tests.method.helpers import UNROLLED_HP as HP
from tests.method.helpers import stop_carry_grads
from tests.method.test_parity import perturb, to_oracle_steps
from tests.oracle import torch_rledit as oracle
from tests.oracle import torch_unrolled as oracle_unrolled
from tests.tiny_hf import make_gptj

SITES = ("transformer.h.0.mlp.fc_out", "transformer.h.1.mlp.fc_out")


@pytest.fixture(scope="module")
def problem(tmp_path_factory):
    path = tmp_path_factory.mktemp("unrolled") / "m"
    torch_model = make_gptj(
        path, seed=3, vocab_size=data.TINY_VOCAB_SIZE, n_embd=32, n_layer=2, n_head=4, rotary_dim=4, n_inner=48
    ).double()
    oracle_unrolled.full_precision_attention(torch_model)
    facts = data.make_synthetic_facts(9, 3)
    batches = data.build_step_batches(
        data.load_tokenizer(None), facts, data.draw_stream(9, 3, 3, 3), batch_size=2, max_length=64
    )
    nets = oracle.make_hypernets(
        oracle.site_shapes_of(torch_model, SITES),
        rank=HP.rank,
        n_blocks=HP.n_blocks,
        lr=HP.lr,
        seed=3,
        dtype=torch.float64,
        norm_eps=float(np.finfo(np.float32).eps),
    )
    perturb(nets, 3)
    return str(path), torch_model, batches, nets


@pytest.mark.parametrize("mode", (*unrolled.MODES, "stop_carry"))
def test_unrolled_grads_match_torch(problem, mode):
    path, torch_model, batches, nets = problem
    cfg = oracle.OracleConfig(
        back_depth=HP.back_depth,
        time_decay=HP.time_decay,
        loc_coef=HP.loc_coef,
        reg_coef=HP.reg_coef,
        max_grad_norm=HP.max_grad_norm,
        token=HP.token,
    )
    ref = oracle_unrolled.sequence_grads(
        torch_model, copy.deepcopy(nets), to_oracle_steps(batches), list(SITES), cfg, mode
    )
    state = {k: v.detach().numpy() for k, v in nets.state_dict().items()}
    with jax.enable_x64(True):
        llm_config, params = models.load_hf(path, param_dtype="float64")
        hypernets = reference_io.from_reference(state)  # float64 under x64
        spec = Spec(
            model=llm_config,
            layout=make_layout(llm_config, SITES),
            hparams=HP,
            lengths=Lengths.of(batches),
            gradient="unrolled" if mode == "stop_carry" else mode,
        )
        if mode == "stop_carry":
            grads = stop_carry_grads(spec, params, hypernets, batches)
        else:
            grads = jax.jit(unrolled.sequence_grads, static_argnums=0)(spec, params, hypernets, batches)[0]
        ours = reference_io.to_reference(hypernets.replace(nets=grads))
    for name, g in ref.items():
        g = g.numpy()
        margins.check(f"parity {mode} {name}", np.abs(ours[name] - g).max() / np.abs(g).max(), 1e-5)
