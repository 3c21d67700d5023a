"""Independent PyTorch implementations of the methods RLEdit is compared with (DESIGN.md section 4b),
used as test oracles.

Written from the reference's semantics (its `BaseEditor.train`, MEND's and MALMEN's shift prediction
and hypernetwork update, `run_sequential_retrain`), on the RLEdit oracle's capture, normaliser and
losses (`tests/oracle/torch_rledit.py`, whose conventions hold here: `S` is `d_in x d_out`, a site's
weight is `linear.weight` `[d_out, d_in]`, steps are `{"edit", "equiv", "unrel": [micro-batch]}`).
Every method's network gradient is taken as the reference takes it, not by differentiating our
formulas: first `G_W = dL/dW` at the edited weights `W + S` (the loss backward with the shift
applied), then

* MEND:   `<G_W, S(net)>` backpropagated, with `S = -lr * sum_j k~_j g~_j^T` (so `lamda` gets none);
* MALMEN: the implicit gradients of the solve `S = A^-1 K^T D`, `A = K^T K + e^lamda I`:
  `dL/dD = K A^-1 G_W` (then backpropagated into the net through `D`) and
  `dL/dlamda = -e^lamda <A^-1 G_W, S>`.

Schemes: `train_per_batch` (the reference's, each batch on the model as it is, one Adam step each)
and `train_sequence` (RLEdit's window loss, accumulated and clipped per step, one Adam step); then
`lifelong` editing with an optional retraining every k steps, and `finetune` (ft).

Differences from the reference are its bugs, absent here (README "Methods compared"): a ragged last
micro-batch's value-gradients are used (not zeros), and retraining every k steps keeps the trained
network for all k steps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from tests.oracle import torch_rledit as orc


def network_output(net: orc.HyperNet, site_index: int, K: torch.Tensor, G: torch.Tensor):
    """`(k~ [N, d_in], g~ [N, d_out])` of the net on the normalised rows `[k; g]`."""
    out = net(torch.cat([K.detach(), G.detach()], dim=-1), site_index)
    return out[:, : net.d_in], out[:, net.d_in :]


def value_diffs(net: orc.HyperNet, site_index: int, K: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """MALMEN's (and RLEdit's) `D [N, d_out]`: `d_j = -lr * <k_j, k~_j> * g~_j`."""
    k_tilde, g_tilde = network_output(net, site_index, K, G)
    return -net.lr.weight[site_index, 0] * (K.detach() * k_tilde).sum(-1, keepdim=True) * g_tilde


def ridge_matrix(net: orc.HyperNet, site_index: int, K: torch.Tensor) -> torch.Tensor:
    eye = torch.eye(net.d_in, dtype=K.dtype)
    return K.T @ K + torch.exp(net.lamda.weight[site_index, 0]).detach() * eye


def malmen_shift(net: orc.HyperNet, site_index: int, K: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """`S = (K^T K + e^lamda I)^-1 K^T D` with the d_in x d_in solve."""
    return torch.linalg.solve(ridge_matrix(net, site_index, K), K.T @ value_diffs(net, site_index, K, G))


def mend_shift(net: orc.HyperNet, site_index: int, K: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """`S = -lr * sum_j k~_j g~_j^T`."""
    k_tilde, g_tilde = network_output(net, site_index, K, G)
    return -net.lr.weight[site_index, 0] * k_tilde.T @ g_tilde


def malmen_backward(net, site_index, K, G, grad_w, shift) -> None:
    """Accumulates MALMEN's network gradient of `<G_W, S>` into `net` (module docstring)."""
    with torch.no_grad():
        a_inv_g = torch.linalg.solve(ridge_matrix(net, site_index, K), grad_w)
        lamda_grad = -torch.exp(net.lamda.weight[site_index, 0]) * (a_inv_g * shift).sum()
    (lamda_grad * net.lamda.weight[site_index, 0]).backward()
    (K @ a_inv_g * value_diffs(net, site_index, K, G)).sum().backward()


