"""The one door from the reference tier into rledit_jax: every call the comparisons make goes through here.

When the library's modules move, only this file changes. Shapes (numpy in, numpy out unless noted):

- normaliser: rows `x` [R, width], `mask` [R] bool; state is our `NormState` (opaque to the tests),
  `normaliser_stats` gives it in the reference's buffer names (`n` [1], `mean`, `var` = M, `std`).
- hypernetworks: `nets` / `norms` keyed by kernel shape `(d_in, d_out)`; in the reference naming
  through `to_reference` / `from_reference` (dicts of float32 numpy arrays).
- shifts `S` [d_in, d_out] (value = key @ W, HF's `nn.Linear.weight` is `S.T`), from keys [N, d_in]
  and value-gradients [N, d_out].
- losses and metrics on one micro-batch: `logits` [B, L, V], `labels` [B, L]; CounterFact's score from
  the reference's token rows (`new_beats_old`).
- data: `step_batches` returns `{kind: {input_ids, attention_mask, labels, old_labels: [T, M, B, L],
  fact_index: [T, M, B]}}` for kind in edit / equiv / unrel.
"""

import jax
import jax.numpy as jnp
import numpy as np

from rledit_jax import config_schema, config_validation, data, models, probes
from rledit_jax.cli import train
from rledit_jax.method import edit_step, hypernet, losses, normalizer, packing, reference_io, sequence, shift
from rledit_jax.method.packing import KindLengths, Lengths
from rledit_jax.method.sites import Site, SiteLayout, make_layout
from rledit_jax.method.spec import HParams, Hypernets, Spec

# A config our validation refuses (e.g. data.batch_size > data.n_edits).
ConfigError = config_validation.ConfigError

IGNORE = data.IGNORE
KINDS = data.KINDS


# Normaliser --------------------------------------------------------------------------------------


def normaliser_init(width: int):
    return normalizer.init(width)


def normaliser_update(state, x, mask=None):
    x = jnp.asarray(x, jnp.float32)
    mask = jnp.ones(x.shape[0], bool) if mask is None else jnp.asarray(mask, bool)
    return normalizer.update(state, x, mask)


def _spec(llm_config, layout) -> Spec:
    """A spec for the pieces that read only the model and the layout (hyperparameters unused)."""
    hparams = HParams(1, 1, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1, "ans")
    return Spec(
        model=llm_config, layout=layout, hparams=hparams, lengths=Lengths(edit=KindLengths(answers=1, tokens=1))
    )


def step_normaliser_update(sites, norms, captures):
    """Our per-step merge (`edit_step.update_norms`): `sites` a list of `(name, (d_in, d_out))` in config
    order, `captures` `{name: (keys [M, R, d_in], values_grad [M, R, d_out], mask [M, R])}`."""
    counts, layout_sites = {}, []
    for name, shape in sites:
        layout_sites.append(Site(name, tuple(shape), counts.get(shape, 0)))
        counts[shape] = counts.get(shape, 0) + 1
    caps = {
        name: probes.SiteCapture(jnp.asarray(k, jnp.float32), jnp.asarray(g, jnp.float32), jnp.asarray(m, bool))
        for name, (k, g, m) in captures.items()
    }
    return edit_step.update_norms(_spec(None, SiteLayout(tuple(layout_sites))), norms, caps)


def normalise(state, x) -> np.ndarray:
    return np.asarray(normalizer.normalize(state, jnp.asarray(x, jnp.float32)))


def normaliser_stats(state) -> dict[str, np.ndarray]:
    return {
        "n": np.asarray(state.n, np.float32).reshape(1),
        "mean": np.asarray(state.mean),
        "var": np.asarray(state.m2),
        "std": np.asarray(state.std),
    }


# Hypernetworks -------------------------------------------------------------------------------------


def init_hypernets(groups: dict, *, rank: int, n_blocks: int, lr: float, seed: int, perturb: float = 0.0):
    """`(nets, norms)` for `groups` `{(d_in, d_out): n_sites}`: our init (the identity map), then every
    parameter but lr / lamda moved by `perturb` * N(0, 1) so no gradient is trivially zero."""
    keys = jax.random.split(jax.random.PRNGKey(seed), 2 * len(groups))
    nets, norms = {}, {}
    for (shape, n_sites), key, noise_key in zip(groups.items(), keys[::2], keys[1::2]):
        net = hypernet.init_hypernet(key, *shape, n_sites, rank, n_blocks, lr)
        leaves, tree = jax.tree.flatten(net["blocks"])
        noise = jax.random.split(noise_key, len(leaves))
        blocks = [x + perturb * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, noise)]
        nets[shape] = {**net, "blocks": jax.tree.unflatten(tree, blocks)}
        norms[shape] = normalizer.init(sum(shape))
    return nets, norms


def with_site_tables(nets, lr, lamda):
    """`nets` with every group's per-site `lr` / `lamda` replaced by the given per-site lists."""
    return {
        shape: {**net, "lr": jnp.asarray(lr[shape], jnp.float32), "lamda": jnp.asarray(lamda[shape], jnp.float32)}
        for shape, net in nets.items()
    }


