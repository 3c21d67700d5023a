"""The official PyTorch RLEdit, imported from the checkout named by RLEDIT_REF_DIR, and helpers around it.

The import itself (with in-memory stubs of what the reference imports but no test needs) and its
configs are `rledit_jax.benchmark.reference_code`'s, which `bin/bench --reference` uses too; nothing
of the reference is copied here.
"""

import math
from pathlib import Path

import numpy as np

from rledit_jax.benchmark import reference_code
from tests import margins, paths

REF_ENV, REF_COMMIT = reference_code.REF_ENV, reference_code.REF_COMMIT
# The shared data beside the repository; tests skip without it.
SHARED = paths.SHARED
TOKENIZERS = {"gpt2": SHARED / "tokenizers" / "gpt2", "llama3": SHARED / "tokenizers" / "llama3"}
ZSRE_MEND = SHARED / "data" / "zsre" / "zsre_mend_eval_subset.json"
COUNTERFACT_EASYEDIT = SHARED / "data" / "counterfact" / "counterfact_val.json"


def reference_dir() -> Path | None:
    return reference_code.reference_dir()


def skip_reason() -> str:
    return reference_code.missing_reason()


import_reference = reference_code.import_reference
namespace = reference_code.namespace
reference_config = reference_code.reference_config


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
    """Asserts the max relative error of `unit` is <= tol (`tests.margins.check`: printed and recorded)."""
    err = max_rel_err(ours, ref)
    margins.check(f"reference {unit}", err, tol)
    return err
