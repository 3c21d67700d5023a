"""Times the compiled RLEdit programs against the LLM passes they cannot avoid, and prints a table.

Usage (absl + ml_collections config flags, like `bin/train`; no workdir, nothing is written):

  bin/bench --config=configs/tiny.py [--config.model.tiny.n_embd=256 ...] [--steps=5] [--nobreakdown]
  python benchmarks/bench_editor.py --config=configs/tiny.py          (the same, as a plain script)

Inputs are built exactly as `rledit_jax.train_lib.train_and_evaluate` builds them (`load_model`,
`load_splits`, `edit_streams`, `data.build_step_batches`, `initial_editor`, `AnswerLengths.of`), so the
measured programs are the real ones: `epoch.train_epoch_jit` on the first training sequence and
`edit_step.edit_step` (jitted, as `evaluation.edit_sequence` runs it) on the first evaluation step.
Every program is compiled ahead of time (`jit(...).lower(...).compile()`, timed on its own), run once
to warm up, then `--steps` times with `jax.block_until_ready`; the table reports the median (and min).

How to read the table
---------------------
Header: the config and overrides, the backend, the LLM, T (training steps per sequence), M
micro-batches of B rows per step, L (padded tokens) per kind, A (longest answer, tokens) of the edit
and unrel kinds, D (back_depth), the edit sites with their kernels' d_in x d_out, and N, the rows one
step captures per site (M*B*A_edit with token="ans", else M*B*L): the hypernetwork, the N x N Gram
matrix and solve, and the K^T C shift all scale with N; masked rows are zero but still computed, and
"valid rows" says how many of the N really count.

Main rows (seconds; `compile` = lower + XLA compile, `median`/`min` = one call of the compiled program):

  train epoch        one `epoch.train_epoch_jit` call (`train.gradient` as configured; the floor
                     below is the reference mode's): T scanned steps plus the Adam step.
                     `per step` = median / T; `ratio` = per step / (train-step floor).
  train-step floor   the LLM work a training step cannot avoid, as one jitted function on the same
                     shapes: capture forward+backward on the step's edit batch (M*B rows, gradient
                     w.r.t. the sites' output probes), one forward of the step's unrel batch at W_t,
                     and one forward+backward of the window's equiv and unrel batches (D steps,
                     D*M*B rows each) on the shifted model, gradient w.r.t. the site kernels.
  edit step          one jitted `edit_step.edit_step`: capture, normaliser update, hypernetwork,
                     N x N solve, apply. `ratio` = median / (edit-step floor).
  edit-step floor    one forward+backward of the LLM on the edit batch w.r.t. the sites' probes.

A ratio of 1.0 means the program costs no more than its LLM passes; the target is <= 1.2. What is
above the floor is editor overhead (hypernetwork on N rows of width d_in+d_out, the Gram matrix and
Cholesky solve, the dense K^T C shift, carried [D, M, B, A, V] logits, scan bookkeeping, clipping).
`GFLOP` is XLA's cost analysis of the compiled program (a scan/while body is counted once, not T
times, so the epoch's figure is not comparable and is shown as `-`). Memory columns come from
`compiled.memory_analysis()`: `args` = argument buffers, `temp` = XLA's temporary buffers (the
program's working set beyond its inputs and outputs), `peak` where the backend reports it.

Breakdown (with `--breakdown`, the default): each part of one training step (t = D-1, a full window)
and of the edit step, jitted alone on the same shapes (inputs produced by the earlier parts), median
seconds and share of the full step. `sequence_step alone` is the scan body run once outside the
scan: if it is much faster than `epoch / T`, the time goes to how the scan runs, not to its work.
The closing `FLOP ratios` line compares XLA's FLOP counts of that step and of the edit step with their
floors: it does not move with machine load, so read it first on a busy machine (a FLOP ratio near 1
with a time ratio far above it means the time is lost to scheduling or small-op overhead, not work).

The last line says how much CPU other processes used meanwhile. On a small CPU machine that matters
beyond the usual noise: jaxlib's CPU Cholesky/triangular solves call a multi-threaded OpenBLAS whose
threads then wait for a core, so contended runs can be several times slower; compare with
`OPENBLAS_NUM_THREADS=1` (shown in the `env` line).
"""

