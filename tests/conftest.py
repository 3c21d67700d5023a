import gc

import jax
import pytest

# Numeric parity tests compare float32 against torch: pin XLA's matmuls to full precision.
jax.config.update("jax_default_matmul_precision", "highest")


@pytest.fixture(autouse=True, scope="module")
def release_compiled_programs():
    """Each XLA CPU executable keeps a few memory maps of JIT code until its cache entry is dropped; one
    process compiling the whole suite passes the kernel's map limit (vm.max_map_count, 65530) and
    LLVM aborts. Drop every module's programs when it ends."""
    yield
    jax.clear_caches()
    gc.collect()
