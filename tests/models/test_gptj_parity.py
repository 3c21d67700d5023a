"""Flax GPT-J vs transformers' torch GPTJForCausalLM, and the HF round trip."""

import numpy as np
import pytest
import torch
import transformers

from rledit_jax import models
from tests import margins
from tests.tiny_hf import make_gptj, rel_err, right_padded_batch, torch_logits

SHAPES = [
    dict(n_embd=32, n_head=4, rotary_dim=4, n_layer=2),  # rotary on half of each 8-dim head
    dict(n_embd=48, n_head=3, rotary_dim=16, n_layer=3),  # rotary over the whole head
    dict(n_embd=64, n_head=2, rotary_dim=6, n_layer=1, n_inner=80),  # odd pair count, custom n_inner
]


@pytest.mark.parametrize("shape", SHAPES)
def test_logits_match_torch(tmp_path, shape):
    tm = make_gptj(tmp_path / "m", seed=1, **shape)
    config, params = models.load_hf(str(tmp_path / "m"))
    ids, mask = right_padded_batch([230, 201, 57, 1], 230, config.vocab_size, seed=2)
    ref = torch_logits(tm, ids, mask)
    ours = models.forward(config, params, ids.numpy(), mask.numpy())
    assert ours.shape == ref.shape and ours.dtype == np.float32
    margins.check(f"gptj logits {shape}", rel_err(ours, ref, mask), 1e-5)


def test_round_trip_through_save_hf(tmp_path):
    make_gptj(tmp_path / "a", seed=3)
    config, params = models.load_hf(str(tmp_path / "a"))
    models.save_hf(config, params, str(tmp_path / "b"))
    a = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "a").float().eval()
    b = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "b").float().eval()
    ids, mask = right_padded_batch([40, 33], 40, config.vocab_size, seed=4)
    np.testing.assert_array_equal(torch_logits(a, ids, mask), torch_logits(b, ids, mask))
    for (na, pa), (nb, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert na == nb and torch.equal(pa, pb), na


def test_sharded_and_pytorch_bin_checkpoints(tmp_path):
    tm = make_gptj(tmp_path / "bin", seed=5, safe_serialization=False)
    config, params = models.load_hf(str(tmp_path / "bin"))
    models.save_hf(config, params, str(tmp_path / "sharded"), max_shard_bytes=60_000)
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    config2, params2 = models.load_hf(str(tmp_path / "sharded"))
    ids, mask = right_padded_batch([20, 9], 20, config.vocab_size, seed=6)
    ref = torch_logits(tm, ids, mask)
    for c, p in ((config, params), (config2, params2)):
        margins.check(
            "gptj logits, sharded/bin", rel_err(models.forward(c, p, ids.numpy(), mask.numpy()), ref, mask), 1e-5
        )


def test_bfloat16_params_run_and_stay_close(tmp_path):
    tm = make_gptj(tmp_path / "m", seed=7)
    config, params = models.load_hf(str(tmp_path / "m"), param_dtype="bfloat16")
    assert params["lm_head"]["kernel"].dtype == np.dtype("bfloat16")
    ids, mask = right_padded_batch([30, 12], 30, config.vocab_size, seed=8)
    ours = models.forward(config, params, ids.numpy(), mask.numpy())
    assert ours.dtype == np.float32
    margins.check("gptj bf16 logits", rel_err(ours, torch_logits(tm, ids, mask), mask), 3e-2)