import functools
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from rledit_jax import config_validation, data, models, train_lib
from rledit_jax.editor import edit_step as es
from rledit_jax.editor import epoch, losses, training
from rledit_jax.editor.sites import make_layout

MIB = 1024 * 1024


# ---------------------------------------------------------------------------------------------------
# Inputs, built the way train_lib builds them.


class Setup:
    """Everything the programs take, on device: the LLM, the editor state and the step batches."""

    def __init__(self, config):
        self.config = config
        self.llm_config, params, model_tokenizer = train_lib.load_model(config.model)
        tokenizer = data.load_tokenizer(config.data.tokenizer_path or model_tokenizer)
        self.layout = make_layout(self.llm_config, list(config.model.edit_sites))
        self.hp = training.EditorHParams.from_config(config.editor)
        n_edits, t_train = config.data.n_edits, config.train.num_seq
        train_facts, eval_facts, _ = train_lib.load_splits(
            config.data, config.train.seed, config.editor.n_epochs * t_train * n_edits, config.eval.num_seq * n_edits
        )
        train_streams, eval_stream = train_lib.edit_streams(config, len(train_facts), len(eval_facts))
        build = functools.partial(
            data.build_step_batches,
            tokenizer,
            batch_size=config.data.batch_size,
            max_length=self.llm_config.n_positions,
            truncate=config.data.truncate,
        )
        # As train_lib: all sequences together (their common L and answer lengths), then the first.
        all_train = build(train_facts, sum(train_streams, []))
        eval_batches = build(eval_facts, eval_stream)
        self.lengths = training.AnswerLengths.of(all_train)
        self.eval_answer_rows = training.AnswerLengths.of(eval_batches).edit
        self.train = jax.device_put(jax.tree.map(lambda x: x[:t_train], all_train))
        self.eval_step = jax.device_put(eval_batches.step(0))
        nets, norms = train_lib.initial_editor(config, self.layout, self.hp)
        self.params, self.nets, self.norms = jax.device_put((params, nets, norms))
        self.opt_state = jax.device_put(training.make_optimizer(self.hp).init(nets))
        self.kernels = jax.device_put(es.base_kernels(self.llm_config, self.layout, self.params))

    @property
    def shapes(self) -> dict:
        edit = self.train.edit
        t, m, b, l_edit = edit.input_ids.shape
        ans = self.hp.token == "ans"
        rows = np.asarray(edit.labels != losses.IGNORE if ans else edit.attention_mask == 1)
        per_step = rows.sum((1, 2, 3))
        return {
            "T": t,
            "M": m,
            "B": b,
            "D": self.hp.back_depth,
            "A_edit": self.lengths.edit,
            "A_unrel": self.lengths.unrel,
            "L": {kind: getattr(self.train, kind).input_ids.shape[-1] for kind in data.KINDS},
            "L_eval_edit": self.eval_step.edit.input_ids.shape[-1],
            "N": m * b * (self.lengths.edit if ans else l_edit),
            "valid_rows": (float(per_step.mean()), int(per_step.max())),
        }


# ---------------------------------------------------------------------------------------------------
# Timing.


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


def measure(jitted, static_args, dyn_args, steps: int) -> tuple[Measured, object]:
    """Compiles `jitted(*static_args, *dyn_args)` ahead of time, warms up, times `steps` calls.

    Returns `(Measured, the last call's outputs)`.
    """
    start = time.perf_counter()
    compiled = jitted.lower(*static_args, *dyn_args).compile()
    compile_s = time.perf_counter() - start
    out = jax.block_until_ready(compiled(*dyn_args))
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        out = jax.block_until_ready(compiled(*dyn_args))
        times.append(time.perf_counter() - start)
    return Measured(compile_s, times, compiled), out


# ---------------------------------------------------------------------------------------------------
# The programs: the real edit step, and the floors (the LLM passes the programs cannot avoid).


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def edit_step_jit(llm_config, layout, token, answer_rows, params, nets, kernels, norms, batch):
    """`edit_step.edit_step` as `evaluation.edit_sequence` calls it, jitted on its own."""
    return es.edit_step(llm_config, layout, token, params, nets, kernels, norms, batch, answer_rows)


