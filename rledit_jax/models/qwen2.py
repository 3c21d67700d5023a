"""Qwen2 / Qwen2.5: the Llama-like model with biases on the q, k and v projections.

Qwen2's sliding-window attention (`use_sliding_window`, on the layers from `max_window_layers` on)
is not implemented and refused; with it off, HF ignores `sliding_window` and `max_window_layers`
(published checkpoints carry both, switched off).
"""

import dataclasses
from typing import Any

from rledit_jax.models import llamalike_hf as hf_fields
from rledit_jax.models.llamalike import FULL, LlamaLikeConfig


@dataclasses.dataclass(frozen=True)
class Qwen2Config(LlamaLikeConfig):
    model_type = "qwen2"
    hf_architecture = "Qwen2ForCausalLM"
    qkv_bias = True


# transformers 5.24 `Qwen2Config` defaults.
FIELDS = hf_fields.Fields(
    name="Qwen2",
    defaults={
        "vocab_size": 151936,
        "hidden_size": 4096,
        "intermediate_size": 22016,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "head_dim": None,
        "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False,
        "bos_token_id": None,
        "eos_token_id": None,
        "pad_token_id": None,
        "layer_types": None,
    },
    required={"hidden_act": ("silu",), "attention_dropout": (0, 0.0), "use_sliding_window": (False,)},
    inert=("sliding_window", "max_window_layers"),
)


def config_from_hf(hf: dict[str, Any], generic_fields: frozenset[str]) -> Qwen2Config:
    """Our config from an HF `config.json` dict, refusing anything we do not implement."""
    values = hf_fields.read(FIELDS, hf, generic_fields)
    kwargs = hf_fields.config_kwargs(FIELDS, values, hf)
    n_layers = kwargs["num_hidden_layers"]
    if values["layer_types"] is not None:
        hf_fields.layer_types(FIELDS, values["layer_types"], n_layers, allowed=(FULL,))
    return Qwen2Config(**kwargs, layer_types=(FULL,) * n_layers)


def config_to_hf(config: Qwen2Config) -> dict[str, Any]:
    return hf_fields.to_hf(config, hidden_act="silu", use_sliding_window=False)
