"""The Llama-like families vs transformers' torch models (eager attention), and the HF round trip.

Oracle: `LlamaForCausalLM`, `MistralForCausalLM`, `Gemma2ForCausalLM`, `Qwen2ForCausalLM` on tiny
random checkpoints (`tests/tiny_hf.py`: grouped-query attention, llama3 rope scaling, a sliding
window shorter than the batch, soft-capping, q/k/v biases). Logits agree to float32 rounding of a
different summation order: <= 1e-5 of the largest logit, on >= 300-token right-padded batches.
"""

import dataclasses

import numpy as np
import pytest
import safetensors.numpy
import torch
import transformers

from rledit_jax import models
from rledit_jax.models import layers
from rledit_jax.models.llamalike import FULL
from tests import margins
from tests.tiny_hf import make_llamalike, rel_err, right_padded_batch, torch_logits

# Case -> (family, overrides of its tiny config).
CASES = {
    "llama": ("llama", {}),
    "llama_tied": ("llama", dict(tie_word_embeddings=True)),
    "mistral": ("mistral", {}),
    "gemma2": ("gemma2", {}),
    "qwen2": ("qwen2", {}),
}
LENGTHS, TOTAL = [320, 301, 77, 1], 320


def all_full(config):
    return dataclasses.replace(config, layer_types=(FULL,) * config.n_layers)


# Per family, config changes that switch one of its features off: each must move the logits far
# beyond the parity tolerance, so agreement with torch shows the feature is implemented, not idle.
FEATURES_OFF = {
    "llama": {"llama3 rope scaling": lambda c: dataclasses.replace(c, rope_scaling=None)},
    "mistral": {"sliding window": all_full},
    "gemma2": {
        "sliding windows": all_full,
        "attention soft-cap": lambda c: dataclasses.replace(c, attn_logit_softcapping=None),
        "final soft-cap": lambda c: dataclasses.replace(c, final_logit_softcapping=None),
    },
    "qwen2": {"rope_theta": lambda c: dataclasses.replace(c, rope_theta=10000.0)},
}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request, tmp_path_factory):
    family, overrides = CASES[request.param]
    path = tmp_path_factory.mktemp(request.param) / "model"
    torch_model = make_llamalike(family, path, seed=1, **overrides)
    return request.param, family, path, torch_model


def test_logits_match_torch(case):
    name, family, path, torch_model = case
    config, params = models.load_hf(str(path))
    assert config.model_type == family and config.max_length == 512
    ids, mask = right_padded_batch(LENGTHS, TOTAL, config.vocab_size, seed=2)
    ref = torch_logits(torch_model, ids, mask)
    ours = models.forward(config, params, ids.numpy(), mask.numpy())
    assert ours.shape == ref.shape and ours.dtype == np.float32
    margins.check(f"parity {name} logits", rel_err(ours, ref, mask), 1e-5)
    for feature, switch_off in FEATURES_OFF.get(name, {}).items():
        off = switch_off(config)
        assert rel_err(models.forward(off, params, ids.numpy(), mask.numpy()), ref, mask) > 1e-3, feature
    if "tied" in name or family == "gemma2":
        assert "lm_head" not in params and "lm_head" not in models.site_shapes(config)


def test_round_trip_through_save_hf(case, tmp_path):
    _, _, path, _ = case
    config, params = models.load_hf(str(path))
    models.save_hf(config, params, str(tmp_path / "saved"))
    assert models.read_hf_config(str(tmp_path / "saved")) == config
    a = transformers.AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").float().eval()
    b = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "saved", attn_implementation="eager").float()
    assert type(a) is type(b)
    ids, mask = right_padded_batch([60, 41], 60, config.vocab_size, seed=4)
    np.testing.assert_array_equal(torch_logits(a, ids, mask), torch_logits(b.eval(), ids, mask))
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name


