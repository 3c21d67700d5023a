"""The run builder: from a config to everything the compiled programs take.

    run = setup(config)                  # bin/train and bin/bench
    run.spec, run.eval_spec              # the static specs of the training and evaluation programs
    run.params                           # the frozen LLM
    run.hypernets, run.opt_state         # the training state to start from
    run.train_batches[e], run.eval_batches

`setup` checks every input (the config, the model's config and edit sites, the data files, the
tokenisation, the mesh) before it loads any weights. Its pieces serve the other entry points:
`load_model` and `make_spec` (the edit library, bin/plan from shapes alone) and `initial_hypernets`.

Devices: the programs run over the mesh of `config.mesh` (`spec.mesh`, `rledit_jax.partitioning`):
the LLM's weights are loaded straight onto their shards, the hypernetworks and the optimiser state
are whole on every device.

Streams: a training sequence is `train.steps_per_sequence` steps of `data.n_edits` fact indices, and
there are `train.sequences` of them; the evaluation is `eval.steps` steps. They come from
`data.stream_file`, or from a seeded shuffle (sequence e with seed `train.seed + e`).
"""

import dataclasses
from typing import Any

import jax
import ml_collections
from absl import logging

from rledit_jax import config_schema, config_validation, data, models
from rledit_jax.baselines import methods
from rledit_jax.llm_config import model_config_of, tiny_model_config
from rledit_jax.method import reference_io
from rledit_jax.method.packing import Lengths
from rledit_jax.method.sites import check_hypernets, make_layout
from rledit_jax.method.spec import Hypernets, Spec, init_hypernets
from rledit_jax.method.train_step import make_optimizer
from rledit_jax.partitioning import placement, rules
from rledit_jax.partitioning.mesh import make_mesh


@dataclasses.dataclass(frozen=True, eq=False)
class Run:
    config: ml_collections.ConfigDict
    spec: Spec  # the training program's (packed sizes of the training batches)
    eval_spec: Spec  # the evaluation program's (packed sizes of the eval batches)
    params: dict
    hypernets: Hypernets
    opt_state: Any
    tokenizer: data.Tokenizer
    train_facts: list[data.Fact]
    eval_facts: list[data.Fact]
    train_sequences: list[list[list[int]]]  # per sequence, per step: fact indices into train_facts
    train_batches: list[data.StepBatches]  # one per sequence, all of one shape
    eval_batches: data.StepBatches
    n_skipped: int  # malformed dataset rows skipped (data.skip_malformed)

    @property
    def n_truncated(self) -> int:
        return self.train_batches[0].n_truncated + self.eval_batches.n_truncated


def load_model(model_config, mesh=None) -> tuple[models.ModelConfig, dict]:
    """`(llm_config, params)` of `config.model`: its HF directory, or the tiny random model; on `mesh`
    split by the partition rules (`partitioning.rules`), else on the default device."""
    shardings = None if mesh is None else rules.param_shardings(mesh, model_config_of(model_config))
    if model_config.path:
        return models.load_hf(model_config.path, param_dtype=model_config.dtype, shardings=shardings)
    llm_config = tiny_model_config(model_config)
    params = models.init_params(llm_config, jax.random.PRNGKey(model_config.tiny.seed))
    return llm_config, params if mesh is None else placement.place(params, shardings)


def load_tokenizer(config) -> data.Tokenizer:
    """`data.tokenizer_path`, else the model directory's tokenizer, else the tiny tokenizer."""
    return data.load_tokenizer(config.data.tokenizer_path or config.model.path)


def make_spec(config, llm_config, lengths: Lengths, mesh=None) -> Spec:
    """The spec of `config`'s programs for a model and the packed sizes of their batches, on `mesh` (with
    the hyperparameters and shift of `config.method`, `baselines.methods`)."""
    return Spec(
        model=llm_config,
        layout=make_layout(llm_config, config.model.edit_sites),
        hparams=methods.hparams_of(config),
        lengths=lengths,
        gradient=config.train.gradient,
        metric=config_schema.DATASET_METRIC[config.data.name],
        keep_factors=config.trace,
        shift=methods.shift_of(config),
        mesh=mesh,
    )


def initial_hypernets(config, spec: Spec) -> Hypernets:
    """Fresh hypernetworks (seed `train.seed`), or those of `init.reference_hypernet`, checked."""
    if not config.init.reference_hypernet:
        return init_hypernets(jax.random.PRNGKey(config.train.seed), spec.layout, spec.hparams)
    path = config.init.reference_hypernet
    hypernets = reference_io.from_reference(reference_io.load_reference_file(path))
    check_hypernets(spec.layout, hypernets, source=path)
    return hypernets


