"""Shipping edits: HF export read back by torch `transformers`, delta export and apply-delta.

Oracles: torch `GPTJForCausalLM` loaded from the exported directory (logits, teacher-forced target
probabilities, greedy `generate`), the base checkpoint's own tensors, and hashlib.
"""

import hashlib
import json
import os

import jax
import ml_collections
import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy
import torch
import transformers

from rledit_jax import data, editing, models
from rledit_jax.editing import export
from rledit_jax.method.packing import KindLengths, Lengths
from rledit_jax.method.sites import make_layout
from rledit_jax.method.spec import HParams, Spec, init_hypernets
from tests import margins
from tests.tiny_hf import make_gptj

SITES = ("transformer.h.1.mlp.fc_out", "transformer.h.0.mlp.fc_in")  # two shapes, two hypernetworks
HF = dict(vocab_size=data.TINY_VOCAB_SIZE, n_positions=64, n_embd=32, n_layer=2, n_head=4, rotary_dim=4)
REQUESTS = [{"prompt": f.edit.prompt, "target_new": f.edit.answer} for f in data.make_synthetic_facts(6, 1)]


HP = dict(rank=8, n_blocks=2, meta_lr=0.0, loc_coef=0.0, reg_coef=0.0, max_grad_norm=1.0, time_decay=1.0)


def hparams(lr):
    return HParams(**HP, lr=lr, back_depth=1, token="ans")


def nets_for(layout, seed=0, lr=0.3):
    hypernets = init_hypernets(jax.random.PRNGKey(seed), layout, hparams(lr))
    rng = np.random.default_rng(seed)
    for net in hypernets.nets.values():
        for block in net["blocks"]:
            block["B"] = 0.05 * rng.standard_normal(block["B"].shape).astype(np.float32)
    return hypernets


def make_session(path, dtype=None):
    llm_config, params = models.load_hf(str(path), param_dtype=dtype)
    spec = Spec(
        model=llm_config,
        layout=make_layout(llm_config, SITES),
        hparams=hparams(0.3),
        lengths=Lengths(edit=KindLengths(answers=1, tokens=1)),  # set per batch by the session
    )
    return editing.EditSession(spec, params, data.TinyTokenizer(), batch_size=2, max_requests=3)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("base") / "gptj"
    make_gptj(path, seed=3, **HF)
    return path


@pytest.fixture(scope="module")
def edited(base_dir):
    session = make_session(base_dir)
    state = session.init_state(nets_for(session.layout), capacity=4)
    for batch in (REQUESTS[:3], REQUESTS[3:]):
        state, _ = session.edit(state, batch)
    return session, state


def read_tensors(directory):
    return safetensors.numpy.load_file(os.path.join(directory, "model.safetensors"))


def torch_model(directory):
    return transformers.AutoModelForCausalLM.from_pretrained(str(directory), torch_dtype=torch.float32).eval()


def test_hf_export_reproduces_edited_logits_in_torch(edited, base_dir, tmp_path):
    session, state = edited
    out = tmp_path / "hf"
    session.export_hf(state, str(out))
    model = torch_model(out)
    ids = np.random.default_rng(0).integers(0, HF["vocab_size"], (2, 40))
    mask = np.ones_like(ids)
    mask[1, 25:] = 0
    ours = np.asarray(models.forward(session.llm_config, session.edited_params(state), ids, mask))
    with torch.no_grad():
        theirs = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()
    valid = mask.astype(bool)
    margins.check(
        "exported model's logits", np.abs(ours[valid] - theirs[valid]).max() / np.abs(ours[valid]).max(), 1e-5
    )
    # The edit is visible: the unedited model's logits differ.
    with torch.no_grad():
        base = torch_model(base_dir)(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()
    assert np.abs(base[valid] - theirs[valid]).max() > 1e-3
    # Untouched tensors are the base checkpoint's, bit for bit; edited ones are base + shift.
    exported, original = read_tensors(out), read_tensors(base_dir)
    assert exported.keys() == original.keys()
    edited_names = {f"{s}.weight" for s in SITES}
    for name, tensor in original.items():
        if name not in edited_names:
            np.testing.assert_array_equal(exported[name], tensor)
        else:
            assert np.abs(exported[name] - tensor).max() > 1e-4


def test_target_probabilities_and_greedy_match_torch(edited, tmp_path):
    session, state = edited
    out = tmp_path / "hf"
    session.export_hf(state, str(out))
    model = torch_model(out)
    tok = session.tokenizer
    probs = session.target_probs(state, REQUESTS)
    prompts = [r["prompt"] for r in REQUESTS]
    continuations = session.generate(state, prompts, max_new_tokens=5)
    for r, p, text in zip(REQUESTS, probs, continuations):
        prompt, target = tok.encode(r["prompt"]), tok.encode(" " + r["target_new"])
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([prompt + target])).logits[0].double(), -1)
            expected = sum(float(logp[len(prompt) - 1 + j, t]) for j, t in enumerate(target))
            generated = model.generate(
                torch.tensor([prompt]),
                attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                max_new_tokens=5,
                do_sample=False,
                pad_token_id=0,
            )
        assert np.log(p) == pytest.approx(expected, abs=1e-4)
        assert text == tok.decode(generated[0, len(prompt) :].tolist())


