"""`program`: how every compiled program of the project is jitted.

A program's first argument is its one static argument (a frozen, hashable spec or model config:
everything that decides the compiled program's structure); the others are pytrees. Arguments
named in `donate` give their buffers to the outputs (the caller must not use them afterwards).
"""

import jax


def program(fn=None, *, donate: tuple[str, ...] = ()):
    """`jax.jit(fn)` with argument 0 static and the `donate` arguments donated; a decorator."""
    if fn is None:
        return lambda f: program(f, donate=donate)
    return jax.jit(fn, static_argnums=0, donate_argnames=donate)