def capture_floor(llm_config, sites, params, kernels, batch):
    """Forward+backward over the edit batch (M*B rows), gradient w.r.t. zero probes at the sites.

    Returns the value-gradients and the keys (what a capture must produce), unmasked and ungathered.
    """
    flat = es.flatten_micro_batches(batch)
    n, l = flat["input_ids"].shape
    m, b, _ = batch.input_ids.shape
    shapes = models.site_shapes(llm_config)
    zero = {s: jnp.zeros((n, l, shapes[s][1]), jnp.dtype(llm_config.dtype)) for s in sites}
    edited = es.edited_params(llm_config, params, kernels)

    def probed_loss(p):
        logits, keys = models.forward_with_probes(llm_config, edited, p, flat["input_ids"], flat["attention_mask"])
        ce = losses.micro_batch_cross_entropy(logits.reshape(m, b, l, -1), flat["labels"].reshape(m, b, l))
        return jnp.sum(ce), keys

    grads, keys = jax.grad(probed_loss, has_aux=True)(zero)
    return grads, keys


def train_step_floor(llm_config, sites, n_answer, depth, t, params, kernels, batches):
    """The LLM passes of training step `t` (static): capture, fresh unrel forward, window fwd+bwd."""
    edit = jax.tree.map(lambda x: x[t], batches.edit)
    unrel_t = jax.tree.map(lambda x: x[t], batches.unrel)
    grads_v, keys = capture_floor(llm_config, sites, params, kernels, edit)
    positions, _ = losses.answer_positions(unrel_t.labels, n_answer)
    fresh = losses.answer_logits(
        es.forward_kind(llm_config, es.edited_params(llm_config, params, kernels), unrel_t), positions
    )
    idx = np.maximum(t - np.arange(depth), 0)
    equiv_w = jax.tree.map(lambda x: x[idx], batches.equiv)
    unrel_w = jax.tree.map(lambda x: x[idx], batches.unrel)
    pre_logits = jnp.broadcast_to(fresh[None], (depth, *fresh.shape))
    w_positions, w_valid = losses.answer_positions(unrel_w.labels, n_answer)

    def window_loss(k):
        shifted = es.edited_params(llm_config, params, k)
        gen = jnp.sum(losses.micro_batch_cross_entropy(es.forward_kind(llm_config, shifted, equiv_w), equiv_w.labels))
        post = losses.answer_logits(es.forward_kind(llm_config, shifted, unrel_w), w_positions)
        return gen + jnp.sum(losses.micro_batch_kl(pre_logits, post, w_valid))

    grads_k = jax.grad(window_loss)(kernels)
    return grads_v, keys, grads_k


# ---------------------------------------------------------------------------------------------------
# The benchmark.


def _fmt(x, spec):
    return "-" if x is None else format(x, spec)


def _mem(m: Measured, key):
    return _fmt(m.memory[key] / MIB if key in m.memory else None, ".1f")


def _epoch_static(s: Setup) -> tuple:
    """`epoch.train_epoch_jit`'s static arguments, as `train_lib` passes them."""
    return (s.llm_config, s.layout, s.hp, s.lengths, s.config.train.gradient, s.config.trace)


