"""The `transformers` torch passes a reference step runs, timed on the same batches: the ratios' denominators.

The PyTorch reference (DESIGN.md section 3) runs, per micro-batch, each padded to its own longest row
(its `collate_fn`), with gradients only for the edit sites' weights:

  full-depth training step  edit fwd+bwd, then per window step (back_depth of them): equiv fwd+bwd,
                            unrel fwd (no grad), unrel fwd+bwd
  edit step                 edit fwd+bwd
  final scoring             a forward of every kind's batches (edit, equiv, unrel) of every eval step

`TorchPasses` builds the HF torch model from our params (through `models.save_hf`) and times those
passes; torch is a test / benchmark dependency only, imported here.
"""

import os
import statistics
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
import transformers

from rledit_jax import models
from rledit_jax.data.tokenization import IGNORE


def micro_batches(kind_step) -> list[dict[str, torch.Tensor]]:
    """One step of a kind batch (`[M, B, L]`) as the reference's micro-batches: the real rows of each,
    cut to its own longest row."""
    out = []
    for m in range(kind_step.input_ids.shape[0]):
        real = np.asarray(kind_step.fact_index[m]) >= 0
        if not real.any():
            continue
        mask = np.asarray(kind_step.attention_mask[m])[real]
        width = int(mask.sum(-1).max())
        fields = ("input_ids", "attention_mask", "labels")
        out.append(
            {f: torch.as_tensor(np.asarray(getattr(kind_step, f)[m], np.int64)[real][:, :width]) for f in fields}
        )
    return out


def padded(kind_step) -> dict[str, torch.Tensor]:
    """One step's kind batch `[M, B, L]` as a single right-padded batch `[M * B, L]` (padding rows included)."""
    l = kind_step.input_ids.shape[-1]
    fields = ("input_ids", "attention_mask", "labels")
    return {f: torch.as_tensor(np.asarray(getattr(kind_step, f), np.int64).reshape(-1, l)) for f in fields}


class TorchPasses:
    """The HF torch model of `(spec.model, params)` with gradients on the edit sites only."""

    def __init__(self, spec, params):
        torch.set_num_threads(os.cpu_count() or 1)
        with tempfile.TemporaryDirectory() as tmp:
            models.save_hf(spec.model, params, os.path.join(tmp, "model"))
            self.model = transformers.AutoModelForCausalLM.from_pretrained(
                os.path.join(tmp, "model"), dtype=torch.float32, attn_implementation="eager"
            ).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.sites = [self.model.get_submodule(s).weight for s in spec.layout.names]
        for w in self.sites:
            w.requires_grad_(True)

    def _logits(self, mb):
        return self.model(input_ids=mb["input_ids"], attention_mask=mb["attention_mask"], use_cache=False).logits

    def forward_backward(self, mbs) -> None:
        for mb in mbs:
            labels = mb["labels"]
            answer = labels != IGNORE
            F.cross_entropy(self._logits(mb)[answer], labels[answer]).backward()
        for w in self.sites:
            w.grad = None

    def forward(self, mbs) -> None:
        with torch.no_grad():
            for mb in mbs:
                self._logits(mb)

    def train_step(self, steps: list[dict], t: int, depth: int) -> None:
        """The passes of training step t (its window: steps t, t-1, ..., max(t-depth+1, 0))."""
        self.forward_backward(steps[t]["edit"])
        for s in range(t, max(t - depth, -1), -1):
            self.forward_backward(steps[s]["equiv"])
            self.forward(steps[s]["unrel"])
            self.forward_backward(steps[s]["unrel"])


def torch_steps(batches) -> list[dict]:
    """`StepBatches` `[T, ...]` -> per step `{kind: micro_batches}`."""
    n_steps = batches.edit.input_ids.shape[0]
    return [
        {kind: micro_batches(getattr(batches.step(t), kind)) for kind in ("edit", "equiv", "unrel")}
        for t in range(n_steps)
    ]


def median_seconds(fn, repeats: int) -> float:
    """Median wall time of `fn()` over `repeats` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
