"""HF `config.json` contents of well-known checkpoints, for planning without any files.

Hyperparameters only (no weights): `bin/plan --model=gpt-j-6b` compiles the real programs for these
shapes on any machine.
"""

KNOWN_CONFIGS = {
    "gpt-j-6b": {
        "model_type": "gptj",
        "vocab_size": 50400,
        "n_positions": 2048,
        "n_embd": 4096,
        "n_layer": 28,
        "n_head": 16,
        "rotary_dim": 64,
        "n_inner": None,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": 1e-5,
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        "bos_token_id": 50256,
        "eos_token_id": 50256,
        "tie_word_embeddings": False,
    },
}
