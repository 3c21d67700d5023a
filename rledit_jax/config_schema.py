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
# The general-ability probe sets (`rledit_jax/general/tasks.py` defines them, in this order).
GENERAL_TASKS = ("sst2", "mrpc", "cola", "rte", "nli", "mmlu", "sentiment_analysis", "dialogue")
# When bin/train runs the lifelong evaluation (train.schedule).
SCHEDULES = ("evaluate_each_sequence", "evaluate_at_end")
# The methods compared (README "Methods compared"; `rledit_jax/baselines/methods.py` says what each is).
METHODS = ("rledit", "malmen", "mend", "malmen_retrain", "mend_retrain", "ridge", "ft")
TRAIN_SCHEMES = ("sequence", "per_batch")

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
    "method": "editor.name",
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
    # "evaluate_each_sequence": the reference's `RLEDIT.run` (train one sequence, then the whole lifelong
    # evaluation, whose normaliser updates carry into the next sequence; every evaluation is logged and
    # the last one is the headline); "evaluate_at_end": train every sequence, then evaluate once.
    config.train.schedule = "evaluate_each_sequence"

    config.eval = ml_collections.ConfigDict()
    # Edit steps in the lifelong evaluation.
    config.eval.steps = 20
    # A retention-curve point every `curve_every` steps and at the last (curve.jsonl); 0 = no curve.
    config.eval.curve_every = 5
    # Greedy decoding of every eval fact's answer after the last evaluation: exact match and token F1.
    config.eval.generative = True
    # Directory of the general-ability probe sets (SST-2, MMLU, ...; the reference's glue_eval); unset =
    # no general-ability scores. Scored before editing and, in the last evaluation, every
    # `general_every` steps (0 = at its end only), on `general_n` examples per task.
    config.eval.general_path = config_dict.placeholder(str)
    config.eval.general_every = 0
    config.eval.general_n = 100
    # The probe sets scored (GENERAL_TASKS; RLEdit's own six are sst2 mrpc cola rte nli mmlu).
    config.eval.general_tasks = GENERAL_TASKS

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

    # The methods compared (bin/compare; README "Methods compared"). The method: METHODS above.
    config.method = "rledit"
    # How a hypernetwork method is trained: "sequence" (RLEdit's sequences, one Adam step each) or
    # "per_batch" (MEND's and MALMEN's: every training batch edited on the unedited model, one Adam step
    # per batch); unset = the method's own (rledit: sequence; the others: per_batch).
    config.train.scheme = config_dict.placeholder(str)
    config.baselines = ml_collections.ConfigDict()
    # MEND's hyperparameters (mend, mend_retrain) where they differ from `hparams`: the reference's
    # config/editor/mend.yaml. MALMEN's are RLEdit's (`hparams`).
    config.baselines.mend = ml_collections.ConfigDict()
    config.baselines.mend.rank = 1920
    config.baselines.mend.n_blocks = 2
    config.baselines.mend.token = "all"
    config.baselines.mend.loc_coef = 1.0
    config.baselines.mend.reg_coef = 1e-2
    # malmen_retrain, mend_retrain: a fresh network is trained on the edited model before every
    # `every`-th eval step (the reference: 1 in run_sequential_retrain, 3 in run_sequential_retrain_full).
    config.baselines.retrain = ml_collections.ConfigDict()
    config.baselines.retrain.every = 1
    # ridge: the step size of its update (in place of hparams.lr, which RLEdit's training learns).
    config.baselines.ridge = ml_collections.ConfigDict()
    config.baselines.ridge.lr = 1e-6
    # ft: Adam steps on the edit sites' kernels per edit batch, and their learning rate.
    config.baselines.ft = ml_collections.ConfigDict()
    config.baselines.ft.steps = 10
    config.baselines.ft.lr = 1e-4
    return config


def paper_config(model_path: str, edit_sites) -> ml_collections.ConfigDict:
    """The paper's zsRE setting on an HF model directory and its edit sites: a bfloat16 model, 20 edits
    per step in micro-batches of 4, 400 steps. The configs of the paper's models start from it."""
    config = default_config()
    config.model.path = model_path
    config.model.dtype = "bfloat16"
    config.model.edit_sites = tuple(edit_sites)
    config.data.name = "zsre"
    # The shared zsRE files hold a few rows with an empty new answer: skip and count them.
    config.data.skip_malformed = True
    config.data.n_edits = 20
    config.data.batch_size = 4
    config.train.steps_per_sequence = 400
    config.eval.steps = 400
    return config
