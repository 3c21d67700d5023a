"""The official PyTorch RLEdit, imported from the checkout named by RLEDIT_REF_DIR, and helpers around it.

Nothing of the reference is copied here: its modules (`nets`, `util`, `data.*`, `editor.*`, `model`) are
imported from RLEDIT_REF_DIR at test time. What it imports but no unit test needs is stubbed in
`sys.modules` before that: `wandb` (`log` records its dicts in `wandb.logged`), `glue_eval` /
`glue_eval.glue_eval` (`GLUEEval`), `omegaconf` (`DictConfig`, `OmegaConf`) and `hydra`.

Reference configs are nested `types.SimpleNamespace`s with the attributes its code reads
(`reference_config` lists them); devices are "cpu".
"""

import importlib
import math
import os
import sys
import types
from pathlib import Path

import numpy as np

from tests import paths

REF_ENV = "RLEDIT_REF_DIR"
REF_COMMIT = "c6576a1e8e8a122c54d61ec5580ec7397e740a42"
# The shared data beside the repository; tests skip without it.
SHARED = paths.SHARED
TOKENIZERS = {"gpt2": SHARED / "tokenizers" / "gpt2", "llama3": SHARED / "tokenizers" / "llama3"}
ZSRE_MEND = SHARED / "data" / "zsre" / "zsre_mend_eval_subset.json"
COUNTERFACT_EASYEDIT = SHARED / "data" / "counterfact" / "counterfact_val.json"


def reference_dir() -> Path | None:
    value = os.environ.get(REF_ENV)
    return Path(value) if value and Path(value).is_dir() else None


def skip_reason() -> str:
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
            raise RuntimeError("GLUE evaluation is stubbed out in the reference tier (set glue_step=0)")

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
                name="tiny",
                name_or_path=str(model_path),
                class_name="AutoModelForCausalLM",
                half=False,
                edit_modules=list(edit_modules),
            ),
        )
    )


def cache_path(config) -> Path:
    """The directory `BaseEditor.cache` writes `{module_idx}_{micro_batch}_keys.pth` files to."""
    return Path(config.editor.cache_dir) / f"{config.model.name}_{config.editor.name}_{config.dataset.n_edits}"


def n_micro_batches(config) -> int:
    return math.ceil(config.dataset.n_edits / config.dataset.batch_size)


def rome_rows(easyedit_rows):
    """ROME-format CounterFact rows (what the reference's COUNTERFACTDataset reads) from EasyEdit rows: the
    subject cut out of the prompt as "{}", two paraphrases and two neighbours per row (the row's own and
    the next row's); one row fewer than given."""
    return [
        {
            "case_id": row["case_id"],
            "requested_rewrite": {
                "prompt": row["prompt"].replace(row["subject"], "{}", 1),
                "subject": row["subject"],
                "target_new": {"str": row["target_new"]},
                "target_true": {"str": row["ground_truth"]},
            },
            "paraphrase_prompts": [row["rephrase_prompt"], nxt["rephrase_prompt"]],
            "neighborhood_prompts": [row["locality_prompt"], nxt["locality_prompt"]],
        }
        for row, nxt in zip(easyedit_rows, easyedit_rows[1:])
    ]


GPT2_VOCAB = 50257


def make_tiny_gptj(path, seed: int = 0, vocab_size: int = GPT2_VOCAB, favoured=(), favour: float = 30.0):
    """A random float32 GPT-J (n_embd 32, 2 layers, fc_out 128 -> 32) saved to `path` for both sides
    (tests/tiny_hf.py); the GPT-2 tokenizer's vocabulary by default, so its ids index the embedding.

    `favoured` token ids get the lm_head bias `favour` (the others keep ~0.1) and their lm_head rows scaled
    by `favour`: the argmax is then one of them, chosen by the hidden state, so token accuracies are neither
    all 0 nor fixed, and edits can change them.
    """
    import torch

    from tests.tiny_hf import make_gptj

    model = make_gptj(str(path), seed=seed, vocab_size=vocab_size)
    if favoured:
        with torch.no_grad():
            model.lm_head.bias[list(favoured)] = favour
            model.lm_head.weight[list(favoured)] *= favour
        model.save_pretrained(str(path))
    return Path(path)


def max_rel_err(ours, ref) -> float:
    """max |ours - ref| / max |ref| (both as float64)."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, f"shapes differ: {ours.shape} vs {ref.shape}"
    return float(np.abs(ours - ref).max() / max(np.abs(ref).max(), 1e-30))


def check(unit: str, ours, ref, tol: float) -> float:
    """Prints the measured max relative error of `unit` (visible with -s) and asserts it is <= tol."""
    err = max_rel_err(ours, ref)
    print(f"reference {unit}: {err:.2e}")
    assert err <= tol, f"{unit}: max relative error {err:.2e} > {tol:.0e}"
    return err
