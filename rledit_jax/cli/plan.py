"""bin/plan: memory and FLOPs of the training and editing programs for a config, without weights.

bin/plan --config=configs/gptj.py --model=gpt-j-6b --steps=100,400 --modes=reference,unrolled
bin/plan --config=configs/llama3_70b_instruct.py --model=meta-llama-3-70b-instruct --mesh=1x8 --steps=400

`--mesh=DATAxMODEL` (the same as `--config.mesh.data=DATA --config.mesh.model=MODEL`) plans per device
on that mesh: on the accelerators when the machine has that many, else on as many CPU devices, which
this process starts (a CPU's buffer assignment is an estimate of a GPU's).
"""

import jax
from absl import app, flags
from ml_collections import config_flags

from rledit_jax import config_schema, config_validation, planning
from rledit_jax.cli import app as cli_app


def _positive_ints(name: str, values: list[str]) -> list[int]:
    try:
        ints = [int(v) for v in values]
    except ValueError:
        ints = []
    if not ints or min(ints) < 1:
        raise app.UsageError(f"--{name} must be a comma-separated list of positive integers, got {values}")
    return ints


def _set_mesh(config, mesh: str | None) -> None:
    """`config.mesh` from `--mesh=DATAxMODEL`, and CPU devices enough for it (before jax starts)."""
    if mesh is not None:
        try:
            sizes = [int(v) for v in mesh.split("x")]
        except ValueError:
            sizes = []
        if len(sizes) != 2 or min(sizes) < 1:
            raise app.UsageError(f"--mesh must be DATAxMODEL, two positive integers such as 2x4, got {mesh!r}")
        config.mesh.data, config.mesh.model = sizes
    n = config.mesh.data * config.mesh.model
    if n > 1:
        jax.config.update("jax_num_cpu_devices", n)


def _main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    f = flags.FLAGS
    _set_mesh(f.config, f.mesh)
    # Planning reads no data and, with --model, no model directory: paths need not exist.
    config_validation.validate(f.config, check_files=False)
    cli_app.set_matmul_precision(f.config)
    unknown = sorted(set(f.modes) - set(config_schema.GRADIENT_MODES))
    if unknown:
        raise app.UsageError(f"--modes: unknown gradient modes {unknown}; known: {list(config_schema.GRADIENT_MODES)}")
    steps = _positive_ints("steps", f.steps)
    seq_len, answer_len = _positive_ints("seq_len", [f.seq_len])[0], _positive_ints("answer_len", [f.answer_len])[0]
    llm, layout, rows = planning.plan(
        f.config, modes=f.modes, steps_list=steps, seq_len=seq_len, answer_len=answer_len, model_name=f.model
    )
    print(planning.format_table(llm, layout, f.config, rows, seq_len, answer_len))


def main():
    config_flags.DEFINE_config_file("config", None, "Config file (get_config()).", lock_config=True)
    flags.DEFINE_string("model", None, "A known model's shapes instead of model.path (e.g. gpt-j-6b).")
    flags.DEFINE_list("steps", ["10", "20"], "Sequence lengths T to compile the training program for.")
    flags.DEFINE_list("modes", ["reference", "unrolled"], "Gradient modes (train.gradient values).")
    flags.DEFINE_integer("seq_len", 32, "Padded tokens per example (every kind).")
    flags.DEFINE_integer("answer_len", 8, "Longest answer, in tokens.")
    flags.DEFINE_string("mesh", None, "DATAxMODEL, e.g. 1x8: memory per device on that mesh (config.mesh).")
    flags.mark_flags_as_required(["config"])
    cli_app.run(_main, program="bin/plan")
