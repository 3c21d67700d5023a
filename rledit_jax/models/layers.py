"""Layers shared by the architectures, with the edit-site probe built into `Linear`.

Layout, fixed for the whole project: a linear's `kernel` is `[d_in, d_out]` and maps a key `k`
(`[..., d_in]`) to a value `k @ kernel + bias` (`[..., d_out]`); HF stores the transpose. A weight shift
`S` (`[d_in, d_out]`, DESIGN.md section 3) is therefore added to `kernel` as it is.

Probes (DESIGN.md section 2): when the `probes` collection holds `output` for a linear (same shape as
its output), that array is added to the output, and when the `keys` collection is mutable the linear
stores its input there. `jax.grad` with respect to the zero probe is the value-gradient.
"""

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rledit_jax.dtypes import working_float

PROBES = "probes"
KEYS = "keys"


class Linear(nn.Module):
    """`y = x @ kernel + bias`, computed in `dtype`; parameters stored in `param_dtype`."""

    features: int
    use_bias: bool
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", nn.initializers.normal(0.02), (x.shape[-1], self.features), self.param_dtype)
        x = x.astype(self.dtype)
        y = x @ kernel.astype(self.dtype)
        if self.use_bias:
            bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
            y = y + bias.astype(self.dtype)
        if self.is_mutable_collection(KEYS):
            self.put_variable(KEYS, "input", x)
        if self.has_variable(PROBES, "output"):
            y = y + self.get_variable(PROBES, "output").astype(y.dtype)
        return y


class LayerNorm(nn.Module):
    """LayerNorm over the last axis, statistics in the working float (float32), result in `dtype`."""

    epsilon: float
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        d = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (d,), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (d,), self.param_dtype)
        x32 = x.astype(working_float())
        mean = x32.mean(-1, keepdims=True)
        var = jnp.square(x32 - mean).mean(-1, keepdims=True)
        y = (x32 - mean) * jnp.reciprocal(jnp.sqrt(var + self.epsilon))
        y = y * scale.astype(x32.dtype) + bias.astype(x32.dtype)
        return y.astype(self.dtype)


class Embed(nn.Module):
    """Token embedding table `[vocab, d]`; `attend` is the tied LM head `x @ table^T`."""

    num_embeddings: int
    features: int
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    def setup(self):
        shape = (self.num_embeddings, self.features)
        self.embedding = self.param("embedding", nn.initializers.normal(0.02), shape, self.param_dtype)

    def __call__(self, ids):
        return jnp.take(self.embedding, ids, axis=0).astype(self.dtype)

    def attend(self, x):
        return x.astype(self.dtype) @ self.embedding.astype(self.dtype).T


class RMSNorm(nn.Module):
    """`x / rms(x)` times a learned scale over the last axis, statistics in the working float.

    HF's two conventions: by default the normalised x is cast to `dtype` and then multiplied by the
    scale `w` (Llama, Mistral, Qwen2; `w` starts at 1); with `unit_offset` the factor is `1 + w`,
    applied in the working float before the cast (Gemma; `w` starts at 0).
    """

    epsilon: float
    unit_offset: bool = False
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        init = nn.initializers.zeros if self.unit_offset else nn.initializers.ones
        scale = self.param("scale", init, (x.shape[-1],), self.param_dtype)
        x32 = x.astype(working_float())
        y = x32 * jax.lax.rsqrt(jnp.square(x32).mean(-1, keepdims=True) + self.epsilon)
        if self.unit_offset:
            return (y * (1.0 + scale.astype(y.dtype))).astype(self.dtype)
        return y.astype(self.dtype) * scale.astype(self.dtype)


def gelu_new(x):
    """GPT-2/GPT-J "gelu_new": the tanh approximation of GELU."""
    return 0.5 * x * (1.0 + jnp.tanh(jnp.sqrt(2.0 / jnp.pi) * (x + 0.044715 * jnp.power(x, 3.0))))


def softcap(x, cap: float):
    """`cap * tanh(x / cap)`: smoothly bounds `x` to `(-cap, cap)` (Gemma-2's logit soft-capping)."""
    return jnp.tanh(x / cap) * cap


class Segments(NamedTuple):
    """Which tokens of a `[B, T]` input belong together, and where each sits in its own sequence.

    `ids` `[B, T]` int32: the sequence a token belongs to (-1: padding); a token attends to the
    earlier tokens of its own sequence only. `positions` `[B, T]` int32: its position in that
    sequence (rotary embeddings use it). Right-padded rows (one sequence per row) are `of_mask`;
    several sequences packed into one row carry their own ids and positions.
    """

    positions: jax.Array
    ids: jax.Array

    @classmethod
    def of_mask(cls, attention_mask) -> "Segments":
        """Right-padded rows: positions `0..T-1`, id 0 on the real tokens (mask 1), -1 on padding."""
        b, t = attention_mask.shape
        ids = jnp.where(attention_mask.astype(bool), 0, -1).astype(jnp.int32)
        return cls(positions=jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t)), ids=ids)


