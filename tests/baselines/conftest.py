"""A tiny run (`run.setup` on the shrunk tiny config) and its torch twin, shared by the method tests."""

import dataclasses

import jax
import numpy as np
import pytest
import torch
import transformers

from rledit_jax import data, models, run
from rledit_jax.method import reference_io
from tests.config_files import load_config, with_fields
from tests.method.test_parity import to_oracle_steps
from tests.oracle import torch_rledit as orc
from tests.oracle import torch_unrolled

EPS32 = float(np.finfo(np.float32).eps)
ONE_SITE = ("transformer.h.1.mlp.fc_out",)
TWO_SITES = ("transformer.h.0.mlp.fc_out", "transformer.h.1.mlp.fc_out")

# A 2-layer GPT-J (fc_out kernels 48 x 32); 7 edits in micro-batches of 3 (a ragged last one of 1 row);
# 2 training sequences of 2 steps; 3 eval steps.
TINY = {
    "model.tiny.n_embd": 32,
    "model.tiny.n_layer": 2,
    "model.tiny.rotary_dim": 4,
    "model.tiny.n_inner": 48,
    "model.edit_sites": ONE_SITE,
    "data.n_edits": 7,
    "data.batch_size": 3,
    "hparams.rank": 8,
    "hparams.n_blocks": 2,
    "hparams.meta_lr": 1e-3,
    "baselines.mend.rank": 8,
    "train.sequences": 2,
    "train.steps_per_sequence": 2,
    "eval.steps": 3,
}


@dataclasses.dataclass(frozen=True)
class Tiny:
    run: run.Run
    torch_model: torch.nn.Module  # float64, the same weights

    @property
    def sites(self):
        return self.run.spec.layout.names

    def train_batches(self) -> data.StepBatches:
        """Every training sequence's steps, one after the other."""
        return jax.tree.map(lambda *x: np.concatenate(x), *self.run.train_batches)

    def oracle_steps(self, batches):
        return to_oracle_steps(batches)

    def torch_nets(self, hypernets):
        """The torch oracle's float64 networks holding `hypernets` (through the reference naming)."""
        hp = self.run.spec.hparams
        shapes = orc.site_shapes_of(self.torch_model, self.sites)
        nets = orc.make_hypernets(
            shapes, rank=hp.rank, n_blocks=hp.n_blocks, lr=hp.lr, seed=0, dtype=torch.float64, norm_eps=EPS32
        )
        state = reference_io.to_reference(hypernets)
        nets.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
        return nets


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """`tiny(**fields)`: the `Tiny` of the shrunk tiny config with `fields` set (cached)."""
    cache = {}

    def make(**fields):
        key = tuple(sorted(fields.items()))
        if key not in cache:
            config = with_fields(load_config("tiny"), **{**TINY, **fields})
            r = run.setup(config)
            path = tmp_path_factory.mktemp("tiny_hf")
            models.save_hf(r.spec.model, r.params, str(path / "m"))
            model = transformers.GPTJForCausalLM.from_pretrained(str(path / "m"), attn_implementation="eager")
            cache[key] = Tiny(r, torch_unrolled.full_precision_attention(model.double().eval()))
        return cache[key]

    return make
