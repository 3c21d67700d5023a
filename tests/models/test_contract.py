"""The model contract: running the blocks from a given one onwards, and tied/aliased tensors on load.

Oracles: our own full forward (a split forward runs the same operations, so it agrees to float32
rounding of XLA's fusion choices) and the tensors written into the checkpoint.
"""

import dataclasses
import functools

import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy

from rledit_jax import models
from rledit_jax.models import registry
from rledit_jax.models.contract import ModelConfig
from rledit_jax.models.table import HFTensor
from tests.tiny_hf import make_gptj, make_llamalike, right_padded_batch

# Name -> (builder of a 3-layer tiny checkpoint, sites in layers 1 and 2, its hidden size).
MODELS = {
    "gptj": (
        functools.partial(make_gptj, n_layer=3),
        ("transformer.h.1.mlp.fc_out", "transformer.h.2.attn.q_proj"),
        32,
    ),
    "llama": (
        functools.partial(make_llamalike, "llama"),
        ("model.layers.1.mlp.down_proj", "model.layers.2.mlp.gate_proj", "model.layers.2.self_attn.k_proj"),
        64,
    ),
    # Tied head; layers 0 and 2 slide (window 41 < the 50 tokens below).
    "gemma2": (
        functools.partial(make_llamalike, "gemma2"),
        ("model.layers.1.mlp.up_proj", "model.layers.2.mlp.down_proj"),
        64,
    ),
}


@pytest.fixture(scope="module", params=sorted(MODELS))
def tiny(request, tmp_path_factory):
    build, sites, hidden = MODELS[request.param]
    path = tmp_path_factory.mktemp("m") / "model"
    build(path)
    config, params = models.load_hf(str(path))
    ids, mask = (jnp.asarray(x.numpy(), jnp.int32) for x in right_padded_batch([50, 23], 50, config.vocab_size))
    return path, config, params, ids, mask, sites, hidden


def test_config_satisfies_the_contract(tiny):
    _, config, _, _, _, sites, _ = tiny
    members = set(ModelConfig.__annotations__) | {"max_length", "n_layers", "linear_sites", "site_layer"}
    assert all(hasattr(config, m) for m in members) and "model_type" in members
    assert config.n_layers == 3 and config.vocab_size == 101 and config.max_length >= 256
    assert [config.site_layer(s) for s in sites] == [int(s.split(".")[2]) for s in sites]
    assert set(config.linear_sites()) >= set(sites)
    if "lm_head" in config.linear_sites():
        assert config.site_layer("lm_head") == 3
    hash(config)


@pytest.mark.parametrize("layer", [1, 2])
def test_forward_from_a_layer_equals_the_whole_forward(tiny, layer):
    _, config, params, ids, mask, sites, hidden_size = tiny
    whole = np.asarray(models.forward(config, params, ids, mask))
    hidden = models.forward_layers(config, params, ids, mask, stop=layer)
    assert hidden.shape == (*ids.shape, hidden_size)
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=1e-6 * np.abs(b).max())
    close(models.forward_layers(config, params, hidden, mask, start=layer), whole)
    # The head alone, on the last block's output at a few positions (the answer-only head).
    last = models.forward_layers(config, params, hidden, mask, start=layer, stop=config.n_layers)
    close(models.forward_layers(config, params, last[:, 2:5], None, start=config.n_layers), whole[:, 2:5])

    sites = [s for s in sites if config.site_layer(s) >= layer]  # probes sit in the blocks that run
    probes = {s: jnp.zeros((*ids.shape, models.site_shapes(config)[s][1])) for s in sites}
    logits, keys = models.forward_with_probes(config, params, probes, hidden, mask, start=layer)
    full_logits, full_keys = models.forward_with_probes(config, params, probes, ids, mask)
    close(logits, np.asarray(full_logits))
    for site in sites:
        close(keys[site], np.asarray(full_keys[site]))


def _with_alias(monkeypatch, primary: str, alias: str):
    """Registers GPT-J with `alias` as a second HF name of the tensor `primary`."""
    arch = registry.architecture("gptj")

    def table(config):
        return [
            dataclasses.replace(r, aliases=(alias,)) if r.name == primary else r for r in arch.hf_param_table(config)
        ]

    monkeypatch.setitem(registry.ARCHITECTURES, "gptj", dataclasses.replace(arch, hf_param_table=table))


def _rewrite(path, tensors):
    safetensors.numpy.save_file(tensors, str(path / "model.safetensors"), {"format": "pt"})


def test_aliased_tensors_are_checked_and_can_stand_in(tmp_path, monkeypatch):
    path = tmp_path / "model"
    make_gptj(path)
    config, params = models.load_hf(str(path))
    tensors = safetensors.numpy.load_file(str(path / "model.safetensors"))
    primary, alias = "transformer.wte.weight", "tied.wte.weight"
    _with_alias(monkeypatch, primary, alias)
    assert isinstance(registry.architecture("gptj").hf_param_table(config)[0], HFTensor)
    copy = tmp_path / "m"
    copy.mkdir()
    (copy / "config.json").write_text((path / "config.json").read_text())

    _rewrite(copy, {**tensors, alias: tensors[primary]})  # both, equal: loads
    np.testing.assert_array_equal(models.load_hf(str(copy))[1]["transformer"]["wte"]["embedding"], tensors[primary])

    _rewrite(copy, {**tensors, alias: tensors[primary] + 1})  # both, different: refused
    with pytest.raises(ValueError, match=r"the tied tensors transformer\.wte\.weight and tied\.wte\.weight differ"):
        models.load_hf(str(copy))

    only_alias = {k: v for k, v in tensors.items() if k != primary}
    _rewrite(copy, {**only_alias, alias: tensors[primary] * 2})  # the alias alone stands in
    np.testing.assert_array_equal(
        models.load_hf(str(copy))[1]["transformer"]["wte"]["embedding"], tensors[primary] * 2
    )

    out = tmp_path / "saved"
    models.save_hf(config, params, str(out))  # aliases are never written
    assert alias not in safetensors.numpy.load_file(str(out / "model.safetensors"))
