"""The lifelong evaluation as bin/train runs it: compiled programs, stopped only where the host must look.

    out = evaluate(spec, params, hypernets, batches)                          # one program
    out = evaluate(spec, params, hypernets, batches, stop_every=k, at_stop=f)  # f(kernels, t) after
                                                                               # every k-th step t

Without stops the whole evaluation is `method.evaluation.evaluate`. With them it runs in segments of
`stop_every` steps (`evaluation.evaluate_steps`, then `evaluation.score`): the same computation, cut
where the host scores the model as edited so far (general ability, `at_stop`). `curve_records` turns
the in-program retention curve into curve.jsonl's records (`report/inputs.py`).
"""

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from rledit_jax.jit import program
from rledit_jax.method import edit_step as es
from rledit_jax.method import evaluation
from rledit_jax.method.spec import Hypernets, Spec

_base_kernels = program(es.base_kernels)  # fresh buffers: the segments donate their kernels


def _concat(pieces):
    if pieces[0] is None:
        return None
    return jax.tree.map(lambda *xs: jnp.concatenate(xs), *pieces)


def evaluate(
    spec: Spec, params, hypernets: Hypernets, batches, *, stop_every: int = 0, at_stop=None, desc="lifelong eval"
) -> evaluation.Lifelong:
    """The lifelong evaluation of `batches` (`hypernets` is donated), with a progress bar over its steps.

    `at_stop(kernels, t)` runs after every step t with `(t + 1) % stop_every == 0` before the last.
    """
    n_steps = batches.edit.input_ids.shape[0]
    bounds = [*range(0, n_steps, stop_every or n_steps), n_steps]
    with tqdm.tqdm(total=n_steps, desc=desc, unit="step") as bar:
        if len(bounds) == 2:
            out = jax.block_until_ready(evaluation.evaluate(spec, params, hypernets, batches))
            bar.update(n_steps)
            return out
        kernels, factors, curves = _base_kernels(spec, params), [], []
        for start, stop in zip(bounds, bounds[1:]):
            steps = jnp.arange(start, stop)
            kernels, hypernets, f, c = evaluation.evaluate_steps(spec, params, hypernets, kernels, batches, steps)
            factors.append(f)
            curves.append(c)
            bar.update(stop - start)
            if stop < n_steps:
                at_stop(kernels, stop - 1)
        scores, rows = evaluation.score(spec, params, kernels, batches)
    return evaluation.Lifelong(scores, rows, kernels, hypernets, _concat(factors), _concat(curves))


def edits_through(batches) -> np.ndarray:
    """`[T]`: the facts edited by steps 0..t (real edit rows)."""
    return np.cumsum((np.asarray(batches.edit.fact_index) >= 0).sum(axis=(1, 2)))


def curve_records(curve: evaluation.Curve, batches) -> list[dict]:
    """One `{"step", "edits", "all": {ES, GS, LS}, "first": {...}}` per curve point, in step order."""
    curve = jax.device_get(curve)
    edits = edits_through(batches)
    return [
        {
            "step": int(t),
            "edits": int(edits[t]),
            **{group: {k: float(v[t]) for k, v in getattr(curve, group).items()} for group in ("all", "first")},
        }
        for t in np.flatnonzero(curve.point)
    ]
