"""The Llama-like causal LM (Llama-3/3.1, Mistral, Gemma-2, Qwen2) as one Flax linen module.

Shapes: `input_ids` `[B, T]` with their `layers.Segments` (one sequence per right-padded row, or
several packed into a row), hidden states `[B, T, hidden_size]`, logits `[B, T, vocab]` float32.
Positions are each token's position within its own sequence (`0..T-1` for a right-padded row, as
HF does without `position_ids`). A block is pre-norm attention then a gated MLP:

    x = x + attn(norm(x));  x = x + down_proj(act(gate_proj(n)) * up_proj(n)),  n = norm(x)

with RMSNorm, rotate-half rotary embeddings on q and k (`rope_theta`, optionally Llama-3.1's
`llama3` frequency scaling), grouped-query attention (`num_key_value_heads` <= heads) and causal
masks, sliding-window on the layers whose `layer_types` entry is "sliding_attention". Variants
(`ClassVar`s of their config subclass, one module each: `llama.py`, `mistral.py`, `gemma2.py`,
`qwen2.py`): the activation (SwiGLU `silu`, Gemma's GeGLU `gelu_pytorch_tanh`), biases on q/k/v
(Qwen2), and Gemma's norms: `(1 + w)` RMSNorm scales, a norm after attention and around the MLP
(`x = x + post_attn_norm(attn(norm(x)))`, `x = x + post_ff_norm(mlp(pre_ff_norm(x)))`) and
embeddings scaled by `sqrt(hidden_size)`, plus its attention-score and final-logit soft-capping.

Params keep HF names as nested dicts, e.g. `params["model"]["layers"]["22"]["mlp"]["gate_proj"]["kernel"]`
(`[d_in, d_out]`, the transpose of HF's `weight`; see `layers.py`). RMSNorm `weight` is `scale`,
embedding `weight` is `embedding`; with `tie_word_embeddings` there is no `lm_head` param and the
head multiplies by the embedding table.
"""

import dataclasses
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rledit_jax.dtypes import working_float
from rledit_jax.models import layers

ACTIVATIONS = {"silu": jax.nn.silu, "gelu_pytorch_tanh": layers.gelu_new}
FULL, SLIDING = "full_attention", "sliding_attention"


@dataclasses.dataclass(frozen=True)
class Llama3RopeScaling:
    """Llama-3.1's rotary frequency scaling (HF `rope_type: "llama3"`)."""

    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_position_embeddings: int


@dataclasses.dataclass(frozen=True)
class LlamaLikeConfig:
    """The hyperparameters the forward uses (HF's names), plus the dtypes we run it in."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    max_position_embeddings: int
    rms_norm_eps: float
    rope_theta: float
    # Per layer, FULL or SLIDING (attention to the query and the `sliding_window - 1` keys before it).
    layer_types: tuple[str, ...]
    rope_scaling: Llama3RopeScaling | None = None
    sliding_window: int | None = None
    tie_word_embeddings: bool = False
    # Attention scores are scaled by `query_pre_attn_scalar ** -0.5` (Gemma-2), else `head_dim ** -0.5`.
    query_pre_attn_scalar: int | None = None
    attn_logit_softcapping: float | None = None
    final_logit_softcapping: float | None = None
    bos_token_id: int | None = None
    eos_token_id: int | tuple[int, ...] | None = None
    pad_token_id: int | None = None
    # Storage dtype of the weights and dtype of the matmuls; softmax, norm statistics and logits are
    # float32 whatever these say.
    param_dtype: str = "float32"
    dtype: str = "float32"

    # The family: set by each variant's subclass.
    model_type: ClassVar[str]
    hf_architecture: ClassVar[str]  # HF's class name, e.g. "LlamaForCausalLM"
    activation: ClassVar[str] = "silu"
    qkv_bias: ClassVar[bool] = False
    gemma_norms: ClassVar[bool] = False  # (1 + w) scales, post-attention and pre/post-MLP norms
    scale_embeddings: ClassVar[bool] = False  # embeddings times sqrt(hidden_size)

    @property
    def max_length(self) -> int:
        return self.max_position_embeddings

    @property
    def n_layers(self) -> int:
        return self.num_hidden_layers

    def window(self, layer: int) -> int | None:
        """The sliding window of a layer's attention, None for full causal attention."""
        return self.sliding_window if self.layer_types[layer] == SLIDING else None

    def site_layer(self, site: str) -> int:
        return self.num_hidden_layers if site == "lm_head" else int(site.split(".")[2])

    def linear_sites(self) -> dict[str, tuple[int, int]]:
        """Every linear an edit may target, by HF module name, with its kernel shape `(d_in, d_out)`."""
        d, f = self.hidden_size, self.intermediate_size
        q, kv = self.num_attention_heads * self.head_dim, self.num_key_value_heads * self.head_dim
        sites = {}
        for i in range(self.num_hidden_layers):
            layer = f"model.layers.{i}"
            shapes = {"q_proj": (d, q), "k_proj": (d, kv), "v_proj": (d, kv), "o_proj": (q, d)}
            sites.update({f"{layer}.self_attn.{name}": shape for name, shape in shapes.items()})
            shapes = {"gate_proj": (d, f), "up_proj": (d, f), "down_proj": (f, d)}
            sites.update({f"{layer}.mlp.{name}": shape for name, shape in shapes.items()})
        if not self.tie_word_embeddings:
            sites["lm_head"] = (d, self.vocab_size)
        return sites