def run(config, *, steps: int = 5, breakdown: bool = True, config_name: str = "") -> str:
    """Builds the inputs for `config`, measures every program, and returns the table as text."""
    meter = LoadMeter()
    s = Setup(config)
    lc, layout, hp = s.llm_config, s.layout, s.hp
    t_steps = s.shapes["T"]
    # Every step computes its window in full (steps before the start weigh 0); take a full one.
    t_floor = min(t_steps - 1, hp.back_depth - 1)

    epoch_m, _ = measure(
        epoch.train_epoch_jit, _epoch_static(s), (s.params, s.nets, s.opt_state, s.norms, s.train), steps
    )
    floor_train, _ = measure(
        jax.jit(train_step_floor, static_argnums=(0, 1, 2, 3, 4)),
        (lc, layout.names, s.lengths.unrel, hp.back_depth, t_floor),
        (s.params, s.kernels, s.train),
        steps,
    )
    edit_m, _ = measure(
        edit_step_jit,
        (lc, layout, hp.token, s.eval_answer_rows),
        (s.params, s.nets, s.kernels, s.norms, s.eval_step.edit),
        steps,
    )
    floor_edit, _ = measure(
        jax.jit(capture_floor, static_argnums=(0, 1)),
        (lc, layout.names),
        (s.params, s.kernels, s.eval_step.edit),
        steps,
    )

    per_step = epoch_m.run_s / t_steps
    lines = _header(s, config_name)
    cols = (
        f"{'program':<34}{'compile s':>10}{'median s':>10}{'min s':>10}{'per step s':>11}"
        f"{'floor s':>10}{'ratio':>7}{'GFLOP':>8}{'args MiB':>9}{'temp MiB':>9}{'peak MiB':>9}"
    )
    lines += [cols, "-" * len(cols)]

    def row(name, m: Measured, per=None, floor=None, gflop=True):
        ratio = None if per is None or floor is None else per / floor
        return (
            f"{name:<34}{m.compile_s:>10.2f}{m.run_s:>10.5f}{m.min_s:>10.5f}{_fmt(per, '.5f'):>11}"
            f"{_fmt(floor, '.5f'):>10}{_fmt(ratio, '.2f'):>7}"
            f"{_fmt(m.gflop if gflop else None, '.3f'):>8}{_mem(m, 'args'):>9}{_mem(m, 'temp'):>9}"
            f"{_mem(m, 'peak'):>9}"
        )

    lines += [
        row(f"train epoch ({t_steps} steps + Adam)", epoch_m, per_step, floor_train.run_s, gflop=False),
        row("train-step floor (LLM passes)", floor_train),
        row("edit step", edit_m, edit_m.run_s, floor_edit.run_s),
        row("edit-step floor (capture fwd+bwd)", floor_edit),
    ]
    lines.append(f"{steps} timed runs after one warm-up; ratio = median per step / floor median (target <= 1.2)")
    if breakdown:
        lines += [""] + _breakdown(s, steps, per_step, edit_m, (floor_train, floor_edit))
    other = meter.other_cores()
    if other is not None:
        note = "  (> 0.1: timings contended, rerun on an idle machine)" if other > 0.1 else ""
        lines.append(f"other processes used {other:.2f} of {os.cpu_count()} cores during the run{note}")
    return "\n".join(lines)


def _header(s: Setup, config_name: str) -> list[str]:
    lc, sh, hp = s.llm_config, s.shapes, s.hp
    device = jax.devices()[0]
    lines = [
        f"rledit-jax editor benchmark  config={config_name or '?'}",
        f"backend {jax.default_backend()} ({device.device_kind}, {len(jax.devices())} device(s), "
        f"{os.cpu_count()} cpu)  jax {jax.__version__}",
        f"LLM     GPT-J n_layer={lc.n_layer} n_embd={lc.n_embd} n_inner={lc.n_inner} n_head={lc.n_head} "
        f"vocab={lc.vocab_size} dtype={lc.dtype}",
        f"shapes  T={sh['T']} M={sh['M']} B={sh['B']} D={sh['D']}  L edit/equiv/unrel="
        f"{sh['L']['edit']}/{sh['L']['equiv']}/{sh['L']['unrel']} (eval edit {sh['L_eval_edit']})  "
        f"A edit/unrel={sh['A_edit']}/{sh['A_unrel']}",
        f"editor  rank={hp.rank} n_blocks={hp.n_blocks} token={hp.token} "
        f"gradient={s.config.train.gradient}  N={sh['N']} captured rows per site per step, valid: "
        f"mean {sh['valid_rows'][0]:.1f}, max {sh['valid_rows'][1]}",
    ]
    for shape, names in s.layout.groups.items():
        lines.append(f"sites   d_in x d_out = {shape[0]} x {shape[1]}: {', '.join(names)}")
    lines += [
        "env     "
        + " ".join(
            f"{k}={os.environ.get(k, 'unset')}"
            for k in ("OPENBLAS_NUM_THREADS", "XLA_FLAGS", "JAX_DEFAULT_MATMUL_PRECISION")
        ),
        "",
    ]
    return lines


