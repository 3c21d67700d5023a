"""The benchmark table: rledit-jax's compiled programs against the torch passes a reference step runs.

  bin/bench --config=configs/bench_gptj_8l.py [--steps=3] [--reference]

Inputs come from the run builder (`rledit_jax.run.setup`), as for `bin/train`, so the measured
programs are the real ones, on the first training sequence and the eval stream. Each program is
compiled ahead of time (`lower(...).compile()`, timed on its own), run once to warm up, then `--steps`
times with `jax.block_until_ready`; donated inputs get fresh copies outside the timed region.

Rows (seconds; `ratio` = ours / the torch passes of the same work, timed in the same run on the same
batches with `transformers`' torch model, `benchmark/torch_passes.py`):

  train sequence       one `train_step.train_sequence_and_update` (T steps + Adam) vs the torch passes
                       of the whole sequence (step t's window holds min(t+1, D) steps)
  full-depth step      `sequence.sequence_step` at t = D-1 (a full window), compiled alone, vs the
                       torch passes of one full-depth step
  edit step            `edit_step.edit_step` on the first eval step vs its edit fwd+bwd
  final scoring        the scoring of every kind of the eval stream on edited kernels vs a torch
                       forward of every kind
  lifelong evaluation  `evaluation.evaluate` (T edit steps, then the scoring) vs the torch passes of both
  plain fwd+bwd        one forward+backward of the first edit batch, padded to its length L, logits at every
                       position, in both frameworks: the per-pass cost of XLA vs torch on equal work

`temp MiB` is XLA's temporary buffers of the compiled program (`memory_analysis()`), `GFLOP` its FLOP
estimate (a loop body counts once). With `--reference` and RLEDIT_REF_DIR set, the official code's
`RLEDIT.train` (one sequence) and `sequential_valid` are timed too, on the same model and batches,
alternating with ours (`benchmark/reference_code.py`). The last line says how much CPU other
processes used meanwhile: timings on a busy machine are only as good as that number.
"""

import dataclasses
import os

import jax
import jax.numpy as jnp

from rledit_jax import models, planning, probes, run
from rledit_jax.benchmark import torch_passes
from rledit_jax.benchmark.timing import MIB, LoadMeter, Measured, measure
from rledit_jax.jit import program
from rledit_jax.method import edit_step as es
from rledit_jax.method import evaluation, sequence, train_step


@program
def sequence_step_program(spec, params, nets, batches, carry, t):
    """One training step outside the scan (`sequence.sequence_step`)."""
    return sequence.sequence_step(spec, params, nets, batches, carry, t)


@program
def scoring_program(spec, params, kernels, batches):
    """The final scoring of every kind of an eval stream (the second half of `evaluation.evaluate`)."""
    return {
        kind: evaluation.row_scores(spec, params, kernels, getattr(batches, kind), getattr(spec.lengths, kind))
        for kind in evaluation.SCORES
    }


@program
def plain_pass_program(spec, params, kernels, batch):
    """One forward+backward of a padded batch `[R, L]` through the whole model, logits at every position:
    the gradient of the mean answer CE w.r.t. the sites' kernels (the per-pass comparison with torch)."""

    def loss(kernels):
        logits = models.forward_layers(spec.model, models.set_sites(spec.model, params, kernels), *batch[:2])
        return probes.masked_cross_entropy(logits, batch[2])

    return jax.grad(loss)(kernels)


def _fmt(x, spec):
    return "-" if x is None else format(x, spec)


def _mem(m: Measured, key):
    return _fmt(m.memory[key] / MIB if key in m.memory else None, ".1f")


def _header(r: run.Run, config_name: str) -> list[str]:
    model, hp, lengths = r.spec.model, r.spec.hparams, r.spec.lengths
    dims = " ".join(f"{f.name}={getattr(model, f.name)}" for f in dataclasses.fields(model) if "token" not in f.name)
    t, m, b, _ = r.train_batches[0].edit.input_ids.shape
    padded = "/".join(str(getattr(r.train_batches[0], k).input_ids.shape[-1]) for k in ("edit", "equiv", "unrel"))
    packed = "/".join(f"{getattr(lengths, k).tokens}" for k in ("edit", "equiv", "unrel"))
    device = jax.devices()[0]
    lines = [
        f"rledit-jax benchmark  config={config_name or '?'}",
        f"backend {jax.default_backend()} ({device.device_kind}, {len(jax.devices())} device(s), "
        f"{os.cpu_count()} cpu)  jax {jax.__version__}  matmul precision "
        f"{jax.config.jax_default_matmul_precision or 'default'}",
        f"LLM     {model.model_type} {dims}",
        f"shapes  T={t} M={m} B={b} D={hp.back_depth}  padded L edit/equiv/unrel={padded}  packed tokens per "
        f"step={packed}  answers edit/unrel={lengths.edit.answers}/{lengths.unrel.answers}",
        f"hparams rank={hp.rank} n_blocks={hp.n_blocks} token={hp.token} gradient={r.spec.gradient}",
    ]
    lines += [f"sites   {s[0]} x {s[1]}: {', '.join(n)}" for s, n in r.spec.layout.groups.items()]
    lines.append(
        "env     " + " ".join(f"{k}={os.environ.get(k, 'unset')}" for k in ("OPENBLAS_NUM_THREADS", "XLA_FLAGS"))
    )
    return [*lines, ""]


