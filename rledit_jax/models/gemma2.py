"""Gemma-2: the Llama-like model with Gemma's norms, GeGLU, soft-capping and alternating windows.

Differences from Llama: GeGLU MLP (`gelu_pytorch_tanh`), `(1 + w)` RMSNorm scales, norms after
attention and before and after the MLP, embeddings times `sqrt(hidden_size)` (the factor rounded to
the weights' dtype, as HF does), attention scores scaled by `query_pre_attn_scalar ** -0.5`, scores
and final logits soft-capped (`cap * tanh(x / cap)`), tied embeddings by default, and sliding-window
attention on the layers `layer_types` names (HF's default: the even layers 0, 2, 4, ...).
"""

import dataclasses
from typing import Any

from rledit_jax.models import llamalike_hf as hf_fields
from rledit_jax.models.llamalike import FULL, SLIDING, LlamaLikeConfig


@dataclasses.dataclass(frozen=True)
class Gemma2Config(LlamaLikeConfig):
    model_type = "gemma2"
    hf_architecture = "Gemma2ForCausalLM"
    activation = "gelu_pytorch_tanh"
    gemma_norms = True
    scale_embeddings = True


# transformers 5.24 `Gemma2Config` defaults.
FIELDS = hf_fields.Fields(
    name="Gemma-2",
    defaults={
        "vocab_size": 256000,
        "hidden_size": 2304,
        "intermediate_size": 9216,
        "num_hidden_layers": 26,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "head_dim": 256,
        "max_position_embeddings": 8192,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": True,
        "bos_token_id": 2,
        "eos_token_id": 1,
        "pad_token_id": 0,
        "query_pre_attn_scalar": 256,
        "sliding_window": 4096,
        "layer_types": None,
        "final_logit_softcapping": 30.0,
        "attn_logit_softcapping": 50.0,
    },
    required={
        "hidden_activation": ("gelu_pytorch_tanh",),
        "attention_bias": (False,),
        "attention_dropout": (0, 0.0),
        "use_bidirectional_attention": (None, False),
    },
    # HF's Gemma-2 reads `hidden_activation` and ignores `hidden_act`; `sliding_window_size` is an
    # older name of `sliding_window` that published checkpoints still carry (checked to agree).
    inert=("hidden_act", "sliding_window_size"),
)


_SOFTCAPS = ("attn_logit_softcapping", "final_logit_softcapping")


def config_from_hf(hf: dict[str, Any], generic_fields: frozenset[str]) -> Gemma2Config:
    """Our config from an HF `config.json` dict, refusing anything we do not implement."""
    values = hf_fields.read(FIELDS, hf, generic_fields)
    kwargs = hf_fields.config_kwargs(FIELDS, values, hf)
    n_layers = kwargs["num_hidden_layers"]
    types = values["layer_types"]
    if types is None:  # HF's default: sliding on layers 0, 2, 4, ...
        types = [SLIDING if (i + 1) % 2 else FULL for i in range(n_layers)]
    window = values["sliding_window"]
    if SLIDING in types:
        hf_fields.positive_int(FIELDS, "sliding_window", window)
    if "sliding_window_size" in hf and hf["sliding_window_size"] != window:
        raise ValueError(f"Gemma-2 config: sliding_window_size={hf['sliding_window_size']} differs from {window=}")
    caps = {f: hf_fields.positive_number(FIELDS, f, values[f], optional=True) for f in _SOFTCAPS}
    return Gemma2Config(
        **kwargs,
        **caps,
        layer_types=hf_fields.layer_types(FIELDS, list(types), n_layers),
        sliding_window=window,
        query_pre_attn_scalar=hf_fields.positive_int(FIELDS, "query_pre_attn_scalar", values["query_pre_attn_scalar"]),
    )


def config_to_hf(config: Gemma2Config) -> dict[str, Any]:
    return hf_fields.to_hf(
        config,
        hidden_activation=config.activation,
        query_pre_attn_scalar=config.query_pre_attn_scalar,
        sliding_window=config.sliding_window,
        layer_types=list(config.layer_types),
        **{f: getattr(config, f) for f in _SOFTCAPS},
    )
