import jax

# Numeric parity tests compare float32 against torch: pin XLA's matmuls to full precision.
jax.config.update("jax_default_matmul_precision", "highest")