@pytest.mark.parametrize("dtype", [None, "bfloat16"])
def test_base_plus_delta_equals_full_export(base_dir, tmp_path, dtype):
    session = make_session(base_dir, dtype)
    state, _ = session.edit(session.init_state(nets_for(session.layout), capacity=1), REQUESTS[:3])
    full, delta, applied = tmp_path / "full", tmp_path / "delta", tmp_path / "applied"
    session.export_hf(state, str(full))
    model_config = ml_collections.ConfigDict({"path": str(base_dir), "tiny": {}})
    base = export.base_description(model_config, session.llm_config, session.params, SITES)
    manifest = session.export_delta(state, str(delta), base=base)
    editing.apply_delta(str(delta), str(applied), base=str(base_dir))

    full_tensors, applied_tensors = read_tensors(full), read_tensors(applied)
    assert full_tensors.keys() == applied_tensors.keys()
    for name in full_tensors:
        np.testing.assert_array_equal(applied_tensors[name], full_tensors[name], err_msg=name)
    assert json.loads((full / "config.json").read_text()) == json.loads((applied / "config.json").read_text())

    # The delta file: only the edited matrices, by HF name, in HF layout [out, in], float32.
    deltas = safetensors.numpy.load_file(delta / "delta.safetensors")
    original = read_tensors(base_dir)
    assert sorted(deltas) == sorted(f"{s}.weight" for s in SITES)
    for name, d in deltas.items():
        assert d.dtype == np.float32 and d.shape == original[name].shape
        # The edited weight is (base in the model dtype, widened to float32) + delta, cast back.
        model_dtype = np.float32 if dtype is None else ml_dtypes.bfloat16
        base_w = original[name].astype(model_dtype).astype(np.float32)
        assert full_tensors[name].dtype == model_dtype
        np.testing.assert_array_equal((base_w + d).astype(model_dtype), full_tensors[name])
        assert np.abs(d).max() > 1e-4
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()
    assert manifest["delta_sha256"] == digest(delta / "delta.safetensors")
    assert manifest["base"]["files"]["model.safetensors"] == digest(base_dir / "model.safetensors")
    assert manifest["base"]["model_dtype"] == (dtype or "float32")
    assert json.loads((delta / "manifest.json").read_text()) == manifest


def test_delta_refuses_other_bases_and_damage(edited, base_dir, tmp_path):
    session, state = edited
    delta = tmp_path / "delta"
    model_config = ml_collections.ConfigDict({"path": str(base_dir), "tiny": {}})
    session.export_delta(
        state, str(delta), base=export.base_description(model_config, session.llm_config, session.params, SITES)
    )
    other = tmp_path / "other"
    make_gptj(other, seed=4, **HF)
    with pytest.raises(export.DeltaError, match="differs from the one the delta was made against"):
        editing.apply_delta(str(delta), str(tmp_path / "x"), base=str(other))
    with pytest.raises(export.DeltaError, match="built-in tiny model"):
        editing.apply_delta(str(delta), str(tmp_path / "x"), base="tiny")
    arrays = safetensors.numpy.load_file(delta / "delta.safetensors")
    arrays[f"{SITES[0]}.weight"][0, 0] += 1.0
    safetensors.numpy.save_file(arrays, delta / "delta.safetensors")
    with pytest.raises(export.DeltaError, match="sha256 differs from the manifest"):
        editing.apply_delta(str(delta), str(tmp_path / "x"))
    assert not (tmp_path / "x").exists()


def test_existing_output_and_interrupted_export_leave_nothing_behind(edited, tmp_path, monkeypatch):
    session, state = edited
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="exists; pass --overwrite"):
        session.export_hf(state, str(out))
    assert os.listdir(out) == ["keep.txt"]

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.numpy, "save_file", interrupted)
    fresh = tmp_path / "fresh"
    for write in (
        lambda: session.export_hf(state, str(fresh)),
        lambda: session.export_delta(state, str(fresh), base={}),
        lambda: session.export_hf(state, str(out), overwrite=True),
    ):
        with pytest.raises(KeyboardInterrupt):
            write()
    assert sorted(os.listdir(tmp_path)) == ["out"] and os.listdir(out) == ["keep.txt"]
    monkeypatch.undo()
    session.export_hf(state, str(out), overwrite=True)
    assert "keep.txt" not in os.listdir(out) and "model.safetensors" in os.listdir(out)
    assert sorted(os.listdir(tmp_path)) == ["out"]
