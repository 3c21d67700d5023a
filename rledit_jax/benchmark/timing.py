"""Timing compiled programs: compile ahead of time, warm up, time `steps` calls; machine load.

`measure(jitted, static_args, dyn_args, steps)` returns a `Measured` (compile seconds, median / min
run seconds, XLA's memory analysis and FLOP estimate) and the last call's outputs. `LoadMeter`
tells how much CPU other processes used meanwhile (timings on a shared machine are only as good as
that number).
"""

import os
import statistics
import time

import jax
import jax.numpy as jnp

MIB = 1024 * 1024


def _busy_jiffies():
    """Busy CPU time of the whole machine (all processes), in clock ticks; None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)  # minus idle, iowait


class LoadMeter:
    """CPU used by *other* processes since construction, in cores."""

    def __init__(self):
        self.start_wall = time.perf_counter()
        self.start_busy = _busy_jiffies()
        self.start_self = self._self_s()

    @staticmethod
    def _self_s():
        t = os.times()
        return t.user + t.system

    def other_cores(self):
        busy = _busy_jiffies()
        if busy is None or self.start_busy is None:
            return None
        wall = time.perf_counter() - self.start_wall
        machine = (busy - self.start_busy) / os.sysconf("SC_CLK_TCK")
        return max(0.0, machine - (self._self_s() - self.start_self)) / wall


class Measured:
    def __init__(self, compile_s, times, compiled):
        self.compile_s = compile_s
        self.times = times
        self.run_s = statistics.median(times)
        self.min_s = min(times)
        self.memory = _memory(compiled)
        self.gflop = _gflop(compiled)


def _memory(compiled) -> dict:
    try:
        stats = compiled.memory_analysis()
    except Exception:  # Not every backend implements it.
        return {}
    if stats is None:
        return {}
    out = {"args": stats.argument_size_in_bytes, "temp": stats.temp_size_in_bytes, "out": stats.output_size_in_bytes}
    peak = getattr(stats, "peak_memory_in_bytes", 0)
    if peak:
        out["peak"] = peak
    return out


def _gflop(compiled):
    try:
        cost = compiled.cost_analysis()
    except Exception:
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    if not cost or "flops" not in cost:
        return None
    return cost["flops"] / 1e9


def measure(jitted, static_args, dyn_args, steps: int, donated: tuple[int, ...] = ()) -> tuple[Measured, object]:
    """Compiles `jitted(*static_args, *dyn_args)` ahead of time, warms up, times `steps` calls.

    `donated`: positions in `dyn_args` of arguments the program consumes; each call gets fresh
    copies of them, made outside the timed region. Returns `(Measured, the last call's outputs)`.
    """
    start = time.perf_counter()
    compiled = jitted.lower(*static_args, *dyn_args).compile()
    compile_s = time.perf_counter() - start

    def call():
        args = [jax.tree.map(jnp.copy, a) if i in donated else a for i, a in enumerate(dyn_args)]
        jax.block_until_ready(args)
        start = time.perf_counter()
        out = jax.block_until_ready(compiled(*args))
        return time.perf_counter() - start, out

    _, out = call()
    times = []
    for _ in range(steps):
        elapsed, out = call()
        times.append(elapsed)
    return Measured(compile_s, times, compiled), out
