"""The official PyTorch RLEdit (github zhrli324/RLEdit), imported from RLEDIT_REF_DIR, and timed beside ours.

Nothing of it is copied here: its modules (`nets`, `util`, `data.*`, `editor.*`, `model`) are imported
from the checkout at run time. What they import but neither a timing nor a unit comparison needs is
stubbed in `sys.modules` first: `wandb` (`log` records its dicts in `wandb.logged`), `glue_eval`
(`GLUEEval`), `omegaconf` (`DictConfig`, `OmegaConf`) and `hydra`. Its configs are nested
`types.SimpleNamespace`s with the attributes its code reads (`reference_config`); devices are "cpu".
The reference test tier (tests/reference) uses the same import.
"""

import importlib
import os
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

import jax

from rledit_jax import models
from rledit_jax.benchmark import torch_passes
from rledit_jax.method import evaluation, train_step

REF_ENV = "RLEDIT_REF_DIR"
REF_COMMIT = "c6576a1e8e8a122c54d61ec5580ec7397e740a42"

_MODULES = {
    "nets": "nets",
    "util": "util",
    "model": "model",
    "base_data": "data.base",
    "zsre": "data.zsre",
    "counterfact": "data.counterfact",
    "fever": "data.fever",
    "base": "editor.base",
    "rledit": "editor.rledit",
}


def reference_dir() -> Path | None:
    value = os.environ.get(REF_ENV)
    return Path(value) if value and Path(value).is_dir() else None


def missing_reason() -> str:
    value = os.environ.get(REF_ENV)
    if not value:
        return f"{REF_ENV} is unset: point it at a checkout of github.com/zhrli324/RLEdit (BUILD.md 'Reference tier')"
    return f"{REF_ENV}={value} is not a directory"


class _Recorder(types.ModuleType):
    """A `wandb` stand-in: `init` is a no-op, `log` appends each dict to `logged`."""

    def __init__(self):
        super().__init__("wandb")
        self.logged = []

    def init(self, *args, **kwargs):
        return None

    def log(self, values, *args, **kwargs):
        self.logged.append(dict(values))


def _install_stubs() -> types.ModuleType:
    wandb = _Recorder()
    glue = types.ModuleType("glue_eval")
    glue.__path__ = []  # A package, so `glue_eval.glue_eval` resolves to the stub below.
    glue_module = types.ModuleType("glue_eval.glue_eval")

    class GLUEEval:
        def __init__(self, *args, **kwargs):
            raise RuntimeError("GLUE evaluation is stubbed out here (set glue_step=0)")

    glue_module.GLUEEval = GLUEEval
    glue.glue_eval = glue_module
    omegaconf = types.ModuleType("omegaconf")
    omegaconf.DictConfig = dict  # Only used as a type annotation by the modules imported here.
    omegaconf.OmegaConf = types.SimpleNamespace(to_container=lambda config, resolve=True: config)
    hydra = types.ModuleType("hydra")
    hydra.main = lambda *args, **kwargs: lambda fn: fn
    sys.modules.update(
        {"wandb": wandb, "glue_eval": glue, "glue_eval.glue_eval": glue_module, "omegaconf": omegaconf, "hydra": hydra}
    )
    return wandb


def import_reference(path: Path) -> types.SimpleNamespace:
    """The reference's modules (attribute names: `_MODULES`) plus the `wandb` recorder and `dir`."""
    wandb = _install_stubs()
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
    # The reference's model.py sets CUDA_VISIBLE_DEVICES when imported; keep the process's value.
    saved = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        modules = {name: importlib.import_module(module) for name, module in _MODULES.items()}
    finally:
        if saved is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = saved
    return types.SimpleNamespace(**modules, wandb=wandb, dir=path)


def namespace(tree: dict) -> types.SimpleNamespace:
    """Nested dicts -> nested SimpleNamespaces (what the reference reads as `config.a.b`)."""
    return types.SimpleNamespace(**{k: namespace(v) if isinstance(v, dict) else v for k, v in tree.items()})