def _breakdown(s: Setup, steps: int, train_step_s: float, edit_m: Measured, floors) -> list[str]:
    """Each part of training step t = D-1 and of the edit step, jitted alone on the same shapes.

    `floors`: the (train-step, edit-step) floor measurements, for the FLOP ratios.
    """
    edit_step_s = edit_m.run_s
    lc, layout, hp, lengths = s.llm_config, s.layout, s.hp, s.lengths
    depth = hp.back_depth
    t = min(s.shapes["T"] - 1, depth - 1)
    m, b = s.shapes["M"], s.shapes["B"]

    def timed(fn, *args):
        return measure(jax.jit(fn), (), args, steps)

    def capture(answer_rows):
        return lambda params, kernels, batch: es.capture_step(
            lc, params, kernels, layout, batch, hp.token, answer_rows
        )

    edit_t = jax.tree.map(lambda x: x[t], s.train.edit)
    unrel_t = jax.tree.map(lambda x: x[t], s.train.unrel)

    cap_m, captures = timed(capture(lengths.edit), s.params, s.kernels, edit_t)
    norm_m, norms = timed(lambda norms, caps: es.update_norms(layout, norms, caps), s.norms, captures)
    pred_m, factors = timed(
        lambda nets, norms, caps: es.predict_factors(layout, nets, norms, caps), s.nets, norms, captures
    )

    def fresh_fn(params, kernels, unrel):
        positions, _ = losses.answer_positions(unrel.labels, lengths.unrel)
        return losses.answer_logits(es.forward_kind(lc, es.edited_params(lc, params, kernels), unrel), positions)

    fresh_m, fresh = timed(fresh_fn, s.params, s.kernels, unrel_t)
    window = tuple(training.window_of(k, t, depth) for k in (s.train.equiv, s.train.unrel))
    pre_logits = jnp.concatenate(
        [fresh[None], jnp.zeros((depth - 1, m, b, lengths.unrel, lc.vocab_size), fresh.dtype)], 0
    )
    weights = training.window_weights(t, depth, hp.time_decay)

    def loss_fn(nets, params, kernels, norms, caps, window, pre_logits, weights):
        return training.step_loss(
            nets,
            llm_config=lc,
            layout=layout,
            hp=hp,
            params=params,
            kernels=kernels,
            norms=norms,
            captures=caps,
            window=window,
            pre_logits=pre_logits,
            weights=weights,
            n_answer=lengths.unrel,
        )

    loss_args = (s.nets, s.params, s.kernels, norms, captures, window, pre_logits, weights)
    fwd_m, _ = timed(lambda *a: loss_fn(*a)[0], *loss_args)
    vg_m, (_, grads) = timed(jax.value_and_grad(loss_fn, has_aux=True), *loss_args)
    acc = jax.tree.map(jnp.zeros_like, s.nets)
    clip_m, _ = timed(
        lambda acc, g: training.clip_accumulated(jax.tree.map(jnp.add, acc, g), hp.max_grad_norm), acc, grads
    )
    apply_m, _ = timed(es.apply_factors, s.kernels, factors)
    hyper_m, _ = timed(
        lambda nets, norms, caps: jax.grad(
            lambda n: sum(jnp.sum(c) for f in es.predict_factors(layout, n, norms, caps).values() for c in f)
        )(nets),
        s.nets,
        norms,
        captures,
    )
    # The scan body alone: one training step outside the scan, from the sequence's initial carry.
    static = (lc, layout, hp, lengths)
    carry = training.initial_carry(*static, s.params, s.nets, s.norms, s.train)
    body_m, _ = timed(
        lambda params, nets, batches, carry, t: training.sequence_step(*static, params, nets, batches, carry, t),
        s.params,
        s.nets,
        s.train,
        carry,
        jnp.int32(t),
    )

    # The edit step's parts on the eval batch.
    ecap_m, ecaps = timed(capture(s.eval_answer_rows), s.params, s.kernels, s.eval_step.edit)
    enorm_m, enorms = timed(lambda norms, caps: es.update_norms(layout, norms, caps), s.norms, ecaps)
    epred_m, efactors = timed(
        lambda nets, norms, caps: es.predict_factors(layout, nets, norms, caps), s.nets, enorms, ecaps
    )
    eapply_m, _ = timed(es.apply_factors, s.kernels, efactors)

    cols = f"{'part (jitted alone)':<60}{'median s':>10}{'min s':>10}{'share':>7}{'GFLOP':>8}{'temp MiB':>9}"
    lines = [f"breakdown of training step t={t} (full window) and of the edit step", cols, "-" * len(cols)]

    def row(name, mm: Measured, whole):
        return (
            f"{name:<60}{mm.run_s:>10.5f}{mm.min_s:>10.5f}{100 * mm.run_s / whole:>6.0f}%"
            f"{_fmt(mm.gflop, '.3f'):>8}{_mem(mm, 'temp'):>9}"
        )

    def total(name, parts, whole):
        x = sum(mm.run_s for _, mm in parts)
        return f"{name:<60}{x:>10.5f}{'':>10}{100 * x / whole:>6.0f}%"

    train_parts = [
        ("train: capture_step (edit fwd+bwd, keys, value-grads)", cap_m),
        ("train: update_norms", norm_m),
        ("train: fresh unrel forward at W_t", fresh_m),
        ("train: value_and_grad(step_loss) (window fwd+bwd, hypernet)", vg_m),
        ("train: clip_accumulated", clip_m),
        ("train: apply_factors (K^T C)", apply_m),
    ]
    lines += [row(n, mm, train_step_s) for n, mm in train_parts]
    lines.append(total("train: sum of parts", train_parts, train_step_s))
    lines.append(f"{'train: full step (epoch median / T)':<60}{train_step_s:>10.5f}{'':>10}{100:>6.0f}%")
    lines += [
        row("  training.sequence_step alone (one step, no scan)", body_m, train_step_s),
        row("  step_loss forward only", fwd_m, train_step_s),
        row("  predict_factors forward (hypernet + Gram + Cholesky)", pred_m, train_step_s),
        row("  gradient through predict_factors alone", hyper_m, train_step_s),
    ]
    edit_parts = [
        ("edit: capture_step", ecap_m),
        ("edit: update_norms", enorm_m),
        ("edit: predict_factors (hypernet + Gram + Cholesky)", epred_m),
        ("edit: apply_factors (K^T C)", eapply_m),
    ]
    lines += [row(n, mm, edit_step_s) for n, mm in edit_parts]
    lines.append(total("edit: sum of parts", edit_parts, edit_step_s))
    lines.append(f"{'edit: full step':<60}{edit_step_s:>10.5f}{'':>10}{100:>6.0f}%")
    if body_m.gflop and floors[0].gflop and edit_m.gflop and floors[1].gflop:
        lines.append(
            f"FLOP ratios (XLA cost analysis, immune to timing noise): training step (sequence_step) / floor "
            f"{body_m.gflop / floors[0].gflop:.3f}, edit step / floor {edit_m.gflop / floors[1].gflop:.3f}"
        )
    return lines


