"""HF config and weight-name conversion shared by the Llama-like variants (see `llamalike.py`).

A variant describes its `config.json` with a `Fields` table (HF 5.24's defaults of the fields it
reads, the only supported values of the fields it does not implement, the fields that do not change
the forward); `read` refuses anything else by name. Rotary settings are read from HF's legacy
`rope_theta` / `rope_scaling` fields (published checkpoints) or from `rope_parameters` (what
transformers 5 writes); `to_hf` writes the legacy ones, which every transformers version reads.
"""

import dataclasses
from typing import Any

from rledit_jax.models.llamalike import FULL, SLIDING, Llama3RopeScaling, LlamaLikeConfig
from rledit_jax.models.table import HFTensor

_ROPE_FIELDS = ("rope_theta", "rope_scaling", "rope_parameters")
_DEFAULT_THETA = 10000.0  # HF's default when a config names no rope_theta
_LLAMA3_KEYS = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
# Fields of every variant that do not change the causal-LM forward.
_INERT = ("initializer_range",)
# Non-parameter buffers that old checkpoints carry (rotary tables); safe to skip.
HF_IGNORED_SUFFIXES = (".rotary_emb.inv_freq",)


@dataclasses.dataclass(frozen=True)
class Fields:
    """How one variant reads `config.json`: `defaults` (what HF uses for an absent field) of the
    fields the forward reads; `required` fields and their supported values (absent: HF's default,
    always supported); `inert` fields (initialisation, bookkeeping, features switched off)."""

    name: str  # for messages, e.g. "Llama"
    defaults: dict[str, Any]
    required: dict[str, tuple]
    inert: tuple[str, ...] = ()


def read(fields: Fields, hf: dict[str, Any], generic_fields: frozenset[str]) -> dict[str, Any]:
    """The `defaults` fields' values of `hf` (HF's default where absent), after refusing every field
    outside the tables and every unsupported value."""
    known = set(fields.defaults) | set(fields.required) | set(fields.inert) | set(_INERT) | set(_ROPE_FIELDS)
    unknown = sorted(k for k in hf if k not in known and k not in generic_fields)
    if unknown:
        raise ValueError(f"{fields.name} config has fields this implementation does not support: {unknown}")
    for field, allowed in fields.required.items():
        if field in hf and hf[field] not in allowed:
            raise ValueError(
                f"{fields.name} config field {field}={hf[field]!r} is not supported (supported: {allowed})"
            )
    return {k: hf.get(k, default) for k, default in fields.defaults.items()}


def _must_be(name: str, field: str, value, ok: bool, wanted: str) -> None:
    if not ok:
        raise ValueError(f"{name} config field {field} must be {wanted}, got {value!r}")


def _positive_int(name: str, field: str, value) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
    _must_be(name, field, value, ok, "a positive int")


