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
    """Token embedding table `[vocab, d]`."""

    num_embeddings: int
    features: int
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, ids):
        table = self.param(
            "embedding",
            nn.initializers.normal(0.02),
            (self.num_embeddings, self.features),
            self.param_dtype,
        )
        return jnp.take(table, ids, axis=0).astype(self.dtype)


def gelu_new(x):
    """GPT-2/GPT-J "gelu_new": the tanh approximation of GELU."""
    return 0.5 * x * (1.0 + jnp.tanh(jnp.sqrt(2.0 / jnp.pi) * (x + 0.044715 * jnp.power(x, 3.0))))


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


def causal_bias(segments: Segments):
    """Additive attention bias `[B, 1, T, T]` (working float): 0 where query i may see key j (both in
    the same sequence, j not after i), the float32 minimum elsewhere (padding sees nothing)."""
    ids, pos = segments.ids, segments.positions
    same = (ids[:, :, None] == ids[:, None, :]) & (ids[:, None, :] >= 0)
    allowed = same & (pos[:, None, :] <= pos[:, :, None])
    return jnp.where(allowed[:, None], 0.0, jnp.finfo(jnp.float32).min).astype(working_float())


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


def dot_product_attention(q, k, v, bias, scale: float):
    """softmax(q k^T * scale + bias) v, scores and softmax in the working float.

    `q` `[B, T, H, d]`; `k`, `v` `[B, T, H_kv, d]` with H a multiple of H_kv (grouped-query attention:
    query head h reads key/value head h // (H / H_kv)); `bias` broadcasts to `[B, H, T, T]`.
    Returns `[B, T, H, d]` in `v`'s dtype.
    """
    group = q.shape[2] // k.shape[2]
    if group > 1:
        k, v = jnp.repeat(k, group, axis=2), jnp.repeat(v, group, axis=2)
    f = working_float()
    scores = jnp.einsum("bqhd,bkhd->bhqk", q.astype(f), k.astype(f)) * jnp.asarray(scale, f) + bias
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    return jnp.einsum("bhqk,bkhd->bqhd", probs, v)