def mend_backward(net, site_index, K, G, grad_w, shift) -> None:
    (grad_w * mend_shift(net, site_index, K, G)).sum().backward()


SHIFTS: dict[str, Callable] = {"solve": malmen_shift, "sum": mend_shift}
BACKWARDS: dict[str, Callable] = {"solve": malmen_backward, "sum": mend_backward}


def capture_step(model, nets, site_names, micro_batches, token):
    """Capture at the current weights, update the normalisers: `{site: (K, G)}`."""
    captured = orc.capture(model, site_names, micro_batches, token)
    orc.update_normalisers(nets, orc.site_assignment(model, site_names), site_names, captured)
    return orc.stack_captured(captured, site_names)


def predict(model, nets, site_names, KG, shift: str) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return {
            site: SHIFTS[shift](nets[key], idx, *KG[site])
            for site, (key, idx) in orc.site_assignment(model, site_names).items()
        }


def step_gradient(model, nets, site_names, steps, t, cfg, *, token, shift):
    """Step t of `steps` at the model's weights: capture, update the normalisers, predict the shifts,
    then add the network gradient of the step loss (`orc.step_loss_terms` with `cfg`) to the nets'
    `.grad`, the reference's way (module docstring). Returns `(shifts, loss terms)`."""
    KG = capture_step(model, nets, site_names, steps[t]["edit"], token)
    shifts = predict(model, nets, site_names, KG, shift)
    leaves = {s: S.clone().requires_grad_(True) for s, S in shifts.items()}
    terms = orc.step_loss_terms(model, site_names, leaves, steps, t, cfg)
    grads_w = dict(zip(site_names, torch.autograd.grad(terms["loss"], [leaves[s] for s in site_names])))
    for site, (key, idx) in orc.site_assignment(model, site_names).items():
        BACKWARDS[shift](nets[key], idx, *KG[site], grads_w[site], shifts[site])
    return shifts, {k: v.detach() for k, v in terms.items()}


def _record(nets, shifts, terms, grad_norm) -> dict:
    grads = {n: (p.grad if p.grad is not None else torch.zeros_like(p)).clone() for n, p in nets.named_parameters()}
    return {"shifts": shifts, **terms, "grad_norm": grad_norm.detach(), "grads": grads}


def _state(nets) -> dict:
    return {k: v.detach().clone() for k, v in nets.state_dict().items()}


def train_per_batch(model, nets, optimizer, steps, site_names, *, loc_coef, max_grad_norm, token, shift):
    """The per_batch scheme: every step of `steps` edited on the model as it is (never shifted here),
    one clipped Adam step each. Returns per step `{"shifts", "gen_loss", "loc_loss", "grad_norm",
    "grads" (clipped, by state-dict name), "state_dict" (after the step)}`."""
    model.eval()
    cfg = dict(back_depth=1, time_decay=1.0, loc_coef=loc_coef, reg_coef=0.0)
    trace = []
    for t in range(len(steps)):
        optimizer.zero_grad(set_to_none=True)
        shifts, terms = step_gradient(model, nets, site_names, steps, t, cfg, token=token, shift=shift)
        grad_norm = torch.nn.utils.clip_grad_norm_(nets.parameters(), max_grad_norm)
        trace.append(_record(nets, shifts, terms, grad_norm))
        optimizer.step()
        trace[-1]["state_dict"] = _state(nets)
    return trace


