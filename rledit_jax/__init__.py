"""rledit-jax: RLEdit lifelong knowledge editing in JAX/Flax.

On CPU, jaxlib's Cholesky and triangular solves (every shift's N x N solve) call a bundled OpenBLAS
whose worker threads fight XLA's own thread pool for the cores; that doubled a training step's time in
`bin/bench`. One OpenBLAS thread is the default here (set before any solve runs; a value the user
exported wins).
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
