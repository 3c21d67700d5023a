"""`train_and_evaluate(config, workdir)`: the whole `bin/train` job as a library call.

Loads the LLM (an HF directory, or the built-in tiny random GPT-J), the facts (dataset files, or
synthetic ones) and the edit streams; trains the hypernetworks for `editor.n_epochs` sequences of
`train.num_seq` steps (one compiled program per sequence); then runs the lifelong evaluation over
`eval.num_seq` steps. Writes into `workdir`:

  config.json          the resolved config
  train_metrics.jsonl  one line per training step: epoch, step, loss, gen_loss, loc_loss, reg, norms
  metrics.json         ES / GS / LS of the final edited model, plus run facts
  hypernet.safetensors the trained hypernetworks and normalisers, in the reference's naming
  trace.npz            (with `trace=True`) shifts, losses and the final accumulated gradient
  checkpoints/         training state after every `checkpoint.every` sequences (see checkpoint.py);
                       a run finds the latest one there and continues from it
"""

import dataclasses
import json
import os
import tempfile
import time

import jax
import numpy as np
import tqdm
from absl import logging

from rledit_jax import checkpoint, config_validation, data, models
from rledit_jax.editor import epoch, evaluation, reference_io, training
from rledit_jax.editor.sites import check_hypernets, make_layout

DATASET_METRIC = {"zsre": "token", "fever": "token", "counterfact": "counterfact"}


def llm_config_of(model_config):
    """The LLM config of `config.model`: `path`'s config.json (no weights read), or the tiny model's."""
    if model_config.path:
        _, llm_config = models.read_hf_config(model_config.path)
        return dataclasses.replace(llm_config, param_dtype=model_config.dtype, dtype=model_config.dtype)
    tiny = model_config.tiny
    return models.GPTJConfig(
        vocab_size=data.TINY_VOCAB_SIZE,
        n_positions=tiny.n_positions,
        n_embd=tiny.n_embd,
        n_layer=tiny.n_layer,
        n_head=tiny.n_head,
        rotary_dim=tiny.rotary_dim,
        n_inner=tiny.n_inner,
        param_dtype=model_config.dtype,
        dtype=model_config.dtype,
    )


def load_model(model_config):
    """`(llm_config, params, tokenizer_path)`; an unset `path` builds the tiny random GPT-J."""
    if model_config.path:
        llm_config, params = models.load_hf(model_config.path, param_dtype=model_config.dtype)
        return llm_config, params, model_config.path
    llm_config = llm_config_of(model_config)
    return llm_config, models.init_params(llm_config, jax.random.PRNGKey(model_config.tiny.seed)), None


def load_splits(data_config, seed: int, n_train_rows: int, n_eval_rows: int):
    """`(train facts, eval facts, n malformed rows skipped)`; unset paths give disjoint synthetic facts."""
    if not data_config.train_path:
        facts = data.make_synthetic_facts(min(data.MAX_SYNTHETIC_FACTS, n_train_rows + n_eval_rows), seed)
        return facts[:n_train_rows], facts[n_train_rows:], 0
    loaded = [
        data.load_facts(data_config.name, p, skip_malformed=data_config.skip_malformed, seed=seed)
        for p in (data_config.train_path, data_config.eval_path)
    ]
    for split in loaded:
        for message in split.skipped:
            logging.warning("skipped malformed row: %s", message)
    return loaded[0].facts, loaded[1].facts, sum(len(s.skipped) for s in loaded)


