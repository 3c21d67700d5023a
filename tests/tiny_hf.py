"""Tiny random HF GPT-J checkpoints built inside the tests (no downloads)."""

import torch
import transformers

TINY = dict(vocab_size=101, n_positions=256, n_embd=32, n_layer=2, n_head=4, rotary_dim=4, n_inner=None)


def make_gptj(path, seed=0, safe_serialization=True, **overrides):
    """Saves a random `GPTJForCausalLM` to `path`; returns the float32 torch model (eval mode)."""
    torch.manual_seed(seed)
    config = transformers.GPTJConfig(**{**TINY, **overrides}, bos_token_id=0, eos_token_id=0)
    model = transformers.GPTJForCausalLM(config).float().eval()
    # Non-trivial LayerNorms and biases, so a swapped or dropped tensor shows in the logits.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("ln_1.weight", "ln_f.weight")):
                p.copy_(1 + 0.3 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
    model.save_pretrained(path, safe_serialization=safe_serialization)
    return model


def right_padded_batch(lengths, total, vocab, seed=0):
    """`(input_ids, attention_mask)` int64 tensors `[B, total]`, right-padded to `total`."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (len(lengths), total), generator=g)
    mask = torch.zeros(len(lengths), total, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    return ids * mask, mask
