"""Mistral (7B v0.1 .. v0.3): the Llama-like model with an optional sliding window on every layer.

`sliding_window` (v0.1: 4096; v0.3: null) lets each query see itself and the `sliding_window - 1`
keys before it. HF's default for an absent field is 4096, so an absent field means a window.
"""

import dataclasses
from typing import Any

from rledit_jax.models import llamalike_hf as hf_fields
from rledit_jax.models.llamalike import FULL, SLIDING, LlamaLikeConfig


@dataclasses.dataclass(frozen=True)
class MistralConfig(LlamaLikeConfig):
    model_type = "mistral"
    hf_architecture = "MistralForCausalLM"


# transformers 5.24 `MistralConfig` defaults.
FIELDS = hf_fields.Fields(
    name="Mistral",
    defaults={
        "vocab_size": 32000,
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": None,
        "max_position_embeddings": 4096 * 32,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": None,
        "sliding_window": 4096,
    },
    required={"hidden_act": ("silu",), "attention_dropout": (0, 0.0)},
)


def config_from_hf(hf: dict[str, Any], generic_fields: frozenset[str]) -> MistralConfig:
    """Our config from an HF `config.json` dict, refusing anything we do not implement."""
    values = hf_fields.read(FIELDS, hf, generic_fields)
    kwargs = hf_fields.config_kwargs(FIELDS, values, hf)
    window = values["sliding_window"]
    if window is not None:
        hf_fields.positive_int(FIELDS, "sliding_window", window)
    kind = FULL if window is None else SLIDING
    return MistralConfig(**kwargs, layer_types=(kind,) * kwargs["num_hidden_layers"], sliding_window=window)


def config_to_hf(config: MistralConfig) -> dict[str, Any]:
    return hf_fields.to_hf(config, hidden_act="silu", sliding_window=config.sliding_window)
