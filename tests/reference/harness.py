"""Reference editors and whole runs on both sides.

Unit level: `fake_editor` builds the reference's `RLEDIT` over a model that is only its edit sites
(`layers.{i}` = nn.Linear(d_in, d_out)), with its nets loaded from ours, and `write_cache` writes the
captured keys / value-gradients as `BaseEditor.cache` does, so `predict_param_shifts` and
`update_hypernet` can be called directly.

End to end: the reference's `RLEDIT.run` and our `train_and_evaluate`, on the same tiny
GPT-J, the same zsRE rows in the same step order, and the same initial hypernetwork.

A `Setup` fixes the rows: `train_rows` / `eval_rows` are shared MEND-format zsRE rows (ours reads them
as they are; the reference reads them converted to its format, `ans` = `alt`), and `train_steps` /
`eval_steps` list each step's row indices (T steps of n_edits rows). The reference's "loaders" are plain
lists of steps collated by its own `ZSREDataset.collate_fn` in that order (its `make_loader` would
shuffle); ours gets the same order through `config.data.stream_file`.

The reference run records, through wrappers on the editor instance:
  shifts        every `predict_param_shifts` result, train steps then eval steps: [{site: [d_in, d_out]}]
  grads         the accumulated clipped gradient when `opt.step` runs: {reference name: array}
  after_train   `net.state_dict()` when `train` returns (post-Adam parameters, normaliser statistics)
  logged        what it passed to `wandb.log` (per step gen_loss / loc_loss, then ES / GS / LS)
Our run returns its metrics, trace.npz (`train/step{t}/{site}/shift`, `eval/...`, `train/grad/...`,
`train/step{t}/gen_loss`) and hypernet.safetensors, both in the reference's naming.
"""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.reference import ours, refkit

SITE = "transformer.h.1.mlp.fc_out"  # The single edit site of the end-to-end runs: kernel [128, 32].
SITES = ("transformer.h.0.mlp.fc_out", SITE)  # Two sites of one shape: one hypernetwork and normaliser.


@dataclasses.dataclass(frozen=True)
class Setup:
    model_dir: Path
    sites: tuple
    n_edits: int
    batch_size: int
    num_seq: int  # Steps of the training sequence and of the evaluation (the reference uses one number).
    editor: dict  # the reference's config.editor fields = our config.hparams fields, the same on both sides.
    train_rows: list
    eval_rows: list
    train_steps: list
    eval_steps: list


def zsre_setup(model_dir, sites, *, n_edits=4, batch_size=2, num_seq=3, seed=0, **editor) -> Setup:
    """T = num_seq steps of n_edits shared zsRE rows each for training, and as many for evaluation."""
    if not refkit.ZSRE_MEND.is_file() or not refkit.TOKENIZERS["gpt2"].is_dir():
        pytest.skip(f"shared zsRE data or GPT-2 tokenizer not found under {refkit.SHARED}")
    rows = [row for row in json.loads(refkit.ZSRE_MEND.read_text()) if row["alt"].strip()]
    n = num_seq * n_edits
    rng = np.random.default_rng(seed)
    steps = lambda: rng.permutation(n).reshape(num_seq, n_edits).tolist()
    hparams = dict(rank=8, n_blocks=2, lr=0.05, meta_lr=1e-3, loc_coef=0.6, reg_coef=0.0, max_grad_norm=1.0)
    hparams.update(time_decay=0.9, back_depth=2, n_epochs=1, token="ans")
    hparams.update(editor)
    return Setup(
        Path(model_dir),
        tuple(sites),
        n_edits,
        batch_size,
        num_seq,
        hparams,
        rows[:n],
        rows[n : 2 * n],
        steps(),
        steps(),
    )


class FakeModel(torch.nn.Module):
    """Just the edit sites, `layers.{i}` = nn.Linear(d_in, d_out) (the reference reads shapes off them)."""

    def __init__(self, shapes):
        super().__init__()
        self.layers = torch.nn.ModuleList([torch.nn.Linear(*shape) for shape in shapes])


