"""Wall time per phase, apart from compilation, and the largest program's memory.

    meter = Meter()
    out = meter("train", program, spec, *pytrees)   # = program(spec, *pytrees), timed

The first call of a program with a given spec and argument shapes compiles it ahead of time
(`lower().compile()`, the executable `jax.jit` then reuses), timed as "compile", and reads XLA's
memory analysis: peak = arguments + temporaries + outputs - aliased (the frozen model included, as
`bin/plan` counts it). Every call is then timed to completion (`block_until_ready`) under its phase.
"""

import collections
import time

import jax

from rledit_jax import planning


def _signature(args) -> str:
    return str(jax.tree.map(lambda x: (getattr(x, "shape", None), getattr(x, "dtype", type(x))), args))


class Meter:
    def __init__(self):
        self.seconds = collections.defaultdict(float)  # phase -> seconds ("compile" included)
        self.peak_bytes = 0
        self._compiled = set()

    def __call__(self, phase: str, program, spec, *args):
        key = (program, spec, _signature(args))
        if key not in self._compiled:
            start = time.perf_counter()
            compiled = program.lower(spec, *args).compile()
            self.seconds["compile"] += time.perf_counter() - start
            self.peak_bytes = max(self.peak_bytes, planning.peak_bytes(compiled))
            self._compiled.add(key)
        start = time.perf_counter()
        out = jax.block_until_ready(program(spec, *args))
        self.seconds[phase] += time.perf_counter() - start
        return out