def reference_config(
    *, cache_dir, edit_modules, n_edits, batch_size, num_seq=1, model_path=None, dataset="zsre", editor=None
) -> types.SimpleNamespace:
    """Everything `RLEDIT` / `BaseEditor` / `make_model` read, with the paper's editor defaults.

    `batch_size` is `config.dataset.batch_size` (facts per micro-batch); `editor` overrides
    `config.editor.*` (e.g. rank, n_blocks, lr, meta_lr, reg_coef, and batch_size: the row chunk of
    `predict_param_shifts` / `update_hypernet`, 128 in the reference's config).
    """
    editor_config = dict(
        name="rledit",
        rank=1024,
        n_blocks=4,
        lr=1e-6,
        meta_lr=1e-5,
        loc_coef=0.6,
        max_grad_norm=1.0,
        n_epochs=1,
        batch_size=128,
        token="ans",
        cache_dir=str(cache_dir),
        save_checkpoint=False,
        load_checkpoint=False,
        reg_coef=1e-4,
        full_curve=False,
        time_decay=0.95,
        back_depth=10,
    )
    editor_config.update(editor or {})
    return namespace(
        dict(
            num_seq=num_seq,
            glue_step=0,
            model_device="cpu",
            editor_device="cpu",
            editor=editor_config,
            dataset=dict(name=dataset, n_edits=n_edits, batch_size=batch_size),
            model=dict(
                name="bench",
                name_or_path=str(model_path),
                class_name="AutoModelForCausalLM",
                half=False,
                edit_modules=list(edit_modules),
            ),
        )
    )


def _loader(steps: list[dict]) -> list[dict]:
    """Our steps' micro-batches as the reference's collated tuples."""
    return [{f"{kind}_tuples": step[kind] for kind in ("edit", "equiv", "unrel")} for step in steps]


def compare(r, ours: dict, repeats: int) -> list[str]:
    """Times the reference's `RLEDIT.train` (one sequence) and `sequential_valid` on the run's model and
    batches, alternating each with our program of the same work; returns the table's lines."""
    path = reference_dir()
    if path is None:
        raise ValueError(f"--reference: {missing_reason()}")
    ref = import_reference(path)
    hp, n_steps = r.spec.hparams, r.train_batches[0].edit.input_ids.shape[0]
    editor_fields = ("rank", "n_blocks", "lr", "meta_lr", "loc_coef", "reg_coef", "max_grad_norm", "time_decay")
    editor_fields += ("back_depth", "token")
    params, hypernets, opt_state = jax.device_put((r.params, r.hypernets, r.opt_state))
    train, evals = jax.device_put((r.train_batches[0], r.eval_batches))
    copy = lambda tree: jax.tree.map(lambda x: x.copy(), tree)
    ours_calls = {
        "train": lambda: train_step.train_sequence_and_update(r.spec, params, *copy((hypernets, opt_state)), train),
        "valid": lambda: evaluation.evaluate(r.eval_spec, params, copy(hypernets), evals),
    }
    times = {"reference train": [], "ours train": [], "reference valid": [], "ours valid": []}
    with tempfile.TemporaryDirectory() as tmp:
        models.save_hf(r.spec.model, r.params, os.path.join(tmp, "model"))
        config = reference_config(
            cache_dir=os.path.join(tmp, "cache"),
            edit_modules=r.spec.layout.names,
            n_edits=r.config.data.n_edits,
            batch_size=r.config.data.batch_size,
            num_seq=n_steps,
            model_path=os.path.join(tmp, "model"),
            editor={k: getattr(hp, k) for k in editor_fields},
        )
        editor = ref.rledit.RLEDIT(config, ref.model.make_model(config.model))
        train_loader = _loader(torch_passes.torch_steps(r.train_batches[0]))
        valid_loader = _loader(torch_passes.torch_steps(r.eval_batches))
        for _ in range(repeats + 1):  # The first round warms both sides up and is not counted.
            for name, reference_call in (
                ("train", lambda: editor.train(train_loader)),
                ("valid", lambda: editor.sequential_valid(valid_loader)),
            ):
                editor.reset_model()
                editor.tuples_list = []
                start = time.perf_counter()
                reference_call()
                times[f"reference {name}"].append(time.perf_counter() - start)
                start = time.perf_counter()
                jax.block_until_ready(ours_calls[name]())
                times[f"ours {name}"].append(time.perf_counter() - start)
    med = {k: statistics.median(v[1:]) for k, v in times.items()}
    return [
        f"the PyTorch reference ({REF_ENV}={path}), {repeats} alternating rounds after one warm-up, medians:",
        f"  RLEDIT.train, one sequence of {n_steps} steps: {med['reference train']:.3f} s; ours "
        f"{med['ours train']:.3f} s ({med['reference train'] / med['ours train']:.2f}x faster)",
        f"  sequential_valid, {n_steps} edits + scoring:     {med['reference valid']:.3f} s; ours "
        f"{med['ours valid']:.3f} s ({med['reference valid'] / med['ours valid']:.2f}x faster)",
        f"  (our programs alone, from the table above: train {ours['sequence'].run_s:.3f} s, "
        f"evaluation {ours['evaluation'].run_s:.3f} s)",
    ]
