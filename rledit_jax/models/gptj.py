"""GPT-J as a Flax linen module, its HF config conversion and its HF weight-name table.

Shapes: `input_ids` `[B, T]` with their `layers.Segments` (one sequence per right-padded row, or
several packed into a row); logits are `[B, T, vocab]` float32. Per layer, one LayerNorm (`ln_1`)
feeds attention and MLP in parallel: `x + attn(ln_1(x)) + mlp(ln_1(x))`. Rotary embeddings act on
the first `rotary_dim` dims of each head in GPT-J's interleaved convention: dims (2i, 2i+1) form a
pair rotated by angle `pos * 10000^(-2i/rotary_dim)`.
Positions are each token's position within its own sequence (`Segments.positions`; `0..T-1` for a
right-padded row, as HF does without `position_ids`).

Params keep HF names as nested dicts, e.g. `params["transformer"]["h"]["22"]["mlp"]["fc_out"]["kernel"]`
(`[d_in, d_out]`, the transpose of HF's `weight`; see `layers.py`). LayerNorm `weight` is `scale`,
embedding `weight` is `embedding`.
"""

import dataclasses
from typing import Any

import flax.linen as nn

from rledit_jax.dtypes import working_float
from rledit_jax.models import layers
from rledit_jax.models.table import HFTensor


@dataclasses.dataclass(frozen=True)
class GPTJConfig:
    """The GPT-J hyperparameters the forward uses, plus the dtypes we run it in."""

    vocab_size: int
    n_positions: int
    n_embd: int
    n_layer: int
    n_head: int
    rotary_dim: int
    n_inner: int
    layer_norm_epsilon: float = 1e-5
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    # Storage dtype of the weights and dtype of the matmuls; softmax, LayerNorm statistics and
    # logits are float32 whatever these say.
    param_dtype: str = "float32"
    dtype: str = "float32"

    model_type = "gptj"

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def max_length(self) -> int:
        return self.n_positions

    @property
    def n_layers(self) -> int:
        return self.n_layer

    def site_layer(self, site: str) -> int:
        return self.n_layer if site == "lm_head" else int(site.split(".")[2])

    def linear_sites(self) -> dict[str, tuple[int, int]]:
        """Every linear an edit may target, by HF module name, with its kernel shape `(d_in, d_out)`."""
        d, f = self.n_embd, self.n_inner
        sites = {}
        for i in range(self.n_layer):
            for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
                sites[f"transformer.h.{i}.attn.{proj}"] = (d, d)
            sites[f"transformer.h.{i}.mlp.fc_in"] = (d, f)
            sites[f"transformer.h.{i}.mlp.fc_out"] = (f, d)
        sites["lm_head"] = (d, self.vocab_size)
        return sites


# HF config fields and the values we implement. Anything outside these tables and the generic
# `PretrainedConfig` fields is refused, so an unimplemented feature never passes silently.
_USED_FIELDS = (
    "vocab_size",
    "n_positions",
    "n_embd",
    "n_layer",
    "n_head",
    "rotary_dim",
    "n_inner",
    "layer_norm_epsilon",
    "bos_token_id",
    "eos_token_id",
)
_REQUIRED_VALUES = {
    "activation_function": ("gelu_new",),
    "tie_word_embeddings": (False,),
    "rotary": (True,),
    "scale_attn_weights": (True,),
    # Editing runs the model deterministically; a checkpoint that expects dropout is refused.
    "resid_pdrop": (0, 0.0),
    "embd_pdrop": (0, 0.0),
    "attn_pdrop": (0, 0.0),
}
# Fields that do not change the causal-LM forward (initialisation, caching, classification heads,
# bookkeeping of old transformers versions).
_INERT_FIELDS = (
    "initializer_range",
    "use_cache",
    "pad_token_id",
    "gradient_checkpointing",
    "tokenizer_class",
    "summary_type",
    "summary_use_proj",
    "summary_activation",
    "summary_proj_to_labels",
    "summary_first_dropout",
    "task_specific_params",
    "n_ctx",
)


def config_from_hf(hf: dict[str, Any], generic_fields: frozenset[str]) -> GPTJConfig:
    """Builds our config from an HF `config.json` dict, refusing anything we do not implement."""
    unknown = sorted(
        k
        for k in hf
        if k not in _USED_FIELDS and k not in _REQUIRED_VALUES and k not in _INERT_FIELDS and k not in generic_fields
    )
    if unknown:
        raise ValueError(f"GPT-J config has fields this implementation does not support: {unknown}")
    for field, allowed in _REQUIRED_VALUES.items():
        if field in hf and hf[field] not in allowed:
            raise ValueError(f"GPT-J config field {field}={hf[field]!r} is not supported (supported: {allowed})")
    for field in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "rotary_dim"):
        if not isinstance(hf.get(field), int) or hf[field] <= 0:
            raise ValueError(f"GPT-J config field {field} must be a positive int, got {hf.get(field)!r}")
    if hf["n_embd"] % hf["n_head"]:
        raise ValueError(f"n_embd={hf['n_embd']} is not divisible by n_head={hf['n_head']}")
    head_dim = hf["n_embd"] // hf["n_head"]
    if hf["rotary_dim"] > head_dim or hf["rotary_dim"] % 2:
        raise ValueError(f"rotary_dim={hf['rotary_dim']} must be even and at most the head dim {head_dim}")
    eos = hf.get("eos_token_id")
    if isinstance(eos, list):
        raise ValueError(f"a list of eos_token_id values is not supported: {eos}")
    return GPTJConfig(
        vocab_size=hf["vocab_size"],
        n_positions=hf["n_positions"],
        n_embd=hf["n_embd"],
        n_layer=hf["n_layer"],
        n_head=hf["n_head"],
        rotary_dim=hf["rotary_dim"],
        n_inner=hf.get("n_inner") or 4 * hf["n_embd"],
        layer_norm_epsilon=hf.get("layer_norm_epsilon", 1e-5),
        bos_token_id=hf.get("bos_token_id"),
        eos_token_id=eos,
    )