def causal_bias(segments: Segments, window: int | None = None):
    """Additive attention bias `[B, 1, T, T]` (working float): 0 where query i may see key j, the
    float32 minimum elsewhere (padding sees nothing).

    Query i sees key j when both are in the same sequence, j is not after i and, with a sliding
    `window`, `pos_i - pos_j < window` (the query and the `window - 1` keys before it, as HF's
    sliding-window masks).
    """
    ids, pos = segments.ids, segments.positions
    same = (ids[:, :, None] == ids[:, None, :]) & (ids[:, None, :] >= 0)
    behind = pos[:, :, None] - pos[:, None, :]  # [B, T_query, T_key]
    allowed = same & (behind >= 0)
    if window is not None:
        allowed = allowed & (behind < window)
    return jnp.where(allowed[:, None], 0.0, jnp.finfo(jnp.float32).min).astype(working_float())


def rotary_inv_freq(dim: int, theta: float) -> np.ndarray:
    """Rotary inverse frequencies `theta^(-2i / dim)`, i < dim / 2: host constants `[dim / 2]`, computed
    in float32 in the order HF's rotary embeddings use."""
    exponents = np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)
    # The power rounded once to float32 (as torch's float32 pow), then the float32 reciprocal.
    base = np.float64(np.float32(theta))
    return np.float32(1.0) / (base ** exponents.astype(np.float64)).astype(np.float32)


def rotary_tables(positions, inv_freq: np.ndarray, dtype):
    """`(cos, sin)` `[B, T, 1, 2 * len(inv_freq)]` in `dtype` at `positions` `[B, T]` in the rotate-half
    layout (each angle `pos * inv_freq[i]` at dims i and i + dim / 2), computed in float32."""
    angles = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq, jnp.float32)
    angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]
    return jnp.cos(angles).astype(dtype), jnp.sin(angles).astype(dtype)


def rotary_half(x, cos, sin):
    """HF's rotate-half rotary embedding of `x` `[B, T, H, head_dim]`: dims (i, i + head_dim / 2) form
    a pair rotated by its angle; `cos`, `sin` from `rotary_tables`."""
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rotated * sin


def rotary_interleaved(x, positions, rotary_dim: int, theta: float = 10000.0):
    """GPT-J's rotary embedding of `x` `[B, T, H, head_dim]` at `positions` `[B, T]`.

    Only the first `rotary_dim` dims rotate; dims (2i, 2i+1) form a pair rotated by the angle
    `pos * theta^(-2i / rotary_dim)` ("rotate every two").
    """
    inv_freq = 1.0 / (theta ** (jnp.arange(0, rotary_dim, 2, dtype=jnp.float32) / rotary_dim))
    angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, T, rotary_dim/2]
    sin = jnp.repeat(jnp.sin(angles), 2, axis=-1)[:, :, None, :].astype(x.dtype)
    cos = jnp.repeat(jnp.cos(angles), 2, axis=-1)[:, :, None, :].astype(x.dtype)
    rot, rest = x[..., :rotary_dim], x[..., rotary_dim:]
    # (a0, a1, a2, a3, ...) -> (-a1, a0, -a3, a2, ...)
    swapped = jnp.stack([-rot[..., 1::2], rot[..., ::2]], axis=-1).reshape(rot.shape)
    return jnp.concatenate([rot * cos + swapped * sin, rest], axis=-1)


def dot_product_attention(q, k, v, bias, scale: float, softcap_at: float | None = None):
    """softmax(q k^T * scale + bias) v, scores and softmax in the working float.

    `q` `[B, T, H, d]`; `k`, `v` `[B, T, H_kv, d]` with H a multiple of H_kv (grouped-query attention:
    query head h reads key/value head h // (H / H_kv)); `bias` broadcasts to `[B, H, T, T]`. With
    `softcap_at`, the scaled scores are soft-capped (`softcap`) before the bias is added (Gemma-2).
    Returns `[B, T, H, d]` in `v`'s dtype.
    """
    group = q.shape[2] // k.shape[2]
    if group > 1:
        k, v = jnp.repeat(k, group, axis=2), jnp.repeat(v, group, axis=2)
    f = working_float()
    scores = jnp.einsum("bqhd,bkhd->bhqk", q.astype(f), k.astype(f)) * jnp.asarray(scale, f)
    if softcap_at is not None:
        scores = softcap(scores, softcap_at)
    probs = jax.nn.softmax(scores + bias, axis=-1).astype(v.dtype)
    return jnp.einsum("bhqk,bkhd->bqhd", probs, v)