def _padded(kind_step):
    """A step's kind batch `[M, B, L]` as one right-padded batch `(input_ids, attention_mask, labels)` `[M*B, L]`."""
    l = kind_step.input_ids.shape[-1]
    return tuple(getattr(kind_step, f).reshape(-1, l) for f in ("input_ids", "attention_mask", "labels"))


def table(config, *, steps: int = 3, reference: bool = False, config_name: str = "") -> str:
    """Builds the run of `config`, measures every program and its torch passes, returns the table."""
    meter = LoadMeter()
    r = run.setup(config)
    spec, eval_spec, depth = r.spec, r.eval_spec, r.spec.hparams.back_depth
    params, hypernets, opt_state = jax.device_put((r.params, r.hypernets, r.opt_state))
    train, evals = jax.device_put((r.train_batches[0], r.eval_batches))
    kernels = es.base_kernels(spec, params)
    n_steps = train.edit.input_ids.shape[0]
    t_full = min(n_steps, depth) - 1

    ours = {
        "sequence": measure(
            train_step.train_sequence_and_update, (spec,), (params, hypernets, opt_state, train), steps, donated=(1, 2)
        )[0],
        "step": measure(
            sequence_step_program,
            (spec,),
            (params, hypernets.nets, train, sequence.initial_carry(spec, params, hypernets, train), jnp.int32(t_full)),
            steps,
        )[0],
        "edit": measure(
            planning.edit_step_program, (eval_spec,), (params, hypernets, kernels, evals.step(0).edit), steps
        )[0],
        "scoring": measure(scoring_program, (eval_spec,), (params, kernels, evals), steps)[0],
        "evaluation": measure(evaluation.evaluate, (eval_spec,), (params, hypernets, evals), steps, donated=(1,))[0],
        "plain": measure(plain_pass_program, (spec,), (params, kernels, _padded(train.step(0).edit)), steps)[0],
    }
    passes = torch_passes.TorchPasses(spec, r.params)
    tsteps, esteps = torch_passes.torch_steps(r.train_batches[0]), torch_passes.torch_steps(r.eval_batches)
    seconds = lambda fn: torch_passes.median_seconds(fn, steps)
    edit_pass = lambda: [passes.forward_backward(s["edit"]) for s in esteps]
    scoring_pass = lambda: [passes.forward(s[k]) for s in esteps for k in ("edit", "equiv", "unrel")]
    torch_s = {
        "sequence": seconds(lambda: [passes.train_step(tsteps, t, depth) for t in range(n_steps)]),
        "step": seconds(lambda: passes.train_step(tsteps, t_full, depth)),
        "edit": seconds(lambda: passes.forward_backward(esteps[0]["edit"])),
        "scoring": seconds(scoring_pass),
        "evaluation": seconds(lambda: (edit_pass(), scoring_pass())),
        "plain": seconds(lambda: passes.forward_backward([torch_passes.padded(r.train_batches[0].step(0).edit)])),
    }
    names = {
        "sequence": f"train sequence ({n_steps} steps + Adam)",
        "step": f"full-depth training step (t={t_full})",
        "edit": "edit step",
        "scoring": "final scoring (every kind)",
        "evaluation": f"lifelong evaluation ({n_steps} edits + scoring)",
        "plain": "fwd+bwd of the padded edit batch alone",
    }
    cols = (
        f"{'program':<38}{'compile s':>10}{'median s':>10}{'min s':>10}{'torch s':>10}{'ratio':>7}"
        f"{'GFLOP':>8}{'temp MiB':>9}"
    )
    lines = [*_header(r, config_name), cols, "-" * len(cols)]
    for key, m in ours.items():
        lines.append(
            f"{names[key]:<38}{m.compile_s:>10.2f}{m.run_s:>10.4f}{m.min_s:>10.4f}{torch_s[key]:>10.4f}"
            f"{m.run_s / torch_s[key]:>7.2f}{_fmt(m.gflop, '.2f'):>8}{_mem(m, 'temp'):>9}"
        )
    lines.append(f"{steps} timed runs after one warm-up (medians); ratio = ours / torch passes of the same work")
    if reference:
        from rledit_jax.benchmark import reference_code

        lines += ["", *reference_code.compare(r, ours, steps)]
    other = meter.other_cores()
    if other is not None:
        note = "  (> 0.1: timings contended, rerun on an idle machine)" if other > 0.1 else ""
        lines.append(f"other processes used {other:.2f} of {os.cpu_count()} cores during the run{note}")
    return "\n".join(lines)


def profile_sequence(config, profile_dir: str) -> None:
    """A `jax.profiler` trace (TensorBoard / Perfetto) of one steady-state training-sequence call."""
    r = run.setup(config)
    params, train = jax.device_put((r.params, r.train_batches[0]))
    args = lambda: (r.spec, params, *jax.tree.map(jnp.copy, (r.hypernets, r.opt_state)), train)
    jax.block_until_ready(train_step.train_sequence_and_update(*args()))
    with jax.profiler.trace(profile_dir):
        jax.block_until_ready(train_step.train_sequence_and_update(*args()))
    print(f"profile written to {profile_dir}")
