"""The benchmark table: the compiled RLEdit programs against the LLM passes they cannot avoid.

Usage (absl + ml_collections config flags, like `bin/train`; no workdir, nothing is written):

  bin/bench --config=configs/tiny.py [--config.model.tiny.n_embd=256 ...] [--steps=5] [--nobreakdown]

Inputs are built by the run builder (`rledit_jax.run.setup`), as for `bin/train`, so the measured
programs are the real ones: `train_step.train_sequence_and_update` on the first training sequence
and `edit_step.edit_step` (compiled on its own, as the evaluation loop and the edit library run it)
on the first evaluation step.
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

  train sequence     one `train_step.train_sequence_and_update` call (`train.gradient` as configured; the floor
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
times, so the sequence's figure is not comparable and is shown as `-`). Memory columns come from
`compiled.memory_analysis()`: `args` = argument buffers, `temp` = XLA's temporary buffers (the
program's working set beyond its inputs and outputs), `peak` where the backend reports it.

Breakdown (with `--breakdown`, the default): each part of one training step (t = D-1, a full window)
and of the edit step, jitted alone on the same shapes (inputs produced by the earlier parts), median
seconds and share of the full step. `sequence_step alone` is the scan body run once outside the
scan: if it is much faster than `sequence / T`, the time goes to how the scan runs, not to its work.
The closing `FLOP ratios` line compares XLA's FLOP counts of that step and of the edit step with their
floors: it does not move with machine load, so read it first on a busy machine (a FLOP ratio near 1
with a time ratio far above it means the time is lost to scheduling or small-op overhead, not work).

The last line says how much CPU other processes used meanwhile. On a small CPU machine that matters
beyond the usual noise: jaxlib's CPU Cholesky/triangular solves call a multi-threaded OpenBLAS whose
threads then wait for a core, so contended runs can be several times slower; compare with
`OPENBLAS_NUM_THREADS=1` (shown in the `env` line).
"""

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np

from rledit_jax import data, planning, run
from rledit_jax.benchmark import floors
from rledit_jax.benchmark.timing import MIB, LoadMeter, Measured, measure
from rledit_jax.method import edit_step as es
from rledit_jax.method import losses, sequence, train_step


def _fmt(x, spec):
    return "-" if x is None else format(x, spec)


def _mem(m: Measured, key):
    return _fmt(m.memory[key] / MIB if key in m.memory else None, ".1f")


def shapes(r: run.Run) -> dict:
    """The sizes the table's header names (see the module docstring)."""
    train = r.train_batches[0]
    t, m, b, l_edit = train.edit.input_ids.shape
    ans = r.spec.hparams.token == "ans"
    rows = np.asarray(train.edit.labels != losses.IGNORE if ans else train.edit.attention_mask == 1)
    per_step = rows.sum((1, 2, 3))
    return {
        "T": t,
        "M": m,
        "B": b,
        "D": r.spec.hparams.back_depth,
        "A_edit": r.spec.lengths.edit,
        "A_unrel": r.spec.lengths.unrel,
        "L": {kind: getattr(train, kind).input_ids.shape[-1] for kind in data.KINDS},
        "L_eval_edit": r.eval_batches.edit.input_ids.shape[-1],
        "N": m * b * (r.spec.lengths.edit if ans else l_edit),
        "valid_rows": (float(per_step.mean()), int(per_step.max())),
    }


class _Inputs:
    """The arrays the programs take, on device: the run's first training sequence and eval step."""

    def __init__(self, r: run.Run):
        self.params, self.hypernets, self.opt_state = jax.device_put((r.params, r.hypernets, r.opt_state))
        self.train = jax.device_put(r.train_batches[0])
        self.eval_edit = jax.device_put(r.eval_batches.step(0).edit)
        self.kernels = jax.device_put(es.base_kernels(r.spec, self.params))