def profile_epoch(config, profile_dir: str) -> None:
    """A `jax.profiler` trace (TensorBoard / Perfetto) of one steady-state training-epoch call."""
    s = Setup(config)
    args = (*_epoch_static(s), s.params, s.nets, s.opt_state, s.norms, s.train)
    jax.block_until_ready(epoch.train_epoch_jit(*args))
    with jax.profiler.trace(profile_dir):
        jax.block_until_ready(epoch.train_epoch_jit(*args))
    print(f"profile written to {profile_dir}")


# ---------------------------------------------------------------------------------------------------
# Entry point (bin/bench calls `define_flags` and `main`; `python benchmarks/bench_editor.py` too).


def define_flags():
    from absl import flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", None, "Config file (get_config()).", lock_config=True)
    flags.DEFINE_integer("steps", 5, "Timed runs per program (after one warm-up).")
    flags.DEFINE_bool("breakdown", True, "Also time each part of a training step and of an edit step.")
    flags.DEFINE_string("profile_dir", None, "If set, also write a jax.profiler trace of one epoch here.")
    flags.mark_flags_as_required(["config"])


def main(argv):
    from absl import app, flags

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    fl = flags.FLAGS
    config_validation.validate(fl.config)
    config_file = getattr(fl["config"], "config_filename", None) or "?"
    overrides = [a for a in sys.argv[1:] if a.startswith("--config.")]
    name = " ".join([config_file, *overrides])
    print(run(fl.config, steps=fl.steps, breakdown=fl.breakdown, config_name=name), flush=True)
    if fl.profile_dir:
        profile_epoch(fl.config, fl.profile_dir)


if __name__ == "__main__":
    from absl import app

    define_flags()
    app.run(main)