def load_splits(config):
    """`(train facts, eval facts, n malformed rows skipped)`; unset paths give disjoint synthetic facts.

    Synthetic eval facts come first, so they do not change with the training's length (a run resumed
    with more `train.sequences` evaluates the same facts)."""
    n_train = config.train.sequences * config.train.steps_per_sequence * config.data.n_edits
    n_eval = config.eval.steps * config.data.n_edits
    seed = config.train.seed
    if not config.data.train_path:
        facts = data.make_synthetic_facts(min(data.MAX_SYNTHETIC_FACTS, n_train + n_eval), seed)
        return facts[n_eval:], facts[:n_eval], 0
    loaded = [
        data.load_facts(config.data.name, p, skip_malformed=config.data.skip_malformed, seed=seed)
        for p in (config.data.train_path, config.data.eval_path)
    ]
    for split in loaded:
        for message in split.skipped:
            logging.warning("skipped malformed row: %s", message)
    return loaded[0].facts, loaded[1].facts, sum(len(s.skipped) for s in loaded)


def edit_streams(config, n_train: int, n_eval: int):
    """`(train sequences, eval steps)`: `train.sequences` lists of steps, and the eval steps."""
    n_edits, steps, sequences = config.data.n_edits, config.train.steps_per_sequence, config.train.sequences
    if config.data.stream_file:
        stream = data.load_stream_file(config.data.stream_file)
        train, evals = stream["train"], stream["eval"]
        data.validate_stream(train, n_train, "train stream")
        data.validate_stream(evals, n_eval, "eval stream")
        if len(train) % steps or len(train[0]) != n_edits or len(evals[0]) != n_edits:
            raise ValueError(
                f"stream file {config.data.stream_file}: train must hold a multiple of train.steps_per_sequence="
                f"{steps} steps and every step data.n_edits={n_edits} rows"
            )
        given = [train[i : i + steps] for i in range(0, len(train), steps)]
        return [given[e % len(given)] for e in range(sequences)], evals[: config.eval.steps]
    seed = config.train.seed
    train = [data.draw_stream(n_train, steps, n_edits, seed + e) for e in range(sequences)]
    return train, data.draw_stream(n_eval, config.eval.steps, n_edits, seed + 10_000)


def step_batches(config, tokenizer, facts, steps, max_length: int) -> data.StepBatches:
    return data.build_step_batches(
        tokenizer,
        facts,
        steps,
        batch_size=config.data.batch_size,
        max_length=max_length,
        truncate=config.data.truncate,
    )


def setup(config) -> Run:
    """Builds the run of `config` (see the module docstring); raises on bad input before any weights load."""
    config_validation.validate(config)
    mesh = make_mesh(config.mesh)
    train_facts, eval_facts, n_skipped = load_splits(config)
    llm_config = model_config_of(config.model)
    tokenizer = load_tokenizer(config)
    if tokenizer.vocab_size > llm_config.vocab_size:
        raise ValueError(
            f"the tokenizer has {tokenizer.vocab_size} tokens, more than the model's vocabulary of "
            f"{llm_config.vocab_size} (set data.tokenizer_path to the model's own tokenizer)"
        )
    train_sequences, eval_steps = edit_streams(config, len(train_facts), len(eval_facts))
    # All sequences are built together so every one has the same shapes (one compilation).
    all_train = step_batches(config, tokenizer, train_facts, sum(train_sequences, []), llm_config.max_length)
    steps = config.train.steps_per_sequence
    train_batches = [
        jax.tree.map(lambda x, e=e: x[e * steps : (e + 1) * steps], all_train) for e in range(len(train_sequences))
    ]
    eval_batches = step_batches(config, tokenizer, eval_facts, eval_steps, llm_config.max_length)
    spec = make_spec(config, llm_config, Lengths.of(all_train), mesh)
    hypernets = initial_hypernets(config, spec)
    opt_state = make_optimizer(spec.hparams).init(hypernets.nets)
    _, params = load_model(config.model, mesh)
    return Run(
        config=config,
        spec=spec,
        eval_spec=dataclasses.replace(spec, lengths=Lengths.of(eval_batches), curve_every=config.eval.curve_every),
        params=params,
        hypernets=placement.place(hypernets, placement.replicated(mesh, hypernets)),
        opt_state=placement.place(opt_state, placement.replicated(mesh, opt_state)),
        tokenizer=tokenizer,
        train_facts=train_facts,
        eval_facts=eval_facts,
        train_sequences=train_sequences,
        train_batches=train_batches,
        eval_batches=eval_batches,
        n_skipped=n_skipped,
    )


def with_config(r: Run, config) -> Run:
    """`r` under another `config` that differs in its method only (`config.method` and the fields
    only methods read): the same model, facts and batches, with that method's specs, fresh
    hypernetworks and Adam state. bin/compare runs every method on one run this way."""
    config_validation.validate(config)
    spec = make_spec(config, r.spec.model, r.spec.lengths, r.spec.mesh)
    hypernets = initial_hypernets(config, spec)
    opt_state = make_optimizer(spec.hparams).init(hypernets.nets)
    return dataclasses.replace(
        r,
        config=config,
        spec=spec,
        eval_spec=dataclasses.replace(spec, lengths=r.eval_spec.lengths),
        hypernets=placement.place(hypernets, placement.replicated(spec.mesh, hypernets)),
        opt_state=placement.place(opt_state, placement.replicated(spec.mesh, opt_state)),
    )