def train_sequence(model, nets, optimizer, steps, site_names, cfg, *, max_grad_norm, token, shift):
    """RLEdit's sequence scheme for any shift: the steps edited one after the other, each step's
    window loss (`cfg`: back_depth, time_decay, loc_coef, reg_coef) differentiated through its own
    shift, the gradients accumulated and the accumulator clipped after every step, one Adam step at
    the end. Returns `{"steps": [train_per_batch's per-step dict, "grads" accumulated], "state_dict"}`;
    the site weights are restored."""
    model.eval()
    base = {s: orc.site_linear(model, s).weight.detach().clone() for s in site_names}
    optimizer.zero_grad(set_to_none=True)
    trace = {"steps": []}
    try:
        for t in range(len(steps)):
            shifts, terms = step_gradient(model, nets, site_names, steps, t, cfg, token=token, shift=shift)
            grad_norm = torch.nn.utils.clip_grad_norm_(nets.parameters(), max_grad_norm)
            trace["steps"].append(_record(nets, shifts, terms, grad_norm))
            orc.apply_shifts(model, shifts)
        optimizer.step()
    finally:
        with torch.no_grad():
            for s, w in base.items():
                orc.site_linear(model, s).weight.copy_(w)
    trace["state_dict"] = _state(nets)
    return trace


def scores(model, steps, metric: str = "token") -> dict:
    """ES / GS / LS (means over rows) and the per-row scores of every kind on the model as it is."""
    per_row = {
        kind: torch.cat([orc.row_scores(model, mb, metric) for step in steps for mb in step[kind]])
        for kind in ("edit", "equiv", "unrel")
    }
    means = {name: float(per_row[kind].mean()) for kind, name in (("edit", "ES"), ("equiv", "GS"), ("unrel", "LS"))}
    return {**means, "per_row": per_row}


def lifelong(
    model, nets_for: Callable, eval_steps, site_names, *, token, shift, every: int, train=None, metric="token"
):
    """Lifelong editing from the model's weights: before steps 0, k, 2k, ... (k = `every`) the network
    `nets_for(r)` (r = 0, 1, ...) is taken and, with `train(nets)`, trained on the model as edited so
    far; it edits the next k steps. Returns `scores` of the final model plus `"shifts"` per step.
    The site weights are restored afterwards."""
    base = {s: orc.site_linear(model, s).weight.detach().clone() for s in site_names}
    shifts = []
    try:
        for r, start in enumerate(range(0, len(eval_steps), every)):
            nets = nets_for(r)
            if train is not None:
                train(nets)
            for step in eval_steps[start : start + every]:
                KG = capture_step(model, nets, site_names, step["edit"], token)
                shifts.append(predict(model, nets, site_names, KG, shift))
                orc.apply_shifts(model, shifts[-1])
        out = scores(model, eval_steps, metric)
    finally:
        with torch.no_grad():
            for s, w in base.items():
                orc.site_linear(model, s).weight.copy_(w)
    return {**out, "shifts": shifts}


def finetune(model, eval_steps: Sequence[dict], site_names, *, steps: int, lr: float, metric="token"):
    """ft: for every step in order, `steps` Adam steps (fresh, torch's defaults) on the site weights
    for the sum over micro-batches of the mean answer CE of the edit pairs. Returns `scores` of the
    final model plus per step `"shifts"` (`W_after - W_before`, `d_in x d_out`) and `"losses"` (before
    each Adam step). The site weights are restored afterwards."""
    model.eval()
    weights = [orc.site_linear(model, s).weight for s in site_names]
    base = [w.detach().clone() for w in weights]
    others = [p for p in model.parameters() if all(p is not w for w in weights)]
    for p in others:
        p.requires_grad_(False)
    shifts, losses = [], []
    try:
        for step in eval_steps:
            before = [w.detach().clone() for w in weights]
            optimizer = torch.optim.Adam(weights, lr=lr)
            step_losses = []
            for _ in range(steps):
                optimizer.zero_grad(set_to_none=True)
                loss = sum(orc.mean_ce(orc._forward_logits(model, mb), mb["labels"]) for mb in step["edit"])
                loss.backward()
                optimizer.step()
                step_losses.append(loss.detach())
            shifts.append({s: (w.detach() - b).T.clone() for s, w, b in zip(site_names, weights, before)})
            losses.append(torch.stack(step_losses))
        out = scores(model, eval_steps, metric)
    finally:
        with torch.no_grad():
            for w, b in zip(weights, base):
                w.copy_(b)
        for p in others:
            p.requires_grad_(True)
    return {**out, "shifts": shifts, "losses": losses}