def rope_inv_freq(cfg: LlamaLikeConfig) -> np.ndarray:
    """The rotary inverse frequencies `[head_dim / 2]` (float32 host constants, as HF computes them).

    `llama3` scaling keeps frequencies whose wavelength is below `original / high_freq_factor`,
    divides those above `original / low_freq_factor` by `factor`, and interpolates in between.
    """
    inv_freq = layers.rotary_inv_freq(cfg.head_dim, cfg.rope_theta)
    s = cfg.rope_scaling
    if s is None:
        return inv_freq
    f32 = np.float32
    original = f32(s.original_max_position_embeddings)
    low, high, factor = f32(s.low_freq_factor), f32(s.high_freq_factor), f32(s.factor)
    wavelen = f32(2 * np.pi) / inv_freq
    scaled = np.where(wavelen > original / low, inv_freq / factor, inv_freq)
    smooth = (original / wavelen - low) / (high - low)
    smoothed = (f32(1) - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < original / high) & ~(wavelen > original / low)
    return np.where(medium, smoothed, scaled).astype(f32)


def _linear(cfg: LlamaLikeConfig, features: int, name: str, bias: bool = False) -> layers.Linear:
    return layers.Linear(features, use_bias=bias, dtype=cfg.dtype, param_dtype=cfg.param_dtype, name=name)


def _norm(cfg: LlamaLikeConfig, name: str | None = None) -> layers.RMSNorm:
    return layers.RMSNorm(cfg.rms_norm_eps, cfg.gemma_norms, cfg.dtype, cfg.param_dtype, name=name)


class Attention(nn.Module):
    config: LlamaLikeConfig

    @nn.compact
    def __call__(self, x, bias, rotary):
        cfg = self.config
        b, t, _ = x.shape

        def heads(name, n):
            y = _linear(cfg, n * cfg.head_dim, name, bias=cfg.qkv_bias)(x)
            return y.reshape(b, t, n, cfg.head_dim)

        q, k = heads("q_proj", cfg.num_attention_heads), heads("k_proj", cfg.num_key_value_heads)
        v = heads("v_proj", cfg.num_key_value_heads)
        q, k = layers.rotary_half(q, *rotary), layers.rotary_half(k, *rotary)
        scale = (cfg.query_pre_attn_scalar or cfg.head_dim) ** -0.5
        out = layers.dot_product_attention(q, k, v, bias, scale, cfg.attn_logit_softcapping)
        return _linear(cfg, cfg.hidden_size, "o_proj")(out.reshape(b, t, -1))


class MLP(nn.Module):
    config: LlamaLikeConfig

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        gate = _linear(cfg, cfg.intermediate_size, "gate_proj")(x)
        up = _linear(cfg, cfg.intermediate_size, "up_proj")(x)
        return _linear(cfg, cfg.hidden_size, "down_proj")(ACTIVATIONS[cfg.activation](gate) * up)


class Block(nn.Module):
    config: LlamaLikeConfig

    @nn.compact
    def __call__(self, x, bias, rotary):
        cfg = self.config
        h = Attention(cfg, name="self_attn")(_norm(cfg, "input_layernorm")(x), bias, rotary)
        if cfg.gemma_norms:
            x = x + _norm(cfg, "post_attention_layernorm")(h)
            h = MLP(cfg, name="mlp")(_norm(cfg, "pre_feedforward_layernorm")(x))
            return x + _norm(cfg, "post_feedforward_layernorm")(h)
        x = x + h
        return x + MLP(cfg, name="mlp")(_norm(cfg, "post_attention_layernorm")(x))


class Layers(nn.Module):
    """Blocks `start .. stop - 1`, named "0".."n-1" so param paths read like HF's `layers.{i}`."""

    config: LlamaLikeConfig

    @nn.compact
    def __call__(self, x, segments: layers.Segments, start: int, stop: int):
        cfg = self.config
        rotary = layers.rotary_tables(segments.positions, rope_inv_freq(cfg), x.dtype)
        biases = {}  # one mask per distinct window
        for i in range(start, stop):
            window = cfg.window(i)
            if window not in biases:
                biases[window] = layers.causal_bias(segments, window)
            x = Block(cfg, name=str(i))(x, biases[window], rotary)
        return x


class Model(nn.Module):
    """HF's `model`: embeddings, blocks `start .. stop - 1`, and the final norm when `head`."""

    config: LlamaLikeConfig

    def setup(self):
        cfg = self.config
        self.embed_tokens = layers.Embed(cfg.vocab_size, cfg.hidden_size, cfg.dtype, cfg.param_dtype)
        self.layers = Layers(cfg)
        self.norm = _norm(cfg)

    def __call__(self, x, segments: layers.Segments | None, start: int, stop: int, head: bool):
        cfg = self.config
        if start == 0:
            x = self.embed_tokens(x)
            if cfg.scale_embeddings:  # HF rounds the factor to the weights' dtype first.
                x = x * jnp.asarray(np.float32(cfg.hidden_size**0.5), cfg.param_dtype).astype(x.dtype)
        if start < stop:
            x = self.layers(x, segments, start, stop)
        return self.norm(x) if head else x


class LlamaLikeForCausalLM(nn.Module):
    """`(input_ids or hidden, segments) -> logits or hidden`: see `rledit_jax.models.forward_layers`."""

    config: LlamaLikeConfig

    def setup(self):
        cfg = self.config
        self.model = Model(cfg)
        if not cfg.tie_word_embeddings:
            self.lm_head = _linear(cfg, cfg.vocab_size, None)

    def __call__(self, x, segments: layers.Segments | None, start: int = 0, stop: int | None = None):
        cfg = self.config
        head = stop is None
        x = self.model(x, segments, start, cfg.num_hidden_layers if head else stop, head)
        if not head:
            return x
        logits = self.model.embed_tokens.attend(x) if cfg.tie_word_embeddings else self.lm_head(x)
        logits = logits.astype(working_float())
        if cfg.final_logit_softcapping is not None:
            logits = layers.softcap(logits, cfg.final_logit_softcapping)
        return logits
