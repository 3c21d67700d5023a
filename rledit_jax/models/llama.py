"""Llama (Llama-2, Llama-3, Llama-3.1, base and Instruct): the plain Llama-like model.

SwiGLU MLP, no biases, untied or tied embeddings, default or `llama3` rotary scaling.
"""

import dataclasses
from typing import Any

from rledit_jax.models import llamalike_hf as hf_fields
from rledit_jax.models.llamalike import FULL, LlamaLikeConfig


@dataclasses.dataclass(frozen=True)
class LlamaConfig(LlamaLikeConfig):
    model_type = "llama"
    hf_architecture = "LlamaForCausalLM"


# transformers 5.24 `LlamaConfig` defaults.
FIELDS = hf_fields.Fields(
    name="Llama",
    defaults={
        "vocab_size": 32000,
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": None,
        "head_dim": None,
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": None,
    },
    required={
        "hidden_act": ("silu",),
        "attention_bias": (False,),
        "mlp_bias": (False,),
        "attention_dropout": (0, 0.0),
    },
    # Old transformers split matmuls into `pretraining_tp` slices: the same products.
    inert=("pretraining_tp",),
)


def config_from_hf(hf: dict[str, Any], generic_fields: frozenset[str]) -> LlamaConfig:
    """Our config from an HF `config.json` dict, refusing anything we do not implement."""
    values = hf_fields.read(FIELDS, hf, generic_fields)
    kwargs = hf_fields.config_kwargs(FIELDS, values, hf)
    return LlamaConfig(**kwargs, layer_types=(FULL,) * kwargs["num_hidden_layers"])


def config_to_hf(config: LlamaConfig) -> dict[str, Any]:
    return hf_fields.to_hf(config, hidden_act="silu", attention_bias=False, mlp_bias=False)