def to_reference(nets, norms) -> dict[str, np.ndarray]:
    return reference_io.to_reference(Hypernets(nets=nets, norms=norms))


def from_reference(state: dict):
    """`(nets, norms)` of a reference state dict."""
    hypernets = reference_io.from_reference(state)
    return hypernets.nets, hypernets.norms


def save_reference_file(path, state) -> None:
    reference_io.save_reference_file(path, state)


def load_reference_file(path) -> dict[str, np.ndarray]:
    return reference_io.load_reference_file(path)


def hypernet_forward(nets, norms, shape, keys, values_grad, site_index: int):
    """`(k~ [N, d_in], g~ [N, d_out])`: the blocks on the normalised `[k; g]`."""
    h = jnp.concatenate([jnp.asarray(keys, jnp.float32), jnp.asarray(values_grad, jnp.float32)], -1)
    out = hypernet.apply_hypernet(nets[shape], normalizer.normalize(norms[shape], h), jnp.int32(site_index))
    return tuple(np.asarray(x) for x in jnp.split(out, [shape[0]], axis=-1))


def _shift(net, norm, keys, values_grad, mask, site_index):
    k, c = shift.shift_factors(net, norm, keys, values_grad, mask, jnp.int32(site_index))
    return k.T @ c


def shift_matrix(nets, norms, shape, keys, values_grad, mask, site_index: int) -> np.ndarray:
    """The push-through shift `S = K^T C` [d_in, d_out] (rows with mask False drop out)."""
    args = (jnp.asarray(keys, jnp.float32), jnp.asarray(values_grad, jnp.float32), jnp.asarray(mask, bool))
    return np.asarray(_shift(nets[shape], norms[shape], *args, site_index))


def shift_grads(nets, norms, sites):
    """d<G_W, S>/d nets summed over `sites`, a list of `(shape, site_index, keys, values_grad, mask,
    module_grad [d_in, d_out])`: the vjp of each site's shift with its module gradient as cotangent."""
    grads = jax.tree.map(jnp.zeros_like, nets)
    for shape, index, keys, values_grad, mask, module_grad in sites:
        args = (jnp.asarray(keys, jnp.float32), jnp.asarray(values_grad, jnp.float32), jnp.asarray(mask, bool))
        _, vjp = jax.vjp(lambda net, norm=norms[shape], args=args, i=index: _shift(net, norm, *args, i), nets[shape])
        (g,) = vjp(jnp.asarray(module_grad, jnp.float32))
        grads[shape] = jax.tree.map(jnp.add, grads[shape], g)
    return grads


def accumulate_and_clip(acc, grads, max_grad_norm: float):
    """`(clip(acc + grads), norm before clipping)`, the per-step accumulator of the training scan."""
    total = grads if acc is None else jax.tree.map(jnp.add, acc, grads)
    return sequence.clip_accumulated(total, max_grad_norm)


def grads_to_reference(grads, norms) -> dict[str, np.ndarray]:
    """A gradient pytree in the reference's parameter names (normaliser buffers left out)."""
    return {k: v for k, v in to_reference(grads, norms).items() if ".normalizer." not in k}


def shift_sq_norm_grads(nets, norms, shape, keys, values_grad, mask, site_index: int):
    """d ||S||_F^2 / d nets: the L2 term's gradient, as our trainer differentiates it."""
    args = (jnp.asarray(keys, jnp.float32), jnp.asarray(values_grad, jnp.float32), jnp.asarray(mask, bool))

    def sq_norm(net):
        k, c = shift.shift_factors(net, norms[shape], *args, jnp.int32(site_index))
        return shift.shift_sq_norm(k, c)

    return {shape: jax.grad(sq_norm)(nets[shape])}


# Losses and metrics on one micro-batch ------------------------------------------------------------------


def cross_entropy(logits, labels) -> float:
    logits, labels = jnp.asarray(logits, jnp.float32)[None], jnp.asarray(labels, jnp.int32)[None]
    return float(losses.micro_batch_cross_entropy(logits, labels)[0])


def kl(logits_before, logits_after, labels) -> float:
    """KL(p_before || p_after) averaged over the answer positions of the micro-batch."""
    labels = jnp.asarray(labels, jnp.int32)[None]
    n_answer = max(1, int((labels != IGNORE).sum(-1).max()))
    positions, valid = losses.answer_positions(labels, n_answer)
    before = losses.answer_logits(jnp.asarray(logits_before, jnp.float32)[None], positions)
    after = losses.answer_logits(jnp.asarray(logits_after, jnp.float32)[None], positions)
    return float(losses.micro_batch_kl(before, after, valid)[0])


def token_accuracy(logits, labels) -> np.ndarray:
    return np.asarray(losses.token_accuracy(jnp.asarray(logits, jnp.float32), jnp.asarray(labels, jnp.int32)))


