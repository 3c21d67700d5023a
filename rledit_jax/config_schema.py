"""The config schema: every field the project reads, with the RLEdit defaults of DESIGN.md section 3.

The files in `configs/` start from this one and change what differs; any field can be overridden on the
command line, e.g. `--config.editor.rank=256`.
"""

import ml_collections
from ml_collections import config_dict

# The values of the enumerated fields.
MODEL_DTYPES = ("float32", "bfloat16")
DATASETS = ("zsre", "counterfact", "fever")
TOKEN_MODES = ("ans", "all")
GRADIENT_MODES = ("reference", "unrolled", "unrolled_second_order")


def default_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()

    config.model = ml_collections.ConfigDict()
    # HF model directory (config.json + weights); unset = the built-in tiny random GPT-J below.
    config.model.path = config_dict.placeholder(str)
    # Storage/compute dtype of the LLM weights ("float32" or "bfloat16"); shifts are always float32.
    config.model.dtype = "float32"
    # Edited linears, by HF module name.
    config.model.edit_sites = ("transformer.h.2.mlp.fc_out", "transformer.h.3.mlp.fc_out")
    # The built-in tiny GPT-J (used only when model.path is unset); vocab = the tiny tokenizer's.
    config.model.tiny = ml_collections.ConfigDict()
    config.model.tiny.n_positions = 128
    config.model.tiny.n_embd = 64
    config.model.tiny.n_layer = 4
    config.model.tiny.n_head = 4
    config.model.tiny.rotary_dim = 8
    config.model.tiny.n_inner = 256
    config.model.tiny.seed = 0

    config.data = ml_collections.ConfigDict()
    # "zsre" | "counterfact" | "fever".
    config.data.name = "zsre"
    # Dataset files; unset = synthetic facts made in code (for the tiny default).
    config.data.train_path = config_dict.placeholder(str)
    config.data.eval_path = config_dict.placeholder(str)
    # Tokenizer directory; unset = model.path (or the tiny tokenizer for the tiny model).
    config.data.tokenizer_path = config_dict.placeholder(str)
    # Facts per edit step, and facts per micro-batch within a step.
    config.data.n_edits = 20
    config.data.batch_size = 4
    # JSON file {"train": [[row, ...], ...], "eval": [...]} fixing every step's rows; unset = seeded shuffle.
    config.data.stream_file = config_dict.placeholder(str)
    # Over-long examples: error (False) or left-truncate the prompt and count it (True).
    config.data.truncate = False
    # Skip malformed dataset rows (and count them) instead of stopping at the first.
    config.data.skip_malformed = False

    config.editor = ml_collections.ConfigDict()
    config.editor.rank = 1024
    config.editor.n_blocks = 4
    # Initial per-site learning rate of the predicted update.
    config.editor.lr = 1e-6
    # Adam learning rate of the hypernetwork.
    config.editor.meta_lr = 1e-5
    config.editor.loc_coef = 0.6
    config.editor.reg_coef = 1e-4
    config.editor.max_grad_norm = 1.0
    config.editor.time_decay = 0.95
    # Steps of the window whose losses each step's shift is trained on.
    config.editor.back_depth = 10
    # Training sequences (one Adam step each).
    config.editor.n_epochs = 1
    # Rows captured per example: "ans" (answer tokens) or "all" (every real token).
    config.editor.token = "ans"

    config.train = ml_collections.ConfigDict()
    # Edit steps per training sequence.
    config.train.num_seq = 20
    config.train.seed = 0
    # "reference": gradient only through the current step's shift, accumulated and clipped per step
    # (DESIGN.md section 3); "unrolled": through the whole edit trajectory, keys/value-gradients held
    # constant; "unrolled_second_order": through them too (DESIGN.md section 4).
    config.train.gradient = "reference"

    config.eval = ml_collections.ConfigDict()
    # Edit steps in the lifelong evaluation.
    config.eval.num_seq = 20

    config.init = ml_collections.ConfigDict()
    # A reference (PyTorch) hypernetwork state dict to start from (.pth / .npz / .safetensors).
    config.init.reference_hypernet = config_dict.placeholder(str)

    config.checkpoint = ml_collections.ConfigDict()
    # Save the training state to DIR/checkpoints after every `every` training sequences and after the
    # last; bin/train resumes from the latest checkpoint there (see rledit_jax/checkpoint.py).
    config.checkpoint.every = 1
    # Checkpoints kept on disk (the oldest are deleted).
    config.checkpoint.keep = 2

    # Write DIR/trace.npz with every shift, loss and the final accumulated gradient.
    config.trace = False
    return config
