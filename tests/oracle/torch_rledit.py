"""Independent PyTorch implementation of RLEdit (DESIGN.md section 3), used as a test oracle.

Written from the spec for clarity, not speed. It operates on a HuggingFace torch causal LM
(``GPTJForCausalLM`` in the tests) whose edit sites are ``nn.Linear`` modules named by their HF module
names (e.g. ``transformer.h.1.mlp.fc_out``).

Conventions
-----------
* An edit site's weight in spec notation is ``W = linear.weight.T`` (``d_in x d_out``, ``value = k @ W``);
  a shift ``S`` (``d_in x d_out``) is applied as ``linear.weight += S.T``.
* Everything runs in the dtype of the model (``model.double()`` for float64); hypernetworks are built in
  the same dtype via ``make_hypernets(..., dtype=...)``.
* A micro-batch ``mb`` is a dict of tensors ``input_ids`` / ``attention_mask`` / ``labels`` (``[b, L]``,
  position ``i`` predicts ``labels[i]``, -100 ignored) and optionally ``old_labels`` (CounterFact:
  ``[b, L_old]``, each row's competing answer from its answer's first position on, right-padded with 0
  to the micro-batch's longest old row, as the reference collates them).
  A step is ``{"edit": [mb, ...], "equiv": [mb, ...], "unrel": [mb, ...]}``.
* ``cfg`` may be a dict, an ``OracleConfig``, an ``ml_collections.ConfigDict`` or any object with the
  attributes ``back_depth, time_decay, loc_coef, reg_coef, max_grad_norm, token``.

Hypernetwork state_dict names (the interchange format with the JAX side), for each shape key
``"(d_in, d_out)"``::

    "(d_in, d_out)".blocks.{i}.A             [width, rank]
    "(d_in, d_out)".blocks.{i}.B             [rank, width]
    "(d_in, d_out)".blocks.{i}.bias          [width]
    "(d_in, d_out)".blocks.{i}.scale.weight  [n_sites, width]
    "(d_in, d_out)".blocks.{i}.shift.weight  [n_sites, width]
    "(d_in, d_out)".lr.weight                [n_sites, 1]
    "(d_in, d_out)".lamda.weight             [n_sites, 1]
    "(d_in, d_out)".normalizer.n             [1]        (buffer)
    "(d_in, d_out)".normalizer.mean          [width]    (buffer)
    "(d_in, d_out)".normalizer.var           [width]    (buffer; holds the running sum M)
    "(d_in, d_out)".normalizer.std           [width]    (buffer)

with ``width = d_in + d_out``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

IGNORE = -100


# --------------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class OracleConfig:
    back_depth: int = 10
    time_decay: float = 0.95
    loc_coef: float = 0.6
    reg_coef: float = 1e-4
    max_grad_norm: float = 1.0
    token: str = "ans"


def _cfg(cfg: Any, name: str):
    """Read field ``name`` from a dict / dataclass / ConfigDict; fall back to OracleConfig defaults."""
    if cfg is None:
        return getattr(OracleConfig(), name)
    if isinstance(cfg, dict):
        if name in cfg:
            return cfg[name]
        return getattr(OracleConfig(), name)
    if hasattr(cfg, name):
        return getattr(cfg, name)
    return getattr(OracleConfig(), name)


# --------------------------------------------------------------------------------------------------
# Hypernetwork
# --------------------------------------------------------------------------------------------------


def shape_key(d_in: int, d_out: int) -> str:
    return str((int(d_in), int(d_out)))


class Normalizer(nn.Module):
    """Running mean/std over rows, merged batch by batch (never reset)."""

    def __init__(self, width: int, dtype: torch.dtype, eps: float | None = None):
        super().__init__()
        # eps: machine epsilon of the dtype unless given (DESIGN says float32's; pass
        # torch.finfo(torch.float32).eps to use that in a float64 oracle). Not part of the state_dict.
        self._eps = eps
        self.register_buffer("n", torch.zeros(1, dtype=dtype))
        self.register_buffer("mean", torch.zeros(width, dtype=dtype))
        self.register_buffer("var", torch.zeros(width, dtype=dtype))  # running sum M
        self.register_buffer("std", torch.zeros(width, dtype=dtype))

    @property
    def eps(self) -> float:
        return torch.finfo(self.mean.dtype).eps if self._eps is None else float(self._eps)

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Merge the rows of ``x`` ([m, width]) into (n, mean, M) and recompute std."""
        x = x.detach().to(self.mean.dtype)
        m = x.shape[0]
        if m == 0:
            return
        n = self.n.clone()
        batch_mean = x.mean(dim=0)
        if m >= 2:
            batch_var = x.var(dim=0, unbiased=True)
        else:
            # Documented divergence: the reference's unbiased variance of one row is NaN.
            batch_var = torch.zeros_like(batch_mean)
        delta = batch_mean - self.mean
        new_n = n + m
        self.mean += m * delta / new_n
        self.var += m * batch_var + n * m * delta**2 / new_n
        self.n.copy_(new_n)
        self.std.copy_(torch.sqrt(self.var / (self.n - 1 + self.eps)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / (self.std + self.eps)


class Block(nn.Module):
    """h -> h + scale_i * clamp(h @ A @ B + bias, min=0) + shift_i."""

    def __init__(self, width: int, rank: int, n_sites: int, generator: torch.Generator, dtype: torch.dtype):
        super().__init__()
        # Drawn in float32 so float32 and float64 nets from the same seed hold the same values.
        self.A = nn.Parameter(torch.randn(width, rank, generator=generator, dtype=torch.float32).to(dtype))
        self.B = nn.Parameter(torch.zeros(rank, width, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(width, dtype=dtype))
        self.scale = nn.Embedding(n_sites, width, dtype=dtype)
        self.shift = nn.Embedding(n_sites, width, dtype=dtype)
        with torch.no_grad():
            self.scale.weight.fill_(1.0)
            self.shift.weight.fill_(0.0)

    def forward(self, h: torch.Tensor, site_index: int) -> torch.Tensor:
        pre = h @ self.A @ self.B + self.bias
        # torch.clamp(min=0) on purpose: its gradient at exactly 0 is 1 (reference quirk).
        return h + self.scale.weight[site_index] * torch.clamp(pre, min=0) + self.shift.weight[site_index]


class HyperNet(nn.Module):
    def __init__(
        self,
        d_in: int,
        d_out: int,
        n_sites: int,
        *,
        rank: int,
        n_blocks: int,
        lr: float,
        generator: torch.Generator,
        dtype: torch.dtype,
        norm_eps: float | None = None,
    ):
        super().__init__()
        self.d_in = int(d_in)
        self.d_out = int(d_out)
        self.n_sites = int(n_sites)
        width = self.d_in + self.d_out
        self.blocks = nn.ModuleList([Block(width, rank, n_sites, generator, dtype) for _ in range(n_blocks)])
        self.lr = nn.Embedding(n_sites, 1, dtype=dtype)
        self.lamda = nn.Embedding(n_sites, 1, dtype=dtype)
        with torch.no_grad():
            self.lr.weight.fill_(lr)
            self.lamda.weight.fill_(0.0)
        self.normalizer = Normalizer(width, dtype, norm_eps)

    def forward(self, x: torch.Tensor, site_index: int) -> torch.Tensor:
        """Normalise the rows of [k; g] and run the residual blocks (no normaliser update here)."""
        h = self.normalizer(x)
        for block in self.blocks:
            h = block(h, site_index)
        return h


def make_hypernets(
    site_shapes: Sequence[tuple[str, tuple[int, int]]],
    *,
    rank: int,
    n_blocks: int,
    lr: float,
    seed: int,
    dtype: torch.dtype = torch.float32,
    norm_eps: float | None = None,
) -> nn.ModuleDict:
    """One HyperNet per distinct (d_in, d_out), keyed ``str((d_in, d_out))``.

    A single ``torch.Generator(seed)`` draws every ``A``: nets in order of first appearance of their
    shape in ``site_shapes``, blocks in order. ``norm_eps`` overrides the normaliser's eps (default:
    machine epsilon of ``dtype``).
    """
    counts: dict[str, int] = {}
    dims: dict[str, tuple[int, int]] = {}
    for _, (d_in, d_out) in site_shapes:
        key = shape_key(d_in, d_out)
        counts[key] = counts.get(key, 0) + 1
        dims[key] = (int(d_in), int(d_out))
    generator = torch.Generator().manual_seed(seed)
    nets = nn.ModuleDict()
    for key in counts:  # insertion order = order of first appearance
        d_in, d_out = dims[key]
        nets[key] = HyperNet(
            d_in,
            d_out,
            counts[key],
            rank=rank,
            n_blocks=n_blocks,
            lr=lr,
            generator=generator,
            dtype=dtype,
            norm_eps=norm_eps,
        )
    return nets


def site_linear(model: nn.Module, site: str) -> nn.Linear:
    module = model.get_submodule(site)
    assert isinstance(module, nn.Linear), f"{site} is not an nn.Linear"
    return module


def site_shapes_of(model: nn.Module, site_names: Sequence[str]) -> list[tuple[str, tuple[int, int]]]:
    """[(site, (d_in, d_out))] in config order, from the model's linears."""
    out = []
    for site in site_names:
        lin = site_linear(model, site)
        out.append((site, (lin.in_features, lin.out_features)))
    return out


def site_assignment(model: nn.Module, site_names: Sequence[str]) -> dict[str, tuple[str, int]]:
    """site -> (net key, index of the site within its shape group, in config order)."""
    seen: dict[str, int] = {}
    out = {}
    for site, (d_in, d_out) in site_shapes_of(model, site_names):
        key = shape_key(d_in, d_out)
        out[site] = (key, seen.get(key, 0))
        seen[key] = seen.get(key, 0) + 1
    return out


# --------------------------------------------------------------------------------------------------
# Capture
# --------------------------------------------------------------------------------------------------


def _forward_logits(model: nn.Module, mb: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(input_ids=mb["input_ids"], attention_mask=mb["attention_mask"], use_cache=False).logits


def mean_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Micro-batch mean cross-entropy over positions with labels != -100 (no shift)."""
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE)


def row_mask(mb: dict[str, torch.Tensor], token: str) -> torch.Tensor:
    if token == "ans":
        return mb["labels"] != IGNORE
    if token == "all":
        return mb["attention_mask"] == 1
    raise ValueError(f"unknown token selection {token!r}")


def capture(
    model: nn.Module,
    site_names: Sequence[str],
    micro_batches: Sequence[dict[str, Any]],
    token: str = "ans",
    *,
    logits_fn=None,
    create_graph: bool = False,
) -> list[dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """Per micro-batch: site -> (K_mb [n_rows, d_in], G_mb [n_rows, d_out]) at the current weights.

    K: the site linear's input; G: gradient of the micro-batch mean CE (edit labels) w.r.t. the site
    linear's output. Rows: positions selected by ``token`` in row-major (batch, position) order.
    ``logits_fn(mb)`` replaces the plain forward (e.g. a functional call at explicit weights). K and G
    are detached copies, unless ``create_graph``: then they keep their graph (G from
    ``autograd.grad(..., create_graph=True)``) so a later backward differentiates through both.
    """
    model.eval()
    results = []
    for mb in micro_batches:
        inputs: dict[str, torch.Tensor] = {}
        outputs: dict[str, torch.Tensor] = {}
        handles = []
        for site in site_names:

            def hook(module, args, output, site=site, inputs=inputs, outputs=outputs):
                if not output.requires_grad:  # e.g. the caller froze the model's params
                    output.requires_grad_(True)
                inputs[site] = args[0]
                outputs[site] = output

            handles.append(site_linear(model, site).register_forward_hook(hook))
        try:
            with torch.enable_grad():
                logits = _forward_logits(model, mb) if logits_fn is None else logits_fn(mb)
                loss = mean_ce(logits, mb["labels"])
                grads = torch.autograd.grad(
                    loss, [outputs[s] for s in site_names], allow_unused=True, create_graph=create_graph
                )
        finally:
            for h in handles:
                h.remove()
        mask = row_mask(mb, token)
        per_site = {}
        for site, grad in zip(site_names, grads):
            if grad is None:
                grad = torch.zeros_like(outputs[site])
            k, g = inputs[site][mask], grad[mask]
            if not create_graph:
                k, g = k.detach().clone(), g.detach().clone()
            per_site[site] = (k, g)
        results.append(per_site)
    return results


# --------------------------------------------------------------------------------------------------
# Normaliser updates, shift prediction
# --------------------------------------------------------------------------------------------------


def update_normalisers(
    nets: nn.ModuleDict,
    assignment: dict[str, tuple[str, int]],
    site_names: Sequence[str],
    captured: Sequence[dict[str, tuple[torch.Tensor, torch.Tensor]]],
) -> None:
    """Micro-batch major, then site in config order: merge cat([K_mb, G_mb], -1)."""
    for per_site in captured:
        for site in site_names:
            key, _ = assignment[site]
            k, g = per_site[site]
            nets[key].normalizer.update(torch.cat([k, g], dim=-1))


def stack_captured(captured, site_names) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """site -> (K, G) concatenated over the step's micro-batches."""
    out = {}
    for site in site_names:
        K = torch.cat([per_site[site][0] for per_site in captured], dim=0)
        G = torch.cat([per_site[site][1] for per_site in captured], dim=0)
        out[site] = (K, G)
    return out


def predict_shift(net: HyperNet, site_index: int, K: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """S (d_in x d_out) for one site; differentiable w.r.t. the net's params (K, G are constants)."""
    K = K.detach()
    G = G.detach()
    d_in = net.d_in
    out = net(torch.cat([K, G], dim=-1), site_index)
    k_tilde = out[:, :d_in]
    g_tilde = out[:, d_in:]
    lr = net.lr.weight[site_index, 0]
    lamda = net.lamda.weight[site_index, 0]
    coeff = (K * k_tilde).sum(dim=-1, keepdim=True)  # <k_j, k~_j>, raw key
    D = -lr * coeff * g_tilde  # [N, d_out]
    eye = torch.eye(d_in, dtype=K.dtype)
    lhs = K.T @ K + torch.exp(lamda) * eye
    rhs = K.T @ D
    return torch.linalg.solve(lhs, rhs)


def predict_shifts(model, nets, site_names, KG: dict[str, tuple[torch.Tensor, torch.Tensor]]):
    assignment = site_assignment(model, site_names)
    shifts = {}
    for site in site_names:
        key, idx = assignment[site]
        K, G = KG[site]
        shifts[site] = predict_shift(nets[key], idx, K, G)
    return shifts


@torch.no_grad()
def apply_shifts(model: nn.Module, shifts: dict[str, torch.Tensor]) -> None:
    for site, S in shifts.items():
        site_linear(model, site).weight += S.detach().T


def _site_weights(model, site_names) -> dict[str, torch.Tensor]:
    return {s: site_linear(model, s).weight.detach().clone() for s in site_names}


@torch.no_grad()
def _restore_site_weights(model, weights: dict[str, torch.Tensor]) -> None:
    for s, w in weights.items():
        site_linear(model, s).weight.copy_(w)


def normaliser_stats(nets: nn.ModuleDict) -> dict[str, dict[str, torch.Tensor]]:
    return {
        key: {name: getattr(net.normalizer, name).detach().clone() for name in ("n", "mean", "var", "std")}
        for key, net in nets.items()
    }


# --------------------------------------------------------------------------------------------------
# Edit step
# --------------------------------------------------------------------------------------------------


def edit_step(
    model: nn.Module,
    nets: nn.ModuleDict,
    site_names: Sequence[str],
    step_edit_micro_batches: Sequence[dict[str, Any]],
    cfg=None,
) -> dict[str, torch.Tensor]:
    """Capture, update normalisers, predict every site's shift, apply in place. Returns site -> S."""
    token = _cfg(cfg, "token")
    assignment = site_assignment(model, site_names)
    captured = capture(model, site_names, step_edit_micro_batches, token)
    update_normalisers(nets, assignment, site_names, captured)
    KG = stack_captured(captured, site_names)
    with torch.no_grad():
        shifts = predict_shifts(model, nets, site_names, KG)
    apply_shifts(model, shifts)
    return {s: S.detach().clone() for s, S in shifts.items()}


# --------------------------------------------------------------------------------------------------
# Training one sequence
# --------------------------------------------------------------------------------------------------


def kl_before_after(logits_before: torch.Tensor, logits_after: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """KL(p_before || p_after) over the vocabulary, averaged over positions with labels != -100."""
    logp_b = F.log_softmax(logits_before, dim=-1)
    logp_a = F.log_softmax(logits_after, dim=-1)
    kl = (logp_b.exp() * (logp_b - logp_a)).sum(dim=-1)  # [b, L]
    mask = labels != IGNORE
    return kl[mask].sum() / mask.sum()


def step_loss_terms(
    model: nn.Module,
    site_names: Sequence[str],
    shifts: dict[str, torch.Tensor],
    steps: Sequence[dict[str, Any]],
    t: int,
    cfg,
    site_weights: dict[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Loss of step t (0-based) for shifts S_t on top of the site weights W_t.

    Returns gen (time-decayed sum of equiv CE), loc (time-decayed sum of KL, without loc_coef),
    reg (sum_sites ||S||_F^2) and total = gen + loc_coef*loc + reg_coef*reg.
    W_t is the model's current weights (detached: gradients reach only ``shifts``), or
    ``site_weights`` (HF layout ``[d_out, d_in]``, possibly carrying a graph, so that the loss and
    the KL's "before" logits are differentiable through them).
    """
    back_depth = _cfg(cfg, "back_depth")
    time_decay = _cfg(cfg, "time_decay")
    loc_coef = _cfg(cfg, "loc_coef")
    reg_coef = _cfg(cfg, "reg_coef")

    base = {name: p.detach() for name, p in model.named_parameters()}
    before = dict(base)
    before.update({s + ".weight": w for s, w in (site_weights or {}).items()})
    after = dict(before)
    after.update({s + ".weight": before[s + ".weight"] + S.T for s, S in shifts.items()})

    def logits_at(params, mb):
        return torch.func.functional_call(
            model,
            params,
            args=(),
            kwargs=dict(input_ids=mb["input_ids"], attention_mask=mb["attention_mask"], use_cache=False),
        ).logits

    zero = next(iter(base.values())).new_zeros(())
    gen = zero.clone()
    loc = zero.clone()
    for i in range(min(t + 1, back_depth)):
        past = steps[t - i]
        weight = time_decay**i
        gen_i = zero.clone()
        for mb in past["equiv"]:
            gen_i = gen_i + mean_ce(logits_at(after, mb), mb["labels"])
        loc_i = zero.clone()
        for mb in past["unrel"]:
            loc_i = loc_i + kl_before_after(logits_at(before, mb), logits_at(after, mb), mb["labels"])
        gen = gen + weight * gen_i
        loc = loc + weight * loc_i
    reg = zero.clone()
    for S in shifts.values():
        reg = reg + (S**2).sum()
    total = gen + loc_coef * loc + reg_coef * reg
    return {"gen_loss": gen, "loc_loss": loc, "reg": reg, "loss": total}


def _grads_by_name(nets: nn.ModuleDict) -> dict[str, torch.Tensor]:
    out = {}
    for name, p in nets.named_parameters():
        out[name] = p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
    return out


def train_sequence(
    model: nn.Module,
    nets: nn.ModuleDict,
    optimizer: torch.optim.Optimizer,
    steps: Sequence[dict[str, Any]],
    site_names: Sequence[str],
    cfg,
) -> dict[str, Any]:
    """One training "epoch" over a sequence of steps (DESIGN section 3).

    Grads of the hypernet params are zeroed at the start, accumulated over the steps and clipped
    (global norm over all nets) after each step's backward; one optimizer step and zero_grad at the
    end. The model's site weights are restored to their values at entry.

    Returns ``{"steps": [per-step dict], "state_dict": post-optimizer nets state_dict}``, per-step dict:
    ``K``, ``G`` (site -> stacked keys / value-grads), ``shifts`` (site -> S_t), ``gen_loss``,
    ``loc_loss``, ``reg``, ``loss`` (0-d tensors), ``norm_stats`` (net key -> {n, mean, var, std}
    after the step's updates), ``grad_norm`` (global norm of the accumulated grads before this step's
    clip), ``grads`` (param name -> accumulated clipped grad after the step).
    """
    model.eval()
    max_grad_norm = _cfg(cfg, "max_grad_norm")
    token = _cfg(cfg, "token")
    assignment = site_assignment(model, site_names)
    hyper_params = list(nets.parameters())
    base = _site_weights(model, site_names)
    nets.zero_grad(set_to_none=True)
    trace: dict[str, Any] = {"steps": []}
    try:
        for t in range(len(steps)):
            captured = capture(model, site_names, steps[t]["edit"], token)
            update_normalisers(nets, assignment, site_names, captured)
            KG = stack_captured(captured, site_names)
            with torch.enable_grad():
                shifts = predict_shifts(model, nets, site_names, KG)
                terms = step_loss_terms(model, site_names, shifts, steps, t, cfg)
                terms["loss"].backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(hyper_params, max_grad_norm)
            trace["steps"].append(
                {
                    "K": {s: KG[s][0] for s in site_names},
                    "G": {s: KG[s][1] for s in site_names},
                    "shifts": {s: S.detach().clone() for s, S in shifts.items()},
                    **{k: v.detach().clone() for k, v in terms.items()},
                    "norm_stats": normaliser_stats(nets),
                    "grad_norm": grad_norm.detach().clone(),
                    "grads": _grads_by_name(nets),
                }
            )
            apply_shifts(model, shifts)  # W_{t+1} = W_t + S_t (detached)
        optimizer.step()
        optimizer.zero_grad()
    finally:
        _restore_site_weights(model, base)
    trace["state_dict"] = {k: v.detach().clone() for k, v in nets.state_dict().items()}
    return trace


# --------------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------------


@torch.no_grad()
def row_scores(model: nn.Module, mb: dict[str, Any], metric: str = "token") -> torch.Tensor:
    """Per row of a micro-batch: fraction of counted positions that succeed (NaN if none counted)."""
    logits = _forward_logits(model, mb)
    labels = mb["labels"]
    if metric == "token":
        mask = labels != IGNORE
        ok = logits.argmax(dim=-1) == labels
    elif metric == "counterfact":
        # Both padded label arrays are cut to the shorter padded width; a position counts where both are
        # set (the old rows' 0 padding is set), and the divisor is the answer tokens left after the cut.
        old = mb["old_labels"]
        width = min(labels.shape[1], old.shape[1])
        labels, old, logits = labels[:, :width], old[:, :width], logits[:, :width]
        new_logit = logits.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        old_logit = logits.gather(-1, old.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        ok = (new_logit > old_logit) & (old != IGNORE)
        mask = labels != IGNORE
    else:
        raise ValueError(f"unknown metric {metric!r}")
    counted = mask.sum(dim=-1).to(logits.dtype)
    hits = (ok & mask).sum(dim=-1).to(logits.dtype)
    return hits / counted  # 0/0 -> NaN for rows without counted positions


def evaluate(
    model: nn.Module,
    nets: nn.ModuleDict,
    eval_steps: Sequence[dict[str, Any]],
    site_names: Sequence[str],
    cfg=None,
    metric: str = "token",
) -> dict[str, Any]:
    """Lifelong editing from the model's current (base) weights, then ES / GS / LS on the final model.

    Returns ``{"ES", "GS", "LS", "LS_agreement"}`` (python floats; mean over rows, rows without counted
    positions excluded; LS_agreement: the unrel rows' argmax agreement with the unedited model),
    ``"per_row": {"edit", "equiv", "unrel", "agreement"}`` (1-D tensors, all steps' rows in order) and
    ``"shifts"`` (list per step of site -> S). Normalisers stay updated; site weights are restored.
    """
    model.eval()
    base = _site_weights(model, site_names)
    unrel = [mb for step in eval_steps for mb in step["unrel"]]
    with torch.no_grad():
        before = [_forward_logits(model, mb).argmax(dim=-1)[:, : mb["labels"].shape[1]] for mb in unrel]
    try:
        shifts = [edit_step(model, nets, site_names, step["edit"], cfg) for step in eval_steps]
        per_row = {}
        for kind in ("edit", "equiv", "unrel"):
            rows = [row_scores(model, mb, metric) for step in eval_steps for mb in step[kind]]
            per_row[kind] = torch.cat(rows) if rows else torch.zeros(0)
        with torch.no_grad():
            agree = []
            for mb, predicted in zip(unrel, before):
                mask = mb["labels"] != IGNORE
                same = (_forward_logits(model, mb).argmax(dim=-1)[:, : mask.shape[1]] == predicted) & mask
                agree.append(same.sum(dim=-1).to(torch.float64) / mask.sum(dim=-1))
        per_row["agreement"] = torch.cat(agree) if agree else torch.zeros(0)
    finally:
        _restore_site_weights(model, base)

    def mean(x):
        x = x[~torch.isnan(x)]
        return float(x.mean()) if x.numel() else float("nan")

    return {
        "ES": mean(per_row["edit"]),
        "GS": mean(per_row["equiv"]),
        "LS": mean(per_row["unrel"]),
        "LS_agreement": mean(per_row["agreement"]),
        "per_row": per_row,
        "shifts": shifts,
    }