def _positive_number(name: str, field: str, value, optional: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
    if optional:
        _must_be(name, field, value, ok or value is None, "a positive number or null")
    else:
        _must_be(name, field, value, ok, "a positive number")


def _rope(name: str, hf: dict[str, Any], max_positions: int) -> tuple[float, Llama3RopeScaling | None]:
    """`(rope_theta, llama3 scaling or None)`, with HF's precedence: `rope_scaling`, else
    `rope_parameters`, for the type and scaling; their `rope_theta`, else the top-level one."""
    rope = dict(hf.get("rope_scaling") or hf.get("rope_parameters") or {})
    theta = rope.pop("rope_theta", hf.get("rope_theta", _DEFAULT_THETA))
    _positive_number(name, "rope_theta", theta)
    rope_type = rope.pop("rope_type", rope.pop("type", "default"))
    if rope_type not in ("default", "llama3"):
        raise ValueError(f"{name} config: rope_type {rope_type!r} is not supported (supported: 'default', 'llama3')")
    unknown = sorted(set(rope) - set(_LLAMA3_KEYS if rope_type == "llama3" else ()))
    if unknown:
        raise ValueError(f"{name} config: rope scaling keys {unknown} are not supported with rope_type {rope_type!r}")
    if rope_type == "default":
        return float(theta), None
    rope.setdefault("original_max_position_embeddings", max_positions)
    missing = sorted(set(_LLAMA3_KEYS) - set(rope))
    if missing:
        raise ValueError(f"{name} config: rope_type 'llama3' needs rope scaling keys {missing}")
    for key in _LLAMA3_KEYS[:3]:
        _positive_number(name, f"rope_scaling.{key}", rope[key])
    _positive_int(name, "rope_scaling.original_max_position_embeddings", rope["original_max_position_embeddings"])
    if rope["high_freq_factor"] <= rope["low_freq_factor"]:
        raise ValueError(f"{name} config: rope_scaling high_freq_factor must exceed low_freq_factor, got {rope}")
    return float(theta), Llama3RopeScaling(**{k: rope[k] for k in _LLAMA3_KEYS})


def _token_ids(value):
    return tuple(value) if isinstance(value, list) else value


def config_kwargs(fields: Fields, values: dict[str, Any], hf: dict[str, Any]) -> dict[str, Any]:
    """`LlamaLikeConfig` arguments shared by every variant, checked, from `read`'s values (and `hf`'s
    rotary fields). `layer_types` and the variant's own fields are the caller's."""
    name = fields.name
    for field in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"):
        _positive_int(name, field, values[field])
    _positive_int(name, "max_position_embeddings", values["max_position_embeddings"])
    _positive_number(name, "rms_norm_eps", values["rms_norm_eps"])
    heads = values["num_attention_heads"]
    kv_heads = values["num_key_value_heads"] or heads  # HF: null means one key/value head per query head
    _positive_int(name, "num_key_value_heads", kv_heads)
    if heads % kv_heads:
        raise ValueError(
            f"{name} config: num_attention_heads={heads} is not a multiple of num_key_value_heads={kv_heads}"
        )
    head_dim = values["head_dim"]
    if head_dim is None:
        if values["hidden_size"] % heads:
            raise ValueError(f"{name} config: hidden_size={values['hidden_size']} is not divisible by {heads} heads")
        head_dim = values["hidden_size"] // heads
    even = isinstance(head_dim, int) and head_dim > 0 and head_dim % 2 == 0
    _must_be(name, "head_dim", head_dim, even, "a positive even int (rotary dims come in pairs)")
    theta, scaling = _rope(name, hf, values["max_position_embeddings"])
    return dict(
        **{k: values[k] for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers")},
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        max_position_embeddings=values["max_position_embeddings"],
        rms_norm_eps=float(values["rms_norm_eps"]),
        rope_theta=theta,
        rope_scaling=scaling,
        tie_word_embeddings=bool(values["tie_word_embeddings"]),
        **{k: _token_ids(values[k]) for k in ("bos_token_id", "eos_token_id", "pad_token_id")},
    )


def layer_types(fields: Fields, value, n_layers: int, allowed: tuple[str, ...] = (FULL, SLIDING)) -> tuple[str, ...]:
    """A config's `layer_types` list, checked: one entry per layer, each one of `allowed`."""
    if not isinstance(value, list) or len(value) != n_layers:
        raise ValueError(f"{fields.name} config field layer_types must list {n_layers} layers, got {value!r}")
    bad = sorted(set(value) - set(allowed))
    if bad:
        raise ValueError(f"{fields.name} config field layer_types: {bad} not supported (supported: {list(allowed)})")
    return tuple(value)


def positive_int(fields: Fields, field: str, value) -> int:
    """`value`, checked to be an int > 0."""
    _positive_int(fields.name, field, value)
    return value


def positive_number(fields: Fields, field: str, value, optional: bool = False) -> float | None:
    """`value` as a float, checked to be > 0 (or None, when `optional`)."""
    _positive_number(fields.name, field, value, optional)
    return None if value is None else float(value)


def to_hf(config: LlamaLikeConfig, **variant_fields) -> dict[str, Any]:
    """The `config.json` dict `transformers` loads as an equivalent model: the shared fields plus the
    variant's (its activation field, feature switches)."""
    shared = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
    scaling = config.rope_scaling
    eos = config.eos_token_id
    return {
        "model_type": config.model_type,
        "architectures": [config.hf_architecture],
        **{f: getattr(config, f) for f in shared},
        "num_key_value_heads": config.num_key_value_heads,
        "head_dim": config.head_dim,
        "max_position_embeddings": config.max_position_embeddings,
        "rms_norm_eps": config.rms_norm_eps,
        "rope_theta": config.rope_theta,
        "rope_scaling": None if scaling is None else {"rope_type": "llama3", **dataclasses.asdict(scaling)},
        "tie_word_embeddings": config.tie_word_embeddings,
        "attention_dropout": 0.0,
        "bos_token_id": config.bos_token_id,
        "eos_token_id": list(eos) if isinstance(eos, tuple) else eos,
        "pad_token_id": config.pad_token_id,
        **variant_fields,
        "torch_dtype": config.param_dtype,
    }


def hf_param_table(config: LlamaLikeConfig) -> list[HFTensor]:
    """Every parameter with its HF tensor name (linear weights are stored transposed there)."""
    # A tied model's head is its embedding; some checkpoints also store it as lm_head.weight.
    tied_head = ("lm_head.weight",) if config.tie_word_embeddings else ()
    table = [
        HFTensor(("model", "embed_tokens", "embedding"), "model.embed_tokens.weight", aliases=tied_head),
        HFTensor(("model", "norm", "scale"), "model.norm.weight"),
    ]
    norms = ["input_layernorm", "post_attention_layernorm"]
    if config.gemma_norms:
        norms += ["pre_feedforward_layernorm", "post_feedforward_layernorm"]
    for i in range(config.num_hidden_layers):
        for norm in norms:
            table.append(HFTensor(("model", "layers", str(i), norm, "scale"), f"model.layers.{i}.{norm}.weight"))
        if config.qkv_bias:
            for proj in ("q_proj", "k_proj", "v_proj"):
                name = f"model.layers.{i}.self_attn.{proj}"
                table.append(HFTensor((*name.split("."), "bias"), f"{name}.bias"))
    for site in config.linear_sites():  # every linear weight, lm_head included when untied
        table.append(HFTensor((*site.split("."), "kernel"), f"{site}.weight", transpose=True))
    return table