def edit_streams(config, n_train: int, n_eval: int):
    """`(train sequences, eval steps)`: `n_epochs` lists of `train.num_seq` steps, and the eval steps."""
    n_edits, t_train, epochs = config.data.n_edits, config.train.num_seq, config.editor.n_epochs
    if config.data.stream_file:
        stream = data.load_stream_file(config.data.stream_file)
        train, evals = stream["train"], stream["eval"]
        data.validate_stream(train, n_train, "train stream")
        data.validate_stream(evals, n_eval, "eval stream")
        if len(train) % t_train or len(train[0]) != n_edits or len(evals[0]) != n_edits:
            raise ValueError(
                f"stream file {config.data.stream_file}: train must hold a multiple of train.num_seq="
                f"{t_train} steps and every step data.n_edits={n_edits} rows"
            )
        sequences = [train[i : i + t_train] for i in range(0, len(train), t_train)]
        return [sequences[e % len(sequences)] for e in range(epochs)], evals[: config.eval.num_seq]
    seed = config.train.seed
    train = [data.draw_stream(n_train, t_train, n_edits, seed + e) for e in range(epochs)]
    return train, data.draw_stream(n_eval, config.eval.num_seq, n_edits, seed + 10_000)


def _step_batches(config, tokenizer, facts, steps, max_length):
    return data.build_step_batches(
        tokenizer,
        facts,
        steps,
        batch_size=config.data.batch_size,
        max_length=max_length,
        truncate=config.data.truncate,
    )


def initial_editor(config, layout, hp):
    """`(nets, norms)`: fresh, or imported from `init.reference_hypernet` and checked against the layout."""
    if not config.init.reference_hypernet:
        return training.init_nets(jax.random.PRNGKey(config.train.seed), layout, hp), training.init_norms(layout)
    path = config.init.reference_hypernet
    nets, norms = reference_io.from_reference(reference_io.load_reference_file(path))
    check_hypernets(layout, nets, norms, source=path)
    return nets, norms


def _write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def _trace_arrays(prefix, layout, factors):
    """`{prefix/step{t}/{site}/shift: [d_in, d_out]}` from per-step factors `{site: (K [T,N,d_in], C)}`."""
    out = {}
    for site in layout.names:
        k, c = (np.asarray(x) for x in factors[site])
        for t in range(k.shape[0]):
            out[f"{prefix}/step{t}/{site}/shift"] = k[t].T @ c[t]
    return out


