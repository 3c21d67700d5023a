"""The working float type: float32, or float64 when `jax_enable_x64` is on.

Everything numerically sensitive (softmax, LayerNorm statistics, logits, losses, captured keys and
value-gradients, shifts, the hypernetwork and its normaliser) runs in this type whatever the model's
storage/compute dtype (bf16 models included). Float64 exists for the numerical tests (finite
differences); production runs use float32.
"""

import jax.numpy as jnp
from jax import dtypes


def working_float():
    return dtypes.canonicalize_dtype(jnp.float64)
