"""rledit-jax: RLEdit lifelong knowledge editing in JAX/Flax."""
