"""bin/compare: the methods side by side on one edit stream (the paper's comparison table).

  bin/compare --config=configs/tiny.py --methods=rledit,malmen,mend,ridge,ft --workdir=runs/compare

`compare(config, names, workdir)` is the whole job as a library call. Every method's config (the
given one with `method` set) is validated first; the run is built once (`run.setup`: data, model and
batches), so every method trains on the same training stream and edits the same eval facts in the
same order; each then runs on it with its own specs and fresh state (`run.with_config`,
`baselines.lifelong.run_method`) into `workdir/<method>/`. Then it writes

  compare.json  {"methods": [{"method", "ES", "GS", "LS", "train_seconds", "edit_seconds",
                "peak_memory_bytes", "compile_seconds"}], "stream": {...}} (`report/inputs.py`)
  compare.md    the table printed at the end, with the stream it was measured on

and renders `workdir/report.md` with its figures (`rledit_jax.report`, as bin/report does).
"""

import os

from absl import app, flags, logging
from ml_collections import config_flags

from rledit_jax import atomic, config_schema, config_validation, report, run
from rledit_jax.baselines import lifelong
from rledit_jax.cli import app as cli_app
from rledit_jax.report.sections import num, pct, table

COLUMNS = ("ES", "GS", "LS", "train_seconds", "edit_seconds", "peak_memory_bytes", "compile_seconds")
HEADER = ["method", "ES (%)", "GS (%)", "LS (%)", "train (s)", "edit (s)", "peak memory (MiB)", "compile (s)"]


def parse_methods(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in config_schema.METHODS]
    if unknown or not names or len(set(names)) != len(names):
        raise ValueError(
            f"--methods={text!r}: give distinct methods, comma-separated, of {list(config_schema.METHODS)}"
            + (f" (unknown: {unknown})" if unknown else "")
        )
    return names


def method_config(config, name: str):
    """`config` with `method=name`, validated (errors name the method)."""
    config = config.copy_and_resolve_references()
    config.method = name
    try:
        config_validation.validate(config)
    except config_validation.ConfigError as error:
        raise config_validation.ConfigError(f"method {name}: {error}") from None
    return config


def rows(results: list[dict]) -> list[list[str]]:
    mib = lambda b: None if b is None else b / 2**20
    return [
        [m["method"], *(pct(m[s]) for s in ("ES", "GS", "LS"))]
        + [
            num(m["train_seconds"]),
            num(m["edit_seconds"]),
            num(mib(m["peak_memory_bytes"])),
            num(m["compile_seconds"]),
        ]
        for m in results
    ]


def _markdown(results: list[dict], stream: dict) -> str:
    facts = ", ".join(f"{k} {v}" for k, v in stream.items())
    return (
        "# Methods compared\n\n"
        f"Every method on one edit stream: {facts}. ES / GS / LS of the final model after editing every eval "
        "step in order. Wall times exclude compilation (its own column); peak memory is the largest compiled "
        "program's (XLA's arguments + temporaries + outputs, the frozen model included).\n\n"
        f"{table(HEADER, rows(results))}\n"
    )


def compare(config, names: list[str], workdir: str) -> list[dict]:
    """Runs the methods `names` on one run of `config`; returns their metrics (see the module docstring)."""
    configs = {name: method_config(config, name) for name in names}
    base = run.setup(configs[names[0]])
    results = []
    for name in names:
        metrics = lifelong.run_method(run.with_config(base, configs[name]), os.path.join(workdir, name))
        results.append({"method": name, **{k: metrics[k] for k in COLUMNS}})
        logging.info("%s: ES %.4f  GS %.4f  LS %.4f", name, metrics["ES"], metrics["GS"], metrics["LS"])
    stream = {
        "train batches": sum(b.edit.input_ids.shape[0] for b in base.train_batches),
        "eval steps": base.eval_batches.edit.input_ids.shape[0],
        "edits per step": config.data.n_edits,
        "facts edited": int((base.eval_batches.edit.fact_index >= 0).sum()),
    }
    atomic.write_json(os.path.join(workdir, "compare.json"), {"methods": results, "stream": stream})
    with atomic.atomic_open(os.path.join(workdir, "compare.md")) as f:
        f.write(_markdown(results, stream))
    report.render(workdir)
    return results


def _main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    names = parse_methods(flags.FLAGS.methods)
    cli_app.set_matmul_precision(flags.FLAGS.config)
    results = compare(flags.FLAGS.config, names, flags.FLAGS.workdir)
    print(table(HEADER, rows(results)))


def main():
    config_flags.DEFINE_config_file("config", None, "Config file (get_config()).", lock_config=True)
    flags.DEFINE_string("methods", ",".join(config_schema.METHODS), "Comma-separated methods to compare.")
    flags.DEFINE_string("workdir", None, "Directory for each method's results, compare.json/md and report.md.")
    flags.mark_flags_as_required(["config", "workdir"])
    cli_app.run(_main, program="bin/compare")