def new_beats_old(logits, rows) -> np.ndarray:
    """CounterFact's per-row score of one micro-batch, through our batch layout and metric.

    `rows`: the micro-batch's token rows `{input_ids, labels, old_labels}` (1-D, their own lengths, as the
    reference's `tok_tuples` gives them); `logits` `[b, S, V]` with S the longest row. The rows are laid
    out by `data.batches.assemble_kind_batch` (which sorts them) and scored by `losses.new_beats_old` on
    `packing.compared_old`; the scores come back in the rows' order.
    """
    n, width = len(rows), logits.shape[1]
    pairs = {
        i: data.TokenizedPair(
            input_ids=np.asarray(r["input_ids"], np.int32),
            labels=np.asarray(r["labels"], np.int32),
            old_labels=np.asarray(r["old_labels"], np.int32),
            n_prompt=int((np.asarray(r["labels"]) == IGNORE).sum()) + 1,
        )
        for i, r in enumerate(rows)
    }
    kb = data.batches.assemble_kind_batch([list(range(n))], pairs, n, width, 0, 0)
    order = kb.fact_index[0, 0]
    old = packing.compared_old(jnp.asarray(kb.attention_mask[0]), jnp.asarray(kb.old_labels[0]))[0]
    scores = losses.new_beats_old(jnp.asarray(logits[order], jnp.float32), jnp.asarray(kb.labels[0, 0]), old)
    out = np.empty(n)
    out[order] = np.asarray(scores)
    return out


# Data --------------------------------------------------------------------------------------------------


def load_tokenizer(path):
    return data.load_tokenizer(path)


def load_facts(name: str, path, *, seed: int = 0):
    """`(facts, row_indices)`: the rows of `path` our loader keeps (malformed ones skipped)."""
    loaded = data.load_facts(name, path, skip_malformed=True, seed=seed)
    return loaded.facts, loaded.row_indices


def fact_texts(fact) -> dict[str, tuple]:
    """`{kind: (prompt, answer, old_answer)}` of one loaded fact."""
    return {kind: (p.prompt, p.answer, p.old_answer) for kind in KINDS for p in [getattr(fact, kind)]}


def tokenize_pair(tokenizer, prompt: str, answer: str, old_answer: str | None = None) -> dict[str, np.ndarray]:
    tokens = data.tokenize_pair(tokenizer, data.Pair(prompt, answer, old_answer))
    return {"input_ids": tokens.input_ids, "labels": tokens.labels, "old_labels": tokens.old_labels}


def step_batches(tokenizer, facts, steps, *, batch_size: int, max_length: int = 512) -> dict:
    batches = data.build_step_batches(tokenizer, facts, steps, batch_size=batch_size, max_length=max_length)
    fields = ("input_ids", "attention_mask", "labels", "old_labels", "fact_index")
    return {kind: {f: np.asarray(getattr(getattr(batches, kind), f)) for f in fields} for kind in KINDS}


# Applying shifts to a model --------------------------------------------------------------------------


def accumulate_shifts(model_dir, site: str, shifts, param_dtype: str = "bfloat16"):
    """`(base kernel [d_in, d_out] as stored, edited kernel)`: the HF model loaded in `param_dtype`, then every
    shift [d_in, d_out] added in turn as our editor adds them (to `edit_step.base_kernels`, via
    `apply_factors` with factors `(I, S)`)."""
    llm_config, params = models.load_hf(str(model_dir), param_dtype=param_dtype)
    kernels = edit_step.base_kernels(_spec(llm_config, make_layout(llm_config, [site])), params)
    eye = jnp.eye(kernels[site].shape[0], dtype=jnp.float32)
    for s in shifts:
        kernels = edit_step.apply_factors(kernels, {site: (eye, jnp.asarray(s, jnp.float32))})
    base = models.get_site(llm_config, params, site)
    return np.asarray(base.astype(jnp.float32)), np.asarray(kernels[site])


# The whole job ---------------------------------------------------------------------------------------


def train_and_evaluate(
    workdir,
    *,
    model_dir,
    sites,
    files: dict,
    n_edits: int,
    batch_size: int,
    steps: int,
    editor: dict,
    initial,
) -> dict:
    """`bin/train`'s job on the real tiny config (configs/tiny.py), pointed at an HF model directory,
    zsRE files `files` (train_path, eval_path, tokenizer_path, stream_file), `steps` training and
    evaluation steps, the reference's `config.editor` fields `editor` (translated to ours through
    `config_schema.REFERENCE_NAMES`) and the initial hypernetwork file `initial`. Writes
    hypernet.safetensors and trace.npz into `workdir`; returns the metrics."""
    from tests.config_files import load_config, with_fields

    ours_of = {reference: ours for ours, reference in config_schema.REFERENCE_NAMES.items()}
    fields = {
        "model.path": str(model_dir),
        "model.dtype": "float32",
        "model.edit_sites": tuple(sites),
        "data.name": "zsre",
        "data.n_edits": n_edits,
        "data.batch_size": batch_size,
        **{f"data.{key}": str(value) for key, value in files.items()},
        **{ours_of[f"editor.{key}"]: value for key, value in editor.items()},
        "train.steps_per_sequence": steps,
        "eval.steps": steps,
        "init.reference_hypernet": str(initial),
        "trace": True,
    }
    return train.train_and_evaluate(with_fields(load_config("tiny"), **fields), str(workdir))
