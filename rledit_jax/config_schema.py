"""The config schema: every field the project reads, with the RLEdit defaults of DESIGN.md section 3.

The files in `configs/` start from this one and change what differs; any field can be overridden on the
command line, e.g. `--config.hparams.rank=256`. `config_validation.py` holds every field's allowed
values; `REFERENCE_NAMES` the PyTorch reference's names for them.
"""

import ml_collections
from ml_collections import config_dict

# The values of the enumerated fields.
MODEL_DTYPES = ("float32", "bfloat16")
# jax_default_matmul_precision values: "highest" / "float32" are full float32 (the parity tests'
# setting), "default" the backend's (TF32 passes on recent NVIDIA GPUs), "bfloat16" one bf16 pass.
MATMUL_PRECISIONS = ("default", "highest", "float32", "high", "tensorfloat32", "bfloat16")
# Datasets, with the per-row score their evaluation uses (DESIGN.md section 3 "Evaluation").
DATASET_METRIC = {"zsre": "token", "counterfact": "counterfact", "fever": "token"}
DATASETS = tuple(DATASET_METRIC)
METRICS = ("token", "counterfact")
TOKEN_MODES = ("ans", "all")
GRADIENT_MODES = ("reference", "unrolled", "unrolled_second_order")

# Our field -> the PyTorch reference's name for it (github zhrli324/RLEdit, config/*.yaml), for users
# of its code. Fields not listed have no counterpart there.
REFERENCE_NAMES = {
    "model.path": "model.name_or_path",
    "model.dtype": "model.half",
    "model.edit_sites": "model.edit_modules",
    "data.name": "dataset.name",
    "data.train_path": "dataset.train_path",
    "data.eval_path": "dataset.valid_path",
    "data.n_edits": "dataset.n_edits",
    "data.batch_size": "dataset.batch_size",
    **{
        f"hparams.{k}": f"editor.{k}"
        for k in (
            "rank",
            "n_blocks",
            "lr",
            "meta_lr",
            "loc_coef",
            "reg_coef",
            "max_grad_norm",
            "time_decay",
            "back_depth",
            "token",
        )
    },
    "train.sequences": "editor.n_epochs",
    "train.steps_per_sequence": "num_seq",
    "eval.steps": "num_seq",
}


def default_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()

    config.model = ml_collections.ConfigDict()
    # HF model directory (config.json + weights); unset = the built-in tiny random model below.
    config.model.path = config_dict.placeholder(str)
    # Storage/compute dtype of the LLM weights ("float32" or "bfloat16"); shifts are always float32.
    config.model.dtype = "float32"
    # Precision of the matmuls (MATMUL_PRECISIONS above), set by the entry points for the whole process;
    # the numbers are checked against torch at "highest".
    config.model.matmul_precision = "default"
    # Edited linears, by HF module name.
    config.model.edit_sites = ("transformer.h.2.mlp.fc_out", "transformer.h.3.mlp.fc_out")
    # The built-in tiny random model (used only when model.path is unset): its architecture, the seed
    # of its weights, and the fields of its HF config.json (checked as the architecture checks a real
    # one); the vocabulary is the tiny tokenizer's.
    config.model.tiny = ml_collections.ConfigDict()
    config.model.tiny.model_type = "gptj"
    config.model.tiny.seed = 0
    config.model.tiny.n_positions = 128
    config.model.tiny.n_embd = 64
    config.model.tiny.n_layer = 4
    config.model.tiny.n_head = 4
    config.model.tiny.rotary_dim = 8
    config.model.tiny.n_inner = 256

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

    # The method's hyperparameters (DESIGN.md section 3).
    config.hparams = ml_collections.ConfigDict()
    config.hparams.rank = 1024
    config.hparams.n_blocks = 4
    # Initial per-site learning rate of the predicted update.
    config.hparams.lr = 1e-6
    # Adam learning rate of the hypernetworks.
    config.hparams.meta_lr = 1e-5
    config.hparams.loc_coef = 0.6
    config.hparams.reg_coef = 1e-4
    config.hparams.max_grad_norm = 1.0
    config.hparams.time_decay = 0.95
    # Steps of the window whose losses each step's shift is trained on.
    config.hparams.back_depth = 10
    # Rows captured per example: "ans" (answer tokens) or "all" (every real token).
    config.hparams.token = "ans"

    config.train = ml_collections.ConfigDict()
    # Training sequences; each is one Adam step of the hypernetworks.
    config.train.sequences = 1
    # Edit steps per training sequence.
    config.train.steps_per_sequence = 20
    config.train.seed = 0
    # "reference": gradient only through the current step's shift, accumulated and clipped per step
    # (DESIGN.md section 3); "unrolled": through the whole edit trajectory, keys/value-gradients held
    # constant; "unrolled_second_order": through them too (DESIGN.md section 4).
    config.train.gradient = "reference"

    config.eval = ml_collections.ConfigDict()
    # Edit steps in the lifelong evaluation.
    config.eval.steps = 20

    config.init = ml_collections.ConfigDict()
    # A reference (PyTorch) hypernetwork state dict to start from (.pth / .npz / .safetensors).
    config.init.reference_hypernet = config_dict.placeholder(str)

    config.checkpoint = ml_collections.ConfigDict()
    # Save the training state to DIR/checkpoints after every `every` training sequences and after the
    # last; bin/train resumes from the latest checkpoint there (see rledit_jax/checkpoint.py).
    config.checkpoint.every = 1
    # Checkpoints kept on disk (the oldest are deleted).
    config.checkpoint.keep = 2

    # The device mesh (rledit_jax/partitioning): `data` splits a step's packed tokens, `model` the LLM's
    # weights (tensor parallelism); data x model must be the run's devices, on all hosts together.
    config.mesh = ml_collections.ConfigDict()
    config.mesh.data = 1
    config.mesh.model = 1

    # Write DIR/trace.npz with every shift, loss and the final accumulated gradient.
    config.trace = False
    return config