def train_and_evaluate(config, workdir: str) -> dict:
    """Runs the job described by `config`; returns the final metrics (also in `workdir/metrics.json`)."""
    # Every input is checked (config, edit sites, data, tokenisation) before any weights load and
    # before anything is written.
    config_validation.validate(config)
    llm_config = llm_config_of(config.model)
    layout = make_layout(llm_config, config.model.edit_sites)
    tokenizer = data.load_tokenizer(config.data.tokenizer_path or config.model.path)
    hp = training.EditorHParams.from_config(config.editor)
    n_edits = config.data.n_edits
    train_facts, eval_facts, n_skipped = load_splits(
        config.data,
        config.train.seed,
        config.editor.n_epochs * config.train.num_seq * n_edits,
        config.eval.num_seq * n_edits,
    )
    train_streams, eval_stream = edit_streams(config, len(train_facts), len(eval_facts))
    max_length = llm_config.n_positions
    # All sequences are built together so every epoch has the same shapes (one compilation).
    all_train = _step_batches(config, tokenizer, train_facts, sum(train_streams, []), max_length)
    t_train = config.train.num_seq
    train_batches = [
        jax.tree.map(lambda x, e=e: x[e * t_train : (e + 1) * t_train], all_train) for e in range(len(train_streams))
    ]
    eval_batches = _step_batches(config, tokenizer, eval_facts, eval_stream, max_length)
    lengths = training.AnswerLengths.of(all_train)

    llm_config, params, _ = load_model(config.model)
    os.makedirs(workdir, exist_ok=True)
    resolved = json.loads(config.to_json())

    nets, norms = initial_editor(config, layout, hp)
    opt_state = training.make_optimizer(hp).init(nets)
    ckpt = checkpoint.Checkpointer(
        os.path.join(workdir, "checkpoints"),
        every=config.checkpoint.every,
        keep=config.checkpoint.keep,
        config=resolved,
        digests=[checkpoint.sequence_digest(train_facts, s) for s in train_streams],
        padded_lengths={
            **{kind: getattr(all_train, kind).input_ids.shape[-1] for kind in data.KINDS},
            "answers": [lengths.edit, lengths.unrel],
        },
    )
    metrics_path = os.path.join(workdir, "train_metrics.jsonl")
    trace, out = {}, None
    start = time.time()
    done, state = ckpt.restore({"nets": nets, "opt_state": opt_state, "norms": norms})
    nets, opt_state, norms = state["nets"], state["opt_state"], state["norms"]
    _write_json(os.path.join(workdir, "config.json"), resolved)
    # Lines of the sequences after the checkpoint are dropped: this run writes them again.
    checkpoint.rewind_metrics(metrics_path, done, t_train)
    with ckpt, open(metrics_path, "a") as metrics_file:
        for e in tqdm.trange(done, len(train_batches), desc="train sequences", unit="seq"):
            nets, opt_state, norms, grads, out = epoch.train_epoch_jit(
                llm_config,
                layout,
                hp,
                lengths,
                config.train.gradient,
                config.trace,
                params,
                nets,
                opt_state,
                norms,
                train_batches[e],
            )
            scalars = {k: np.asarray(v) for k, v in out.items() if k != "factors"}
            for t in range(t_train):
                # Per-step values, and per-sequence ones (the unrolled modes' gradient norm) repeated.
                row = {"epoch": e, "step": t, **{k: float(v[t] if v.ndim else v) for k, v in scalars.items()}}
                metrics_file.write(json.dumps(row) + "\n")
            metrics_file.flush()
            if not np.isfinite(scalars["loss"]).all():
                raise FloatingPointError(f"non-finite training loss in sequence {e}; see {metrics_path}")
            ckpt.save(e + 1, {"nets": nets, "opt_state": opt_state, "norms": norms}, final=e + 1 == len(train_batches))
    train_seconds = time.time() - start
    if config.trace and out is None:
        logging.warning("training was complete in the checkpoint: trace.npz holds the evaluation only")
    elif config.trace:
        trace.update(_trace_arrays("train", layout, out["factors"]))
        for t in range(t_train):
            trace[f"train/step{t}/gen_loss"] = scalars["gen_loss"][t]
            trace[f"train/step{t}/loc_loss"] = scalars["loc_loss"][t]
        ref_grads = reference_io.to_reference(grads, norms)
        trace.update({f"train/grad/{k}": v for k, v in ref_grads.items() if ".normalizer." not in k})

    reference_io.save_reference_file(
        os.path.join(workdir, "hypernet.safetensors"), reference_io.to_reference(nets, norms)
    )

    start = time.time()
    scores, _, norms, eval_factors = evaluation.evaluate_jit(
        llm_config,
        layout,
        hp.token,
        DATASET_METRIC[config.data.name],
        training.AnswerLengths.of(eval_batches).edit,
        config.trace,
        params,
        nets,
        norms,
        eval_batches,
    )
    metrics = {k: float(v) for k, v in scores.items()}
    metrics.update(
        train_seconds=train_seconds,
        eval_seconds=time.time() - start,
        n_train_facts=len(train_facts),
        n_eval_facts=len(eval_facts),
        n_skipped_rows=n_skipped,
        n_truncated=all_train.n_truncated + eval_batches.n_truncated,
    )
    _write_json(os.path.join(workdir, "metrics.json"), metrics)
    if config.trace:
        trace.update(_trace_arrays("eval", layout, eval_factors))
        with tempfile.NamedTemporaryFile(dir=workdir, suffix=".npz", delete=False) as f:
            np.savez(f, **trace)
        os.replace(f.name, os.path.join(workdir, "trace.npz"))
    logging.info("ES %.4f  GS %.4f  LS %.4f", metrics["ES"], metrics["GS"], metrics["LS"])
    return metrics
