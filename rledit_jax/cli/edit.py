"""bin/edit: edits a model with a trained hypernetwork, or applies a delta export to its base model.

  bin/edit --config=configs/tiny.py --hypernet=runs/tiny/hypernet.safetensors \
      --requests=edits.jsonl --out=edited [--format=hf|delta] [--overwrite]
  bin/edit apply-delta --delta=edited-delta --out=edited [--base=/models/gpt-j-6b|tiny] [--overwrite]

--requests is JSON lines, one {"prompt": ..., "target_new": ...} per line (optional "subject",
"rephrase"). Per request it prints the target's teacher-forced probability (product over its tokens)
and a greedy continuation, before and after the edits. --format=hf writes an HF directory
`transformers` loads; --format=delta only the edited matrices' deltas and a manifest.
"""

from absl import app, flags
from ml_collections import config_flags

from rledit_jax.cli import app as cli_app
from rledit_jax.editing import cli as edit_job


def _require(*names):
    missing = [f"--{n}" for n in names if getattr(flags.FLAGS, n) is None]
    if missing:
        raise app.UsageError(f"missing {', '.join(missing)}")


def _main(argv):
    f = flags.FLAGS
    if argv[1:] == ["apply-delta"]:
        _require("delta", "out")
        edit_job.apply_delta(delta=f.delta, out=f.out, base=f.base, overwrite=f.overwrite)
    elif len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; the only subcommand is apply-delta")
    else:
        _require("config", "hypernet", "requests", "out")
        edit_job.edit_model(
            f.config,
            hypernet=f.hypernet,
            requests_path=f.requests,
            out=f.out,
            fmt=f.format,
            overwrite=f.overwrite,
            max_new_tokens=f.max_new_tokens,
        )


def main():
    config_flags.DEFINE_config_file(
        "config",
        None,
        "Config file (get_config()); its model, edit sites, tokenizer and data.n_edits / data.batch_size are used.",
        lock_config=True,
    )
    flags.DEFINE_string(
        "hypernet",
        None,
        "Trained hypernetwork in the reference naming (hypernet.safetensors of bin/train, .npz, or a reference .pth).",
    )
    flags.DEFINE_string("requests", None, "Edit requests, JSON lines.")
    flags.DEFINE_string("out", None, "Output directory (must not exist unless --overwrite).")
    flags.DEFINE_enum("format", "hf", list(edit_job.FORMATS), "hf: full HF model; delta: edited matrices only.")
    flags.DEFINE_bool("overwrite", False, "Replace an existing --out.")
    flags.DEFINE_integer("max_new_tokens", 8, "Greedy tokens printed per request.", lower_bound=1)
    flags.DEFINE_string("delta", None, "apply-delta: a directory written with --format=delta.")
    flags.DEFINE_string(
        "base",
        None,
        "apply-delta: the base model directory, or 'tiny' (default: the base named in the delta's manifest).",
    )
    cli_app.run(_main, program="bin/edit")
