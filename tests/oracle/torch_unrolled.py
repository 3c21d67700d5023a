"""PyTorch oracle for "gradients through the unrolled edit trajectory" (DESIGN.md section 4).

Written for clarity, not speed, on top of the building blocks of ``tests/oracle/torch_rledit.py``
(same conventions: HF torch causal LM, edit sites are ``nn.Linear`` named by HF module name, spec
weight ``W = linear.weight.T``, a shift ``S`` (``d_in x d_out``) enters as ``weight + S.T``; a step
is ``{"edit": [mb, ...], "equiv": [mb, ...], "unrel": [mb, ...]}``; ``cfg`` as in torch_rledit).

The whole sequence is one differentiable function of the hypernetwork parameters::

    W_0 = base weights
    stats_0 = the nets' normaliser buffers                     # state: constants
    for t = 0..T-1:
        K_t, G_t = capture(edit micro-batches of step t at W_t)   # as torch_rledit.capture
        stats_{t+1} = merge(stats_t, [K_t; G_t])                  # as Normalizer.update
        S_t      = hypernet(K_t, G_t), normalised with stats_{t+1}  # every site
        loss_t   = torch_rledit.step_loss_terms, W_t in place of the model's current weights:
                   sum_{i < min(t+1, back_depth)} time_decay^i
                       * [ sum_mb CE_{W_t+S_t}(equiv of step t-i)
                           + loc_coef * sum_mb KL(p_{W_t} || p_{W_t+S_t})(unrel of step t-i) ]
                   + reg_coef * sum_sites ||S_t||_F^2
        W_{t+1}  = W_t + S_t                                      # NOT detached
    total = sum_t loss_t

Modes (what the gradient of ``total`` sees):

* ``"unrolled"``: ``K_t, G_t`` are constants (their values at ``W_t``); ``W_t`` depends on the
  hypernetwork through ``S_0..S_{t-1}``, and so does ``p_{W_t}`` (the KL's "before" distribution).
* ``"unrolled_second_order"``: the exact derivative of ``total``. Additionally ``K_t`` (site
  inputs under ``W_t``) and ``G_t`` (computed with ``torch.autograd.grad(..., create_graph=True)``)
  are differentiable functions of ``W_t``, and so are the normaliser statistics ``stats_{t+1}``
  merged from them within the sequence (``merge_stats``: ``Normalizer.update`` without its detach).
  Only ``stats_0``, the statistics the sequence starts from, are constants.
* ``"stop_carry"``: ``W_t`` is detached at every step (so is everything computed from it); the
  gradient of ``total`` is the sum of the per-step reference gradients of
  ``torch_rledit.train_sequence`` without clipping.

In ``"unrolled"`` and ``"stop_carry"`` the captures are constants, hence so are the statistics.

No clipping and no optimizer step happen here: ``cfg.max_grad_norm`` is ignored.

All modes produce the same forward values (shifts, losses, normaliser statistics); only the
gradients differ. The model's stored parameters are never modified (every forward is a
``torch.func.functional_call`` with a per-step parameter dict; site weights are passed detached from
the model, so no gradient reaches the model).

Normaliser state
----------------
``sequence_loss`` MUTATES the hypernetworks' normaliser buffers exactly like
``torch_rledit.train_sequence`` (each step: every micro-batch, then every site in config order,
merged from detached values), in every mode: the buffers only ever hold detached values (in
``"unrolled_second_order"`` the differentiable statistics live in a separate per-sequence copy,
updated with the same formula, in the same order, from the same values). To evaluate the same
sequence twice from the same state (finite differences, comparing modes), either
``copy.deepcopy(nets)`` before each call, or use ``snapshot_normalisers(nets)`` /
``restore_normalisers(nets, snapshot)``.

Options used by finite-difference checks:

* ``frozen_captures``: per step, the per-micro-batch captures (the ``"captured"`` entry of a
  previous result, format of ``torch_rledit.capture``). They replace the capture at ``W_t`` (the
  normalisers are still updated from them, micro-batch by micro-batch). Makes the loss whose exact
  gradient is the ``"unrolled"`` gradient. Not allowed with ``"unrolled_second_order"``.
* ``frozen_norm_stats``: per step, normaliser statistics ``{net key: {n, mean, var, std}}`` (the
  ``"norm_stats"`` entry of a previous result: stats after that step's updates). They are loaded
  into the buffers instead of updating them, and the shifts are normalised with them as constants
  (in every mode, ``"unrolled_second_order"`` included). The gradient of
  ``"unrolled_second_order"`` with frozen statistics is the derivative of the plain loss with the
  statistics held at those values (the project's former second-order semantics); without them it is
  the derivative of the plain loss, full stop.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import transformers
from torch import nn
from transformers import masking_utils

from tests.oracle import torch_rledit as orc

MODES = ("unrolled", "unrolled_second_order", "stop_carry")

Captured = list[dict[str, tuple]]  # per micro-batch: site -> (K_mb, G_mb)


# --------------------------------------------------------------------------------------------------
# Precision helper for finite-difference checks
# --------------------------------------------------------------------------------------------------


MODEL_DTYPE_ATTENTION = "rledit_model_dtype_eager"


def _model_dtype_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """Eager attention with q.k^T and the softmax in the inputs' dtype.

    A function for ``transformers.AttentionInterface``: ``query``/``key``/``value`` are
    ``[B, heads, T, head_dim]``, ``attention_mask`` an additive ``[B, 1, T, T]`` mask (or None); returns
    ``(output [B, T, heads, head_dim], weights)`` like the library's eager attention.
    """
    weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask[:, :, :, : key.shape[-2]]
    weights = torch.softmax(weights, dim=-1).to(value.dtype)
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


def full_precision_attention(model: nn.Module) -> nn.Module:
    """Selects, in place, an attention that computes q.k^T and the softmax in the model's dtype.

    HF's eager GPT-J attention casts query and key to float32 ("to avoid overflow"), so a "float64"
    GPT-J is only float32-accurate (~1e-7 relative) once an edit upstream of an attention layer
    changes its input: central finite differences of the sequence loss are then dominated by that
    noise. Call this on float64 test models before finite-difference checks. Only public
    ``transformers`` API is used: the function is registered with ``AttentionInterface`` (with the
    eager attention's additive mask, ``AttentionMaskInterface``) and chosen with
    ``set_attn_implementation``. Returns ``model``.
    """
    transformers.AttentionInterface.register(MODEL_DTYPE_ATTENTION, _model_dtype_attention)
    transformers.AttentionMaskInterface.register(MODEL_DTYPE_ATTENTION, masking_utils.eager_mask)
    model.set_attn_implementation(MODEL_DTYPE_ATTENTION)
    return model


# --------------------------------------------------------------------------------------------------
# Normaliser snapshot / restore
# --------------------------------------------------------------------------------------------------


def snapshot_normalisers(nets: nn.ModuleDict) -> dict[str, dict[str, torch.Tensor]]:
    """Copy of every net's normaliser buffers ``{net key: {n, mean, var, std}}``."""
    return orc.normaliser_stats(nets)


@torch.no_grad()
def restore_normalisers(nets: nn.ModuleDict, stats: dict[str, dict[str, torch.Tensor]]) -> None:
    """Load ``{net key: {n, mean, var, std}}`` into the normaliser buffers (in place)."""
    for key, net in nets.items():
        for name in ("n", "mean", "var", "std"):
            getattr(net.normalizer, name).copy_(stats[key][name])


# --------------------------------------------------------------------------------------------------
# Building blocks at explicit weights
# --------------------------------------------------------------------------------------------------


def base_params(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's parameters, detached (base weights W_0 and everything that is never edited)."""
    return {name: p.detach() for name, p in model.named_parameters()}


def params_with(base: dict[str, torch.Tensor], site_weights: dict[str, torch.Tensor]):
    """``base`` with each edit site's HF-layout weight ``[d_out, d_in]`` replaced."""
    params = dict(base)
    for site, w in site_weights.items():
        params[site + ".weight"] = w
    return params


def logits_at(model: nn.Module, params: dict[str, torch.Tensor], mb: dict[str, Any]) -> torch.Tensor:
    return torch.func.functional_call(
        model,
        params,
        args=(),
        kwargs=dict(input_ids=mb["input_ids"], attention_mask=mb["attention_mask"], use_cache=False),
    ).logits


def capture_at(
    model: nn.Module,
    params: dict[str, torch.Tensor],
    site_names: Sequence[str],
    micro_batches: Sequence[dict[str, Any]],
    token: str = "ans",
    create_graph: bool = False,
) -> Captured:
    """``torch_rledit.capture`` at explicit weights ``params`` (see its ``create_graph``)."""
    return orc.capture(
        model,
        site_names,
        micro_batches,
        token,
        logits_fn=lambda mb: logits_at(model, params, mb),
        create_graph=create_graph,
    )


NormStats = dict[str, torch.Tensor]  # {n, mean, var (the running sum M), std} of one normaliser


def merge_stats(stats: NormStats, x: torch.Tensor, eps: float) -> NormStats:
    """``torch_rledit.Normalizer.update`` as a pure function, WITHOUT detaching ``x``: the merged
    statistics are differentiable w.r.t. ``x`` (and ``stats``). Same formula and operation order as
    the buffer update (so the values are identical): unbiased batch variance, ``m = 1 -> var_b = 0``,
    ``m = 0 -> stats`` unchanged, ``std = sqrt(M / (n - 1 + eps))``."""
    x = x.to(stats["mean"].dtype)
    m = x.shape[0]
    if m == 0:
        return stats
    n = stats["n"]
    batch_mean = x.mean(dim=0)
    if m >= 2:
        batch_var = x.var(dim=0, unbiased=True)
    else:
        batch_var = torch.zeros_like(batch_mean)
    delta = batch_mean - stats["mean"]
    new_n = n + m
    mean = stats["mean"] + m * delta / new_n
    M = stats["var"] + (m * batch_var + n * m * delta**2 / new_n)
    std = torch.sqrt(M / (new_n - 1 + eps))
    return {"n": new_n, "mean": mean, "var": M, "std": std}


def merge_captured(
    stats: dict[str, NormStats],
    nets: nn.ModuleDict,
    assignment: dict[str, tuple],
    site_names: Sequence[str],
    captured: Captured,
) -> dict[str, NormStats]:
    """``torch_rledit.update_normalisers`` on ``{net key: stats}`` (micro-batch major, then site in
    config order) with ``merge_stats``; returns the new dict, ``stats`` is not modified."""
    stats = dict(stats)
    for per_site in captured:
        for site in site_names:
            key, _ = assignment[site]
            k, g = per_site[site]
            stats[key] = merge_stats(stats[key], torch.cat([k, g], dim=-1), nets[key].normalizer.eps)
    return stats


def hypernet_forward(
    net: orc.HyperNet, x: torch.Tensor, site_index: int, stats: NormStats | None = None
) -> torch.Tensor:
    """``net(x, site_index)``; with ``stats``, normalised with ``stats`` (possibly carrying a graph)
    instead of the normaliser's buffers."""
    if stats is None:
        return net(x, site_index)
    h = (x - stats["mean"]) / (stats["std"] + net.normalizer.eps)
    for block in net.blocks:
        h = block(h, site_index)
    return h


def predict_shift(
    net: orc.HyperNet, site_index: int, K: torch.Tensor, G: torch.Tensor, stats: NormStats | None = None
) -> torch.Tensor:
    """``torch_rledit.predict_shift`` without detaching K, G (the caller decides what is
    constant); normalised with ``stats`` when given (``hypernet_forward``)."""
    d_in = net.d_in
    out = hypernet_forward(net, torch.cat([K, G], dim=-1), site_index, stats)
    k_tilde = out[:, :d_in]
    g_tilde = out[:, d_in:]
    lr = net.lr.weight[site_index, 0]
    lamda = net.lamda.weight[site_index, 0]
    coeff = (K * k_tilde).sum(dim=-1, keepdim=True)  # <k_j, k~_j>, raw key
    D = -lr * coeff * g_tilde
    eye = torch.eye(d_in, dtype=K.dtype, device=K.device)
    lhs = K.T @ K + torch.exp(lamda) * eye
    rhs = K.T @ D
    return torch.linalg.solve(lhs, rhs)


# --------------------------------------------------------------------------------------------------
# Sequence loss and gradients
# --------------------------------------------------------------------------------------------------


def sequence_loss(
    model: nn.Module,
    nets: nn.ModuleDict,
    steps: Sequence[dict[str, Any]],
    site_names: Sequence[str],
    cfg=None,
    mode: str = "unrolled",
    *,
    frozen_captures: Sequence[Captured] | None = None,
    frozen_norm_stats: Sequence[dict[str, dict[str, torch.Tensor]]] | None = None,
) -> dict[str, Any]:
    """Loss of a whole edit sequence from the base weights (module docstring for the semantics).

    Mutates the nets' normaliser buffers (snapshot / restore them, or deep-copy the nets, to rerun).

    Returns a dict:

    * ``total``: 0-d tensor, ``sum_t loss[t]``, differentiable w.r.t. ``nets.parameters()``;
    * ``loss``, ``gen_loss``, ``loc_loss``, ``reg``: per-step lists of 0-d tensors (with graph;
      same meaning as ``torch_rledit.step_loss_terms``: ``loc_loss`` without ``loc_coef``);
    * ``shifts``: per-step ``{site: S_t}`` (``d_in x d_out``, with graph);
    * ``K``, ``G``: per-step ``{site: stacked keys / value-grads}`` (detached);
    * ``captured``: per-step per-micro-batch captures (detached; usable as ``frozen_captures``);
    * ``norm_stats``: per-step normaliser stats after the step's updates (usable as
      ``frozen_norm_stats``).
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
    if frozen_captures is not None and mode == "unrolled_second_order":
        raise ValueError("frozen_captures makes K, G constants: it contradicts unrolled_second_order")
    T = len(steps)
    if frozen_captures is not None and len(frozen_captures) != T:
        raise ValueError("frozen_captures needs one entry per step")
    if frozen_norm_stats is not None and len(frozen_norm_stats) != T:
        raise ValueError("frozen_norm_stats needs one entry per step")

    model.eval()
    token = orc._cfg(cfg, "token")
    assignment = orc.site_assignment(model, site_names)
    base = base_params(model)
    W = {s: base[s + ".weight"] for s in site_names}  # W_0, HF layout [d_out, d_in]
    second_order = mode == "unrolled_second_order"
    # differentiable per-sequence copy of the statistics (second order, stats not frozen);
    # starts from the buffers' values as constants
    stats = snapshot_normalisers(nets) if second_order and frozen_norm_stats is None else None

    out: dict[str, Any] = {
        k: [] for k in ("loss", "gen_loss", "loc_loss", "reg", "shifts", "K", "G", "captured", "norm_stats")
    }
    with torch.enable_grad():
        for t in range(T):
            W_t = {s: w.detach() for s, w in W.items()} if mode == "stop_carry" else W
            # 1. capture at W_t
            if frozen_captures is not None:
                captured = [
                    {s: (k.detach(), g.detach()) for s, (k, g) in per_site.items()} for per_site in frozen_captures[t]
                ]
            elif second_order:
                captured = capture_at(
                    model, params_with(base, W_t), site_names, steps[t]["edit"], token, create_graph=True
                )
            else:
                W_const = {s: w.detach() for s, w in W_t.items()}
                captured = capture_at(
                    model, params_with(base, W_const), site_names, steps[t]["edit"], token, create_graph=False
                )
            detached = [
                {s: (k.detach().clone(), g.detach().clone()) for s, (k, g) in per_site.items()}
                for per_site in captured
            ]
            # 2. normaliser state: the buffers always from detached values; in second order also
            #    the differentiable copy, from the captures with their graph
            if frozen_norm_stats is not None:
                restore_normalisers(nets, frozen_norm_stats[t])
            else:
                orc.update_normalisers(nets, assignment, site_names, detached)
                if stats is not None:
                    stats = merge_captured(stats, nets, assignment, site_names, captured)
            # 3. shifts (normalised with the differentiable stats when there are any, else with
            #    the buffers, i.e. constants)
            KG = orc.stack_captured(captured, site_names)
            shifts = {}
            for site in site_names:
                key, idx = assignment[site]
                K, G = KG[site]
                shifts[site] = predict_shift(nets[key], idx, K, G, None if stats is None else stats[key])
            # 4. step loss at W_t
            terms = orc.step_loss_terms(model, site_names, shifts, steps, t, cfg, site_weights=W_t)
            for name in ("loss", "gen_loss", "loc_loss", "reg"):
                out[name].append(terms[name])
            out["shifts"].append(shifts)
            out["K"].append({s: KG[s][0].detach().clone() for s in site_names})
            out["G"].append({s: KG[s][1].detach().clone() for s in site_names})
            out["captured"].append(detached)
            out["norm_stats"].append(orc.normaliser_stats(nets))
            # 5. carry: W_{t+1} = W_t + S_t (with graph; stop_carry detaches at the next use)
            W = {s: W_t[s] + shifts[s].T for s in site_names}
        total = out["loss"][0]
        for loss in out["loss"][1:]:
            total = total + loss
    out["total"] = total
    return out


def sequence_grads(
    model: nn.Module,
    nets: nn.ModuleDict,
    steps: Sequence[dict[str, Any]],
    site_names: Sequence[str],
    cfg=None,
    mode: str = "unrolled",
    **kwargs,
) -> dict[str, torch.Tensor]:
    """``{param name: d total / d param}`` over ``nets.named_parameters()`` (zeros where no path).

    ``kwargs`` go to ``sequence_loss`` (``frozen_captures``, ``frozen_norm_stats``). Mutates the
    normaliser buffers like ``sequence_loss``. ``.grad`` of the params is left untouched.
    """
    res = sequence_loss(model, nets, steps, site_names, cfg, mode, **kwargs)
    named = list(nets.named_parameters())
    grads = torch.autograd.grad(res["total"], [p for _, p in named], allow_unused=True)
    return {name: (g.detach().clone() if g is not None else torch.zeros_like(p)) for (name, p), g in zip(named, grads)}
