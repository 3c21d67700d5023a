"""Tiny random HF checkpoints (GPT-J and the Llama-like families) built inside the tests (no downloads),
and the logits comparison the parity tests share."""

import numpy as np
import torch
import transformers

TINY = dict(vocab_size=101, n_positions=256, n_embd=32, n_layer=2, n_head=4, rotary_dim=4, n_inner=None)

# Per Llama-like family: its HF config class, causal-LM class and a tiny config exercising its
# features (grouped-query attention everywhere; positions for >= 300-token batches).
_SMALL = dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
_LLAMA3_ROPE = dict(rope_type="llama3", factor=4.0, low_freq_factor=1.0, high_freq_factor=4.0)
LLAMALIKE = {
    # head_dim 16: wavelengths 6 .. 25000 straddle llama3's bands (16 .. 64 with original 64).
    "llama": (
        transformers.LlamaConfig,
        transformers.LlamaForCausalLM,
        dict(
            _SMALL,
            intermediate_size=96,
            num_hidden_layers=3,
            rms_norm_eps=1e-5,
            rope_parameters=dict(_LLAMA3_ROPE, rope_theta=10000.0, original_max_position_embeddings=64),
        ),
    ),
    # One key/value head, a head_dim that is not hidden / heads, a window shorter than the batch.
    "mistral": (
        transformers.MistralConfig,
        transformers.MistralForCausalLM,
        dict(_SMALL, intermediate_size=80, num_hidden_layers=2, num_key_value_heads=1, head_dim=24, sliding_window=37),
    ),
    # Layers 0 and 2 slide (window 41), layer 1 is full; caps low enough to bend the scores and logits.
    "gemma2": (
        transformers.Gemma2Config,
        transformers.Gemma2ForCausalLM,
        dict(
            _SMALL,
            intermediate_size=96,
            num_hidden_layers=3,
            head_dim=32,
            query_pre_attn_scalar=20,
            sliding_window=41,
            attn_logit_softcapping=2.0,
            final_logit_softcapping=3.0,
            initializer_range=0.1,
        ),
    ),
    "qwen2": (
        transformers.Qwen2Config,
        transformers.Qwen2ForCausalLM,
        dict(
            _SMALL,
            intermediate_size=96,
            num_hidden_layers=2,
            rope_parameters=dict(rope_type="default", rope_theta=1e6),
        ),
    ),
}


def _randomise_and_save(model, path, safe_serialization):
    """Non-trivial norms and biases, so a swapped or dropped tensor shows in the logits; saves."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("ln_1.weight", "ln_f.weight", "norm.weight")):
                p.add_(0.3 * torch.randn_like(p))  # around 1 (LayerNorm, RMSNorm) or 0 (Gemma's 1 + w)
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
    model.save_pretrained(path, safe_serialization=safe_serialization)
    return model


def make_gptj(path, seed=0, safe_serialization=True, **overrides):
    """Saves a random `GPTJForCausalLM` to `path`; returns the float32 torch model (eval mode)."""
    torch.manual_seed(seed)
    config = transformers.GPTJConfig(**{**TINY, **overrides}, bos_token_id=0, eos_token_id=0)
    return _randomise_and_save(transformers.GPTJForCausalLM(config).float().eval(), path, safe_serialization)


def make_llamalike(family, path, seed=0, safe_serialization=True, **overrides):
    """Saves a random tiny model of a Llama-like `family` ("llama", "mistral", "gemma2", "qwen2") to
    `path`; returns the float32 torch model (eval mode, eager attention)."""
    config_class, model_class, fields = LLAMALIKE[family]
    torch.manual_seed(seed)
    config = config_class(**{"vocab_size": 101, **fields, **overrides}, attn_implementation="eager")
    return _randomise_and_save(model_class(config).float().eval(), path, safe_serialization)


def torch_logits(model, ids, mask):
    """A torch causal LM's logits `[B, T, V]` as numpy."""
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits.numpy()


def rel_err(ours, ref, mask):
    """Max abs error over real positions (`mask` 1) over the reference's largest |logit| there."""
    m = mask.numpy().astype(bool)
    return np.abs(np.asarray(ours) - ref)[m].max() / np.abs(ref[m]).max()


def right_padded_batch(lengths, total, vocab, seed=0):
    """`(input_ids, attention_mask)` int64 tensors `[B, total]`, right-padded to `total`."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (len(lengths), total), generator=g)
    mask = torch.zeros(len(lengths), total, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    return ids * mask, mask
