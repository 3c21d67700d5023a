"""Keys and value-gradients from the probe vs torch forward/backward hooks on the same linears."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rledit_jax import models, probes
from tests import margins
from tests.tiny_hf import make_gptj, right_padded_batch

SITES = ("transformer.h.0.mlp.fc_out", "transformer.h.1.mlp.fc_out", "transformer.h.1.attn.q_proj")


def torch_capture(model, sites, ids, mask, labels):
    keys, outputs, handles = {}, {}, []
    for site in sites:

        def hook(module, inputs, output, site=site):
            keys[site] = inputs[0].detach()
            output.retain_grad()
            outputs[site] = output

        handles.append(model.get_submodule(site).register_forward_hook(hook))
    logits = model(input_ids=ids, attention_mask=mask).logits
    loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
    loss.backward()
    for h in handles:
        h.remove()
    return loss.item(), {s: (keys[s].flatten(0, 1).numpy(), outputs[s].grad.flatten(0, 1).numpy()) for s in sites}


@pytest.mark.parametrize("token", ["ans", "all"])
def test_keys_and_value_grads_match_torch_hooks(tmp_path, token):
    tm = make_gptj(tmp_path / "m", seed=11)
    config, params = models.load_hf(str(tmp_path / "m"))
    ids, mask = right_padded_batch([12, 9, 5], 12, config.vocab_size, seed=12)
    labels = torch.full_like(ids, -100)
    for row, (start, end) in enumerate([(6, 12), (7, 9), (2, 5)]):  # answers at the end of each row
        labels[row, start:end] = ids[row, start:end]
    ref_loss, ref = torch_capture(tm, SITES, ids, mask, labels)

    batch = {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "labels": labels.numpy()}
    loss, ours = probes.capture_with_loss(config, params, SITES, batch, token)
    jitted = probes.capture(config, params, SITES, batch, token)
    margins.check(f"capture loss ({token})", abs(float(loss) - ref_loss) / abs(ref_loss), 1e-6)

    selected = (labels != -100) if token == "ans" else (mask == 1)
    selected = selected.flatten().numpy()
    for site in SITES:
        k_ref, g_ref = ref[site]
        for got in (ours[site], jitted[site]):
            np.testing.assert_array_equal(np.asarray(got.row_mask), selected)
            k, g = np.asarray(got.keys), np.asarray(got.value_grads)
            margins.check(
                f"{site} keys ({token})", np.abs(k[selected] - k_ref[selected]).max() / np.abs(k_ref).max(), 1e-5
            )
            margins.check(
                f"{site} value-grads ({token})",
                np.abs(g[selected] - g_ref[selected]).max() / np.abs(g_ref).max(),
                1e-5,
            )
            assert not k[~selected].any() and not g[~selected].any()
        # `all` rows include prompt positions; below the last layer, attention carries the loss's
        # gradient to them.
        if token == "all" and site == SITES[0]:
            prompt_rows = selected & (labels.flatten() == -100).numpy()
            assert np.abs(g_ref[prompt_rows]).max() > 0


def test_zero_probe_leaves_logits_unchanged(tmp_path):
    make_gptj(tmp_path / "m", seed=13)
    config, params = models.load_hf(str(tmp_path / "m"))
    ids, mask = right_padded_batch([8, 6], 8, config.vocab_size, seed=14)
    zeros = {s: np.zeros((2, 8, models.site_shapes(config)[s][1]), np.float32) for s in SITES}
    logits, keys = models.forward_with_probes(config, params, zeros, ids.numpy(), mask.numpy())
    plain = models.forward(config, params, ids.numpy(), mask.numpy())
    # Same math; only XLA's fusion of the eager and jitted programs differs.
    np.testing.assert_allclose(np.asarray(logits), np.asarray(plain), rtol=0, atol=1e-6)
    assert keys["transformer.h.0.mlp.fc_out"].shape == (2, 8, config.n_inner)