def table(config, *, steps: int = 5, breakdown: bool = True, config_name: str = "") -> str:
    """Builds the run of `config`, measures every program, and returns the table as text."""
    meter = LoadMeter()
    r = run.setup(config)
    x = _Inputs(r)
    sh = shapes(r)
    t_steps = sh["T"]
    # Every step computes its window in full (steps before the start weigh 0); take a full one.
    t_floor = jnp.int32(min(t_steps - 1, r.spec.hparams.back_depth - 1))

    sequence_m, _ = measure(
        train_step.train_sequence_and_update,
        (r.spec,),
        (x.params, x.hypernets, x.opt_state, x.train),
        steps,
        donated=(1, 2),
    )
    floor_train, _ = measure(floors.train_step_floor, (r.spec,), (t_floor, x.params, x.kernels, x.train), steps)
    edit_m, _ = measure(
        planning.edit_step_program, (r.eval_spec,), (x.params, x.hypernets, x.kernels, x.eval_edit), steps
    )
    floor_edit, _ = measure(floors.capture_floor, (r.eval_spec,), (x.params, x.kernels, x.eval_edit), steps)

    per_step = sequence_m.run_s / t_steps
    lines = _header(r, sh, config_name)
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
        row(f"train sequence ({t_steps} steps + Adam)", sequence_m, per_step, floor_train.run_s, gflop=False),
        row("train-step floor (LLM passes)", floor_train),
        row("edit step", edit_m, edit_m.run_s, floor_edit.run_s),
        row("edit-step floor (capture fwd+bwd)", floor_edit),
    ]
    lines.append(f"{steps} timed runs after one warm-up; ratio = median per step / floor median (target <= 1.2)")
    if breakdown:
        lines += [""] + _breakdown(r, x, sh, steps, per_step, edit_m, (floor_train, floor_edit))
    other = meter.other_cores()
    if other is not None:
        note = "  (> 0.1: timings contended, rerun on an idle machine)" if other > 0.1 else ""
        lines.append(f"other processes used {other:.2f} of {os.cpu_count()} cores during the run{note}")
    return "\n".join(lines)


def _header(r: run.Run, sh: dict, config_name: str) -> list[str]:
    model, hp = r.spec.model, r.spec.hparams
    dims = " ".join(f"{f.name}={getattr(model, f.name)}" for f in dataclasses.fields(model) if "token" not in f.name)
    device = jax.devices()[0]
    lines = [
        f"rledit-jax editor benchmark  config={config_name or '?'}",
        f"backend {jax.default_backend()} ({device.device_kind}, {len(jax.devices())} device(s), "
        f"{os.cpu_count()} cpu)  jax {jax.__version__}",
        f"LLM     {model.model_type} {dims}",
        f"shapes  T={sh['T']} M={sh['M']} B={sh['B']} D={sh['D']}  L edit/equiv/unrel="
        f"{sh['L']['edit']}/{sh['L']['equiv']}/{sh['L']['unrel']} (eval edit {sh['L_eval_edit']})  "
        f"A edit/unrel={sh['A_edit']}/{sh['A_unrel']}",
        f"hparams rank={hp.rank} n_blocks={hp.n_blocks} token={hp.token} "
        f"gradient={r.spec.gradient}  N={sh['N']} captured rows per site per step, valid: "
        f"mean {sh['valid_rows'][0]:.1f}, max {sh['valid_rows'][1]}",
    ]
    for shape, names in r.spec.layout.groups.items():
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


