"""Memory and compute of the training and editing programs, from shapes alone (no weights).

`plan(...)` builds `jax.ShapeDtypeStruct` stand-ins for the LLM params, the hypernetworks, the
optimiser state and the step batches of a config, compiles the real jitted programs (one training
sequence + Adam step per gradient mode and sequence length T; one edit step) and reads XLA's memory
analysis and FLOP estimate. Numbers are those of the backend that compiles (run it on the target
accelerator for exact figures; the CPU backend's buffer assignment is an estimate of a GPU's).

On a mesh (`config.mesh`, `rledit_jax.partitioning`) the inputs carry the shardings of a real run
and the programs compile for the mesh's devices: every column is per device. Without that many
devices (`devices_for`), they compile for fake CPU devices (`bin/plan --mesh` starts them).

Columns: `args` (inputs, the frozen model included), `temp` (XLA's scratch, where activations and
scan residuals live), `out`, `peak` = args + temp + out - aliased, and the FLOPs of one full-depth
training step. XLA's estimate counts a loop body once, so the training program's count is one step
(plus the Adam update) with one window entry; the column adds the other `back_depth - 1` entries
(compiled alone, `window_entry_program`), twice in the unrolled modes (their backward scan recomputes
each step).
"""

import dataclasses

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from rledit_jax import config_validation, data, models, run
from rledit_jax.jit import program
from rledit_jax.llm_config import model_config_of
from rledit_jax.method import edit_step, sequence, train_step
from rledit_jax.method.packing import KindLengths, Lengths, round_up
from rledit_jax.method.spec import init_hypernets
from rledit_jax.models import known_configs
from rledit_jax.partitioning import placement, rules
from rledit_jax.partitioning.mesh import make_mesh


@dataclasses.dataclass(frozen=True)
class PlanRow:
    program: str
    mode: str
    steps: int
    args_bytes: int
    temp_bytes: int
    out_bytes: int
    peak_bytes: int
    flops: float


def model_config(config, model_name: str | None):
    """The LLM config: a known name, `model.path`'s config.json (no weights read), or the tiny model."""
    if model_name:
        if model_name not in known_configs.KNOWN_CONFIGS:
            raise ValueError(f"unknown model {model_name!r}; known: {sorted(known_configs.KNOWN_CONFIGS)}")
        llm = models.config_from_hf(known_configs.KNOWN_CONFIGS[model_name])
        return dataclasses.replace(llm, param_dtype=config.model.dtype, dtype=config.model.dtype)
    return model_config_of(config.model)


def devices_for(n: int) -> list:
    """`n` devices to compile for: the default backend's, or the CPU's when it has fewer."""
    devices = jax.devices()
    return (devices if len(devices) >= n else jax.devices("cpu"))[:n]