def test_sharded_and_pytorch_bin_checkpoints(tmp_path):
    tm = make_llamalike("qwen2", tmp_path / "bin", seed=5, safe_serialization=False)
    config, params = models.load_hf(str(tmp_path / "bin"))
    models.save_hf(config, params, str(tmp_path / "sharded"), max_shard_bytes=40_000)
    assert len(list((tmp_path / "sharded").glob("model-*-of-*.safetensors"))) > 2
    config2, params2 = models.load_hf(str(tmp_path / "sharded"))
    ids, mask = right_padded_batch([20, 9], 20, config.vocab_size, seed=6)
    ref = torch_logits(tm, ids, mask)
    for c, p in ((config, params), (config2, params2)):
        margins.check(
            "llama logits, sharded/tied", rel_err(models.forward(c, p, ids.numpy(), mask.numpy()), ref, mask), 1e-5
        )


@pytest.mark.parametrize("family", ["llama", "gemma2"])
def test_bfloat16_params_run_and_stay_close(tmp_path, family):
    tm = make_llamalike(family, tmp_path / "m", seed=7)
    config, params = models.load_hf(str(tmp_path / "m"), param_dtype="bfloat16")
    kernel = params["model"]["layers"]["0"]["mlp"]["up_proj"]["kernel"]
    assert kernel.dtype == np.dtype("bfloat16") and config.dtype == "bfloat16"
    ids, mask = right_padded_batch([30, 12], 30, config.vocab_size, seed=8)
    ours = models.forward(config, params, ids.numpy(), mask.numpy())
    assert ours.dtype == np.float32
    margins.check("llama bf16 logits", rel_err(ours, torch_logits(tm, ids, mask), mask), 3e-2)


def test_tied_head_stored_as_lm_head_too(tmp_path):
    make_llamalike("gemma2", tmp_path, seed=9)
    tensors = safetensors.numpy.load_file(str(tmp_path / "model.safetensors"))
    assert "lm_head.weight" not in tensors
    embedding = tensors["model.embed_tokens.weight"]

    def rewrite(**extra):
        safetensors.numpy.save_file({**tensors, **extra}, str(tmp_path / "model.safetensors"), {"format": "pt"})

    rewrite(**{"lm_head.weight": embedding})  # the tied tensor under both names: loads
    config, params = models.load_hf(str(tmp_path))
    np.testing.assert_array_equal(params["model"]["embed_tokens"]["embedding"], embedding)
    rewrite(**{"lm_head.weight": embedding + 1})
    with pytest.raises(ValueError, match=r"tied tensors model\.embed_tokens\.weight and lm_head\.weight differ"):
        models.load_hf(str(tmp_path))
    models.save_hf(config, params, str(tmp_path / "saved"))
    assert "lm_head.weight" not in safetensors.numpy.load_file(str(tmp_path / "saved" / "model.safetensors"))


def test_packed_rows_match_torch(case):
    """Sequences packed into rows (`layers.Segments`: own ids, positions restarting at 0) give each
    sequence the logits torch gives it alone: attention, sliding windows and rotary stay per sequence."""
    _, _, path, torch_model = case
    config, params = models.load_hf(str(path))
    lengths, rows = [77, 60, 45, 1], [[0, 1, 3], [2]]  # row 0: three sequences; longer than the windows
    ids, mask = right_padded_batch(lengths, max(lengths), config.vocab_size, seed=3)
    ref = torch_logits(torch_model, ids, mask)
    width = max(sum(lengths[s] for s in row) for row in rows) + 5  # trailing padding too
    tokens, seg_ids, positions = (np.zeros((len(rows), width), np.int32) for _ in range(3))
    seg_ids[:] = -1
    for r, row in enumerate(rows):
        at = 0
        for s in row:
            n = lengths[s]
            tokens[r, at : at + n], seg_ids[r, at : at + n], positions[r, at : at + n] = ids[s, :n], s, np.arange(n)
            at += n
    ours = np.asarray(models.forward(config, params, tokens, layers.Segments(positions, seg_ids)))
    for r, row in enumerate(rows):
        at = 0
        for s in row:
            n = lengths[s]
            err = np.abs(ours[r, at : at + n] - ref[s, :n]).max() / np.abs(ref[s, :n]).max()
            margins.check(f"packed logits, sequence {s}", err, 1e-5)
            at += n