def fake_editor(ref, cache_dir, shapes, nets, norms, *, n_edits, batch_size, row_chunk):
    """The reference's RLEDIT over FakeModel(shapes), its nets loaded from our `(nets, norms)` (rank and
    n_blocks read off them).

    `row_chunk` is `config.editor.batch_size`, the rows per hypernetwork call of predict_param_shifts /
    update_hypernet (128 in the paper's config), which pads the last chunk with zero rows."""
    blocks = next(iter(nets.values()))["blocks"]
    config = refkit.reference_config(
        cache_dir=cache_dir,
        edit_modules=[f"layers.{i}" for i in range(len(shapes))],
        n_edits=n_edits,
        batch_size=batch_size,
        editor=dict(batch_size=row_chunk, rank=blocks[0]["A"].shape[1], n_blocks=len(blocks)),
    )
    torch.manual_seed(0)
    editor = ref.rledit.RLEDIT(config, FakeModel(shapes))
    state = ours.to_reference(nets, norms)
    editor.net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
    return editor


def write_cache(editor, module_idx: int, keys, values_grad) -> None:
    """One site's captures, a list of micro-batches of rows, as `{module_idx}_{micro_batch}_keys.pth` and
    `_values_grad.pth` files where `BaseEditor.cache` puts them."""
    path = refkit.cache_path(editor.config)
    path.mkdir(parents=True, exist_ok=True)
    for m, (k, g) in enumerate(zip(keys, values_grad)):
        torch.save(torch.from_numpy(np.asarray(k, np.float32)), path / f"{module_idx}_{m}_keys.pth")
        torch.save(torch.from_numpy(np.asarray(g, np.float32)), path / f"{module_idx}_{m}_values_grad.pth")


def _write_json(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj))
    return path


def _reference_format(rows):
    return [
        {"src": r["src"], "rephrase": r["rephrase"], "ans": r["alt"], "loc": r["loc"], "loc_ans": r["loc_ans"]}
        for r in rows
    ]


def perturb(net: torch.nn.Module, seed: int, scale: float = 0.05) -> None:
    """Moves every hypernetwork parameter but lr / lamda off its (identity) init, so that no gradient is
    trivially zero (at init B = 0, so A's gradient is exactly 0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if not name.endswith(("lr.weight", "lamda.weight")):
                p.add_(scale * torch.randn(p.shape, generator=g))


def run_reference(ref, setup: Setup, workdir: Path, *, seed: int = 0, run: bool = True) -> dict:
    """Builds the reference editor as main.py does (make_model, RLEDIT), perturbs its initial hypernetwork,
    writes it to `workdir/initial.npz` (for ours), and runs `RLEDIT.run` (or with `run=False` only
    `RLEDIT.train`, one sequence) on the collated steps."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = refkit.reference_config(
        cache_dir=workdir / "cache",
        edit_modules=setup.sites,
        n_edits=setup.n_edits,
        batch_size=setup.batch_size,
        num_seq=setup.num_seq,
        model_path=setup.model_dir,
        editor=setup.editor,
    )
    torch.manual_seed(seed)
    editor = ref.rledit.RLEDIT(config, ref.model.make_model(config.model))
    perturb(editor.net, seed + 1)
    initial = {k: v.detach().numpy().copy() for k, v in editor.net.state_dict().items()}
    np.savez(workdir / "initial.npz", **initial)

    record = {"shifts": [], "grads": {}, "after_train": {}, "initial": initial}
    predict, step, train = editor.predict_param_shifts, editor.opt.step, editor.train

    def recording_predict():
        shifts = predict()
        record["shifts"].append({k: v.detach().numpy().copy() for k, v in shifts.items()})
        return shifts

    def recording_step(*args, **kwargs):
        record["grads"] = {n: p.grad.detach().numpy().copy() for n, p in editor.net.named_parameters()}
        return step(*args, **kwargs)

    def recording_train(loader, save=False):
        train(loader, save)
        record["after_train"] = {k: v.detach().numpy().copy() for k, v in editor.net.state_dict().items()}

    editor.predict_param_shifts, editor.opt.step, editor.train = recording_predict, recording_step, recording_train

    tok = ref.base_data.AutoTokenizer.from_pretrained(str(refkit.TOKENIZERS["gpt2"]))
    dataset_config = refkit.namespace(dict(batch_size=setup.batch_size, n_edits=setup.n_edits))

    def loader(rows, steps, name):
        dataset = ref.zsre.ZSREDataset(
            dataset_config, str(_write_json(workdir / name, _reference_format(rows))), tok, "cpu"
        )
        return [dataset.collate_fn([dataset[i] for i in step]) for step in steps]

    train_loader = loader(setup.train_rows, setup.train_steps, "train.json")
    ref.wandb.logged.clear()
    if run:
        editor.run(train_loader, loader(setup.eval_rows, setup.eval_steps, "eval.json"))
    else:
        editor.train(train_loader)
    record["logged"] = list(ref.wandb.logged)
    return record