def config_to_hf(config: GPTJConfig) -> dict[str, Any]:
    """The `config.json` dict that `transformers` loads as an equivalent `GPTJForCausalLM`."""
    return {
        "model_type": "gptj",
        "architectures": ["GPTJForCausalLM"],
        **{f: getattr(config, f) for f in _USED_FIELDS},
        "activation_function": "gelu_new",
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        "tie_word_embeddings": False,
        "torch_dtype": config.param_dtype,
    }


def hf_param_table(config: GPTJConfig) -> list[HFTensor]:
    """Every parameter with its HF tensor name (linear weights are stored transposed there)."""
    table = [
        HFTensor(("transformer", "wte", "embedding"), "transformer.wte.weight"),
        HFTensor(("transformer", "ln_f", "scale"), "transformer.ln_f.weight"),
        HFTensor(("transformer", "ln_f", "bias"), "transformer.ln_f.bias"),
        HFTensor(("lm_head", "kernel"), "lm_head.weight", transpose=True),
        HFTensor(("lm_head", "bias"), "lm_head.bias"),
    ]
    for i in range(config.n_layer):
        layer = ("transformer", "h", str(i))
        hf = f"transformer.h.{i}"
        table += [
            HFTensor(layer + ("ln_1", "scale"), f"{hf}.ln_1.weight"),
            HFTensor(layer + ("ln_1", "bias"), f"{hf}.ln_1.bias"),
        ]
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            table.append(HFTensor(layer + ("attn", proj, "kernel"), f"{hf}.attn.{proj}.weight", transpose=True))
        for fc in ("fc_in", "fc_out"):
            table.append(HFTensor(layer + ("mlp", fc, "kernel"), f"{hf}.mlp.{fc}.weight", transpose=True))
            table.append(HFTensor(layer + ("mlp", fc, "bias"), f"{hf}.mlp.{fc}.bias"))
    return table


# Non-parameter buffers that old GPT-J checkpoints carry (causal-mask tables); safe to skip.
HF_IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias")


class Attention(nn.Module):
    config: GPTJConfig

    @nn.compact
    def __call__(self, x, bias, positions):
        cfg = self.config
        dense = lambda name: layers.Linear(
            cfg.n_embd, use_bias=False, dtype=cfg.dtype, param_dtype=cfg.param_dtype, name=name
        )
        b, t, _ = x.shape
        heads = lambda y: y.reshape(b, t, cfg.n_head, cfg.head_dim)
        q, k, v = heads(dense("q_proj")(x)), heads(dense("k_proj")(x)), heads(dense("v_proj")(x))
        rotary = lambda y: layers.rotary_interleaved(y, positions, cfg.rotary_dim)
        q, k = rotary(q), rotary(k)
        out = layers.dot_product_attention(q, k, v, bias, cfg.head_dim**-0.5)
        return dense("out_proj")(out.reshape(b, t, cfg.n_embd))


class MLP(nn.Module):
    config: GPTJConfig

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        h = layers.Linear(cfg.n_inner, use_bias=True, dtype=cfg.dtype, param_dtype=cfg.param_dtype, name="fc_in")(x)
        return layers.Linear(cfg.n_embd, use_bias=True, dtype=cfg.dtype, param_dtype=cfg.param_dtype, name="fc_out")(
            layers.gelu_new(h)
        )


class Block(nn.Module):
    config: GPTJConfig

    @nn.compact
    def __call__(self, x, bias, positions):
        cfg = self.config
        h = layers.LayerNorm(cfg.layer_norm_epsilon, cfg.dtype, cfg.param_dtype, name="ln_1")(x)
        return x + Attention(cfg, name="attn")(h, bias, positions) + MLP(cfg, name="mlp")(h)


class Layers(nn.Module):
    """Blocks `start .. stop - 1`, named "0".."n_layer-1" so param paths read like HF's `h.{i}`."""

    config: GPTJConfig

    @nn.compact
    def __call__(self, x, segments: layers.Segments, start: int, stop: int):
        bias = layers.causal_bias(segments)
        for i in range(start, stop):
            x = Block(self.config, name=str(i))(x, bias, segments.positions)
        return x


class Transformer(nn.Module):
    config: GPTJConfig

    @nn.compact
    def __call__(self, x, segments: layers.Segments, start: int, stop: int, head: bool):
        cfg = self.config
        if start == 0:
            x = layers.Embed(cfg.vocab_size, cfg.n_embd, cfg.dtype, cfg.param_dtype, name="wte")(x)
        if start < stop:
            x = Layers(cfg, name="h")(x, segments, start, stop)
        if not head:
            return x
        return layers.LayerNorm(cfg.layer_norm_epsilon, cfg.dtype, cfg.param_dtype, name="ln_f")(x)


class GPTJForCausalLM(nn.Module):
    """`(input_ids or hidden, segments) -> logits or hidden`: see `rledit_jax.models.forward_layers`."""

    config: GPTJConfig

    @nn.compact
    def __call__(self, x, segments: layers.Segments | None, start: int = 0, stop: int | None = None):
        cfg = self.config
        head = stop is None
        x = Transformer(cfg, name="transformer")(x, segments, start, cfg.n_layer if head else stop, head)
        if not head:
            return x
        logits = layers.Linear(
            cfg.vocab_size, use_bias=True, dtype=cfg.dtype, param_dtype=cfg.param_dtype, name="lm_head"
        )(x)
        return logits.astype(working_float())
