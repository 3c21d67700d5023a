"""RLEdit on a tiny Llama vs the torch oracle: sites of two kernel shapes in one run.

The edited sites are `up_proj` of layers 0 and 1 (`[32, 48]`, one hypernetwork and normaliser for
both) and `down_proj` of layer 1 (`[48, 32]`, its own): every per-step shift, loss and normaliser
statistic, the accumulated clipped gradient and the post-Adam parameters of both networks must
agree with `tests/oracle/torch_rledit.py` on transformers' `LlamaForCausalLM` (float64, eager
attention, public calls and forward hooks on the site `nn.Linear`s). Same setting and tolerances as
`test_parity.py` (ours float32 at "highest" matmul precision).
"""

import copy
import functools

import numpy as np
import pytest
import torch

from rledit_jax import data, models
from rledit_jax.method import reference_io, train_step
from rledit_jax.method.sites import make_layout
from tests import margins
from tests.method.test_parity import (
    assert_close,
    hparams,
    ours_from_oracle,
    perturb,
    spec_of,
    to_oracle_steps,
    with_old_answers,
)
from tests.oracle import torch_rledit as oracle
from tests.tiny_hf import make_llamalike

SITES = ("model.layers.0.mlp.up_proj", "model.layers.1.mlp.down_proj", "model.layers.1.mlp.up_proj")
N_EDITS, BATCH_SIZE, N_STEPS, SEED = 5, 2, 3, 0
HP = dict(back_depth=2, reg_coef=1e-2)


@functools.cache
def setup(tmp_root):
    torch_model = make_llamalike(
        "llama",
        f"{tmp_root}/llama",
        seed=SEED,
        vocab_size=data.TINY_VOCAB_SIZE,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        max_position_embeddings=128,
    )
    llm_config, params = models.load_hf(f"{tmp_root}/llama")
    facts = with_old_answers(data.make_synthetic_facts(N_STEPS * N_EDITS, SEED))
    stream = data.draw_stream(len(facts), N_STEPS, N_EDITS, SEED)
    batches = data.build_step_batches(data.load_tokenizer(None), facts, stream, batch_size=BATCH_SIZE, max_length=64)
    shapes = oracle.site_shapes_of(torch_model, SITES)
    nets = oracle.make_hypernets(
        shapes, rank=8, n_blocks=2, lr=0.5, seed=SEED, dtype=torch.float64, norm_eps=float(np.finfo(np.float32).eps)
    )
    perturb(nets, SEED)
    return torch_model.double(), llm_config, params, batches, nets


def oracle_run(torch_model, nets, batches, hp):
    """The oracle's per-step trace and post-Adam state, keyed like `our_run`'s."""
    nets = copy.deepcopy(nets)  # setup() is cached: the Adam step must not leak
    fields = ("back_depth", "time_decay", "loc_coef", "reg_coef", "max_grad_norm", "token")
    config = oracle.OracleConfig(**{k: getattr(hp, k) for k in fields})
    optimizer = torch.optim.Adam(nets.parameters(), lr=hp.meta_lr)
    trace = oracle.train_sequence(torch_model, nets, optimizer, to_oracle_steps(batches), list(SITES), config)
    last = trace["steps"][-1]
    return {
        "shifts": [{s: step["shifts"][s].numpy() for s in SITES} for step in trace["steps"]],
        "losses": [{k: step[k].numpy() for k in ("gen_loss", "loc_loss", "reg", "loss")} for step in trace["steps"]],
        "norms": {
            f"{key}.normalizer.{k}": v.numpy() for key, stats in last["norm_stats"].items() for k, v in stats.items()
        },
        "grads": {name: g.numpy() for name, g in last["grads"].items()},
        "state": {k: v.numpy() for k, v in trace["state_dict"].items() if ".normalizer." not in k},
    }


def our_run(llm_config, params, batches, nets, hp):
    hypernets = ours_from_oracle(nets)
    spec = spec_of(llm_config, make_layout(llm_config, SITES), hp, batches, keep_factors=True)
    opt_state = train_step.make_optimizer(hp).init(hypernets.nets)
    new, _, grads, out = train_step.train_sequence_and_update(spec, params, hypernets, opt_state, batches)
    shifts = []
    for t in range(N_STEPS):
        shifts.append({s: np.asarray(out["factors"][s][0][t]).T @ np.asarray(out["factors"][s][1][t]) for s in SITES})
    after = reference_io.to_reference(new)
    return {
        "shifts": shifts,
        "losses": [
            {k: np.asarray(out[k][t]) for k in ("gen_loss", "loc_loss", "reg", "loss")} for t in range(N_STEPS)
        ],
        "norms": {k: v for k, v in after.items() if ".normalizer." in k},
        "grads": reference_io.to_reference(new.replace(nets=grads)),
        "state": after,
    }


@pytest.fixture(scope="module")
def tmp_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("parity_llama"))


def test_two_shapes_get_their_own_hypernetworks(tmp_root):
    _, llm_config, _, _, nets = setup(tmp_root)
    layout = make_layout(llm_config, SITES)
    assert layout.groups == {(32, 48): (SITES[0], SITES[2]), (48, 32): (SITES[1],)}
    assert sorted(ours_from_oracle(nets).nets) == sorted(layout.groups)


def test_training_sequence_matches_oracle(tmp_root):
    torch_model, llm_config, params, batches, nets = setup(tmp_root)
    hp = hparams(**HP)
    ref, ours = oracle_run(torch_model, nets, batches, hp), our_run(llm_config, params, batches, nets, hp)
    for t in range(N_STEPS):
        for site in SITES:
            assert_close(ours["shifts"][t][site], ref["shifts"][t][site], what=f"step {t} shift {site}")
        for name, value in ref["losses"][t].items():
            assert_close(ours["losses"][t][name], value, what=f"step {t} {name}")
    assert float(ref["losses"][-1]["loc_loss"]) > 1e-6  # shifts large enough to mean something
    assert len(ref["norms"]) == 8  # two normalisers, four statistics each
    for name, value in ref["norms"].items():
        assert_close(ours["norms"][name], value, what=name)
    for name, value in ref["grads"].items():
        assert_close(ours["grads"][name], value, rel=1e-4, what=f"accumulated grad {name}")
    # Post-Adam parameters, in units of meta_lr (Adam moves each by about meta_lr).
    for name, value in ref["state"].items():
        margins.check(
            f"parity post-Adam {name} (meta_lr)", np.abs(ours["state"][name] - value).max() / hp.meta_lr, 1e-2
        )