def _on(tree, shardings):
    """`jax.ShapeDtypeStruct`s of `tree`'s leaves with the shardings of `shardings`."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def abstract_batches(steps: int, n_edits: int, batch_size: int, seq_len: int, sharding=None) -> data.StepBatches:
    micro = -(-n_edits // batch_size)
    tokens = jax.ShapeDtypeStruct((steps, micro, batch_size, seq_len), jnp.int32, sharding=sharding)
    rows = jax.ShapeDtypeStruct((steps, micro, batch_size), jnp.int32, sharding=sharding)
    kind = data.KindBatch(
        input_ids=tokens, attention_mask=tokens, labels=tokens, old_labels=tokens, fact_index=rows, n_truncated=0
    )
    return data.StepBatches(edit=kind, equiv=kind, unrel=kind)


@program
def edit_step_program(spec, params, hypernets, kernels, batch):
    """`edit_step.edit_step` compiled on its own (the evaluation loop's and the edit library's body)."""
    return edit_step.edit_step(spec, params, hypernets, kernels, batch)


@program
def window_entry_program(spec, params, kernels, shifted, batches, pre_logits):
    """One window entry of a training step (`sequence.entry_terms`), compiled alone for its FLOPs."""
    window = sequence.Window(batches, jnp.int32(0), sequence.Rings.empty(spec, params, batches), pre_logits)
    return sequence.entry_terms(spec, params, kernels, shifted, window, jnp.int32(0))


def _flops(compiled) -> float:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", float("nan")))


def peak_bytes(compiled) -> int:
    """A compiled program's peak: arguments + temporaries + outputs - aliased (XLA's memory analysis)."""
    mem = compiled.memory_analysis()
    return mem.argument_size_in_bytes + mem.temp_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes


def _row(program, mode, steps, compiled, extra_flops: float = 0.0) -> PlanRow:
    mem = compiled.memory_analysis()
    peak = peak_bytes(compiled)
    return PlanRow(
        program,
        mode,
        steps,
        mem.argument_size_in_bytes,
        mem.temp_size_in_bytes,
        mem.output_size_in_bytes,
        peak,
        _flops(compiled) + extra_flops,
    )


def plan(config, *, modes, steps_list, seq_len: int, answer_len: int, model_name: str | None = None):
    """PlanRows for the training program (each mode x T) and for one edit step, from shapes alone."""
    llm = model_config(config, model_name)
    config_validation.check_mesh(llm, config.mesh)
    mesh = make_mesh(config.mesh, devices_for(config.mesh.data * config.mesh.model))
    # Every example `seq_len` tokens long: the packed steps hold n_edits * seq_len tokens.
    kind = KindLengths(answers=answer_len, tokens=round_up(config.data.n_edits * seq_len, 16))
    spec = run.make_spec(config, llm, Lengths(edit=kind, equiv=kind, unrel=kind), mesh)
    key = jax.random.PRNGKey(0)
    whole = lambda tree: _on(tree, placement.replicated(mesh, tree))
    params = _on(rules.param_shapes(llm), rules.param_shardings(mesh, llm))
    hypernets = whole(jax.eval_shape(lambda: init_hypernets(key, spec.layout, spec.hparams)))
    opt_state = whole(jax.eval_shape(lambda h: train_step.make_optimizer(spec.hparams).init(h.nets), hypernets))
    n_edits, batch_size = config.data.n_edits, config.data.batch_size
    kernels = _on(
        jax.eval_shape(lambda p: edit_step.base_kernels(spec, p), params),
        rules.named(mesh, {s: rules.site_spec(llm, s) for s in spec.layout.names}),
    )
    batch_sharding = rules.named(mesh, P())
    depth = spec.hparams.back_depth
    rows = []
    for mode in modes:
        mode_spec = dataclasses.replace(spec, gradient=mode, keep_factors=False)
        reference = mode == "reference"
        m = -(-n_edits // batch_size)
        pre = (
            jax.ShapeDtypeStruct(
                (depth, m, batch_size, answer_len, llm.vocab_size), jnp.float32, sharding=batch_sharding
            )
            if reference
            else None
        )
        one = abstract_batches(1, n_edits, batch_size, seq_len, batch_sharding)
        entry = _flops(window_entry_program.lower(mode_spec, params, kernels, kernels, one, pre).compile())
        extra = (depth - 1) * entry * (1 if reference else 2)
        for steps in steps_list:
            batches = abstract_batches(steps, n_edits, batch_size, seq_len, batch_sharding)
            lowered = train_step.train_sequence_and_update.lower(mode_spec, params, hypernets, opt_state, batches)
            rows.append(_row("train sequence", mode, steps, lowered.compile(), extra))
    step_batch = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype, sharding=batch_sharding),
        abstract_batches(1, n_edits, batch_size, seq_len).edit,
    )
    compiled = edit_step_program.lower(spec, params, hypernets, kernels, step_batch).compile()
    rows.append(_row("edit step", "-", 1, compiled))
    return llm, spec.layout, rows


def format_table(llm, layout, config, rows, seq_len, answer_len) -> str:
    gib = 2.0**30
    n = config.mesh.data * config.mesh.model
    head = (
        f"model {llm.model_type}: n_layers={llm.n_layers} vocab={llm.vocab_size} "
        f"dtype={llm.param_dtype}; sites {list(layout.names)}\n"
        f"mesh data={config.mesh.data} x model={config.mesh.model}, compiled for {n} "
        f"{devices_for(n)[0].platform} device(s); memory per device\n"
        f"n_edits={config.data.n_edits} batch_size={config.data.batch_size} seq_len={seq_len} "
        f"answer_len={answer_len} back_depth={config.hparams.back_depth} rank={config.hparams.rank}\n"
    )
    lines = [
        f"{'program':<15} {'mode':<22} {'T':>5} {'args GiB':>9} {'temp GiB':>9} {'out GiB':>8} "
        f"{'peak GiB':>9} {'TFLOP/full step':>15}"
    ]
    for r in rows:
        lines.append(
            f"{r.program:<15} {r.mode:<22} {r.steps:>5} {r.args_bytes / gib:>9.3f} "
            f"{r.temp_bytes / gib:>9.3f} {r.out_bytes / gib:>8.3f} {r.peak_bytes / gib:>9.3f} "
            f"{r.flops / 1e12:>15.3f}"
        )
    return head + "\n".join(lines)
