"""Keys and value-gradients from the probe vs torch forward/backward hooks, on the Llama-like MLPs.

Oracle: `tests/test_probes.torch_capture` (hooks on the HF `nn.Linear` modules) on the tiny torch
models of `tests/tiny_hf.py`; the loss is the mean CE over answer positions in both.
"""

import numpy as np
import pytest
import torch

from rledit_jax import probes
from rledit_jax.models import load_hf
from tests import margins
from tests.test_probes import torch_capture
from tests.tiny_hf import LLAMALIKE, make_llamalike, right_padded_batch


@pytest.mark.parametrize("family", sorted(LLAMALIKE))
def test_keys_and_value_grads_match_torch_hooks(tmp_path, family):
    tm = make_llamalike(family, tmp_path / "m", seed=11)
    config, params = load_hf(str(tmp_path / "m"))
    last = config.n_layers - 1
    sites = tuple(f"model.layers.{i}.mlp.{p}" for i in (0, last) for p in ("gate_proj", "up_proj", "down_proj"))
    sites += (f"model.layers.{last}.self_attn.q_proj",)  # Qwen2: after its bias
    # 70 tokens: past Mistral's and Gemma-2's windows (37, 41).
    ids, mask = right_padded_batch([70, 52, 9], 70, config.vocab_size, seed=12)
    labels = torch.full_like(ids, -100)
    for row, (start, end) in enumerate([(60, 70), (45, 52), (4, 9)]):  # answers at the end of each row
        labels[row, start:end] = ids[row, start:end]
    ref_loss, ref = torch_capture(tm, sites, ids, mask, labels)

    batch = {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "labels": labels.numpy()}
    loss, ours = probes.capture_with_loss(config, params, sites, batch, "ans")
    margins.check(f"{family} capture loss", abs(float(loss) - ref_loss) / abs(ref_loss), 1e-6)
    selected = (labels != -100).flatten().numpy()
    for site in sites:
        k_ref, g_ref = ref[site]
        k, g = np.asarray(ours[site].keys), np.asarray(ours[site].value_grads)
        margins.check(
            f"parity {family} {site} keys", np.abs(k[selected] - k_ref[selected]).max() / np.abs(k_ref).max(), 1e-5
        )
        margins.check(
            f"parity {family} {site} value-grads",
            np.abs(g[selected] - g_ref[selected]).max() / np.abs(g_ref).max(),
            1e-5,
        )
        assert np.abs(g_ref[selected]).max() > 0