def _breakdown(
    r: run.Run, x: _Inputs, sh: dict, steps: int, train_step_s: float, edit_m: Measured, floors
) -> list[str]:
    """Each part of training step t = D-1 and of the edit step, jitted alone on the same shapes.

    `floors`: the (train-step, edit-step) floor measurements, for the FLOP ratios.
    """
    edit_step_s = edit_m.run_s
    spec, eval_spec, hp = r.spec, r.eval_spec, r.spec.hparams
    depth = hp.back_depth
    t = min(sh["T"] - 1, depth - 1)
    m, b = sh["M"], sh["B"]

    def timed(fn, *args):
        return measure(jax.jit(fn), (), args, steps)

    edit_t = es.at_step(x.train.edit, t)
    cap_m, captures = timed(lambda *a: es.capture_step(spec, *a), x.params, x.kernels, edit_t)
    norm_m, norms = timed(lambda *a: es.update_norms(spec, *a), x.hypernets.norms, captures)
    pred_m, factors = timed(lambda *a: es.predict_factors(spec, *a), x.hypernets.nets, norms, captures)
    fresh_m, fresh = timed(
        lambda *a: sequence.unrel_answer_logits(spec, *a), x.params, x.kernels, es.at_step(x.train.unrel, t)
    )
    pre_logits = jnp.concatenate(
        [fresh[None], jnp.zeros((depth - 1, m, b, spec.lengths.unrel, spec.model.vocab_size), fresh.dtype)], 0
    )
    window = sequence.Window.at(spec, x.train, t, pre_logits)
    loss_fn = lambda nets, *a: sequence.step_loss(nets, spec, *a)
    loss_args = (x.hypernets.nets, x.params, x.kernels, norms, captures, window)
    fwd_m, _ = timed(lambda *a: loss_fn(*a)[0], *loss_args)
    vg_m, (_, grads) = timed(jax.value_and_grad(loss_fn, has_aux=True), *loss_args)
    acc = jax.tree.map(jnp.zeros_like, x.hypernets.nets)
    clip_m, _ = timed(
        lambda acc, g: sequence.clip_accumulated(jax.tree.map(jnp.add, acc, g), hp.max_grad_norm), acc, grads
    )
    apply_m, _ = timed(es.apply_factors, x.kernels, factors)
    hyper_m, _ = timed(
        lambda nets, norms, caps: jax.grad(
            lambda n: sum(jnp.sum(c) for f in es.predict_factors(spec, n, norms, caps).values() for c in f)
        )(nets),
        x.hypernets.nets,
        norms,
        captures,
    )
    # The scan body alone: one training step outside the scan, from the sequence's initial carry.
    carry = sequence.initial_carry(spec, x.params, x.hypernets, x.train)
    body_m, _ = timed(
        lambda *a: sequence.sequence_step(spec, *a), x.params, x.hypernets.nets, x.train, carry, jnp.int32(t)
    )

    # The edit step's parts on the eval batch.
    ecap_m, ecaps = timed(lambda *a: es.capture_step(eval_spec, *a), x.params, x.kernels, x.eval_edit)
    enorm_m, enorms = timed(lambda *a: es.update_norms(eval_spec, *a), x.hypernets.norms, ecaps)
    epred_m, efactors = timed(lambda *a: es.predict_factors(eval_spec, *a), x.hypernets.nets, enorms, ecaps)
    eapply_m, _ = timed(es.apply_factors, x.kernels, efactors)

    cols = f"{'part (jitted alone)':<60}{'median s':>10}{'min s':>10}{'share':>7}{'GFLOP':>8}{'temp MiB':>9}"
    lines = [f"breakdown of training step t={t} (full window) and of the edit step", cols, "-" * len(cols)]

    def row(name, mm: Measured, whole):
        return (
            f"{name:<60}{mm.run_s:>10.5f}{mm.min_s:>10.5f}{100 * mm.run_s / whole:>6.0f}%"
            f"{_fmt(mm.gflop, '.3f'):>8}{_mem(mm, 'temp'):>9}"
        )

    def section(label, parts, whole, full):
        """The parts' rows, their sum and the full program's time, as shares of the full time."""
        x = sum(mm.run_s for _, mm in parts)
        return [
            *(row(f"{label}: {n}", mm, whole) for n, mm in parts),
            f"{label + ': sum of parts':<60}{x:>10.5f}{'':>10}{100 * x / whole:>6.0f}%",
            f"{label + ': ' + full:<60}{whole:>10.5f}{'':>10}{100:>6.0f}%",
        ]

    train_parts = [
        ("capture_step (edit fwd+bwd, keys, value-grads)", cap_m),
        ("update_norms", norm_m),
        ("fresh unrel forward at W_t", fresh_m),
        ("value_and_grad(step_loss) (window fwd+bwd, hypernet)", vg_m),
        ("clip_accumulated", clip_m),
        ("apply_factors (K^T C)", apply_m),
    ]
    lines += section("train", train_parts, train_step_s, "full step (sequence median / T)")
    lines += [
        row("  sequence.sequence_step alone (one step, no scan)", body_m, train_step_s),
        row("  step_loss forward only", fwd_m, train_step_s),
        row("  predict_factors forward (hypernet + Gram + Cholesky)", pred_m, train_step_s),
        row("  gradient through predict_factors alone", hyper_m, train_step_s),
    ]
    edit_parts = [
        ("capture_step", ecap_m),
        ("update_norms", enorm_m),
        ("predict_factors (hypernet + Gram + Cholesky)", epred_m),
        ("apply_factors (K^T C)", eapply_m),
    ]
    lines += section("edit", edit_parts, edit_step_s, "full step")
    if body_m.gflop and floors[0].gflop and edit_m.gflop and floors[1].gflop:
        lines.append(
            f"FLOP ratios (XLA cost analysis, immune to timing noise): training step (sequence_step) / floor "
            f"{body_m.gflop / floors[0].gflop:.3f}, edit step / floor {edit_m.gflop / floors[1].gflop:.3f}"
        )
    return lines


def profile_sequence(config, profile_dir: str) -> None:
    """A `jax.profiler` trace (TensorBoard / Perfetto) of one steady-state training-sequence call."""
    r = run.setup(config)
    x = _Inputs(r)
    args = lambda: (r.spec, x.params, *jax.tree.map(jnp.copy, (x.hypernets, x.opt_state)), x.train)
    jax.block_until_ready(train_step.train_sequence_and_update(*args()))
    with jax.profiler.trace(profile_dir):
        jax.block_until_ready(train_step.train_sequence_and_update(*args()))
    print(f"profile written to {profile_dir}")