def run_ours(setup: Setup, workdir: Path, initial: Path) -> dict:
    """`train_and_evaluate` on the real tiny config, pointed at the same model, rows, steps and initial
    hypernetwork (`config.init.reference_hypernet`)."""
    workdir.mkdir(parents=True, exist_ok=True)
    files = {
        "train_path": _write_json(workdir / "train_mend.json", setup.train_rows),
        "eval_path": _write_json(workdir / "eval_mend.json", setup.eval_rows),
        "tokenizer_path": refkit.TOKENIZERS["gpt2"],
        "stream_file": _write_json(workdir / "stream.json", {"train": setup.train_steps, "eval": setup.eval_steps}),
    }
    metrics = ours.train_and_evaluate(
        workdir / "run",
        model_dir=setup.model_dir,
        sites=setup.sites,
        files=files,
        n_edits=setup.n_edits,
        batch_size=setup.batch_size,
        steps=setup.num_seq,
        editor=setup.editor,
        initial=initial,
    )
    with np.load(workdir / "run" / "trace.npz") as archive:
        trace = {k: archive[k] for k in archive.files}
    return {
        "metrics": metrics,
        "trace": trace,
        "hypernet": ours.load_reference_file(workdir / "run" / "hypernet.safetensors"),
    }


def trace_grads(trace: dict) -> dict:
    prefix = "train/grad/"
    return {k[len(prefix) :]: v for k, v in trace.items() if k.startswith(prefix)}


def common_answer_tokens(ref, rows, k=2):
    """The k most frequent GPT-2 tokens of the rows' new answers, and of their locality answers."""
    tok = ref.base_data.AutoTokenizer.from_pretrained(str(refkit.TOKENIZERS["gpt2"]))
    favoured = []
    for key in ("alt", "loc_ans"):
        ids = [i for r in rows for i in tok(" " + r[key], add_special_tokens=False)["input_ids"]]
        values, counts = np.unique(ids, return_counts=True)
        favoured += values[np.argsort(-counts, kind="stable")[:k]].tolist()
    return sorted(set(favoured))


def favoured_model(ref, root: Path) -> Path:
    """The tiny GPT-J with the common answer tokens of the evaluation rows favoured (refkit.make_tiny_gptj):
    ES / GS / LS count the answer tokens among them that the edited model ranks first."""
    rows = zsre_setup(root, [SITE]).eval_rows
    return refkit.make_tiny_gptj(root / "model", favoured=common_answer_tokens(ref, rows))


def both_runs(ref, model_dir: Path, root: Path, sites, **overrides):
    """`(setup, reference record, our results)` of one zsre_setup on both sides, from the same initial nets."""
    setup = zsre_setup(model_dir, sites, **overrides)
    theirs = run_reference(ref, setup, root / "reference")
    return setup, theirs, run_ours(setup, root / "ours", root / "reference" / "initial.npz")
