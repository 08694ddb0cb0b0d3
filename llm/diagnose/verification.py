"""``--verify``: take the predicted step for real (one pair, or with ``--batch-step`` the batch of
all pairs) and measure Δℓ_w, Δℓ_l; the weights are restored exactly afterwards."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import Tensor

import objectives
from llm.diagnose.gradients import gram, param_grads, rejected_prompt, response_forward
from llm.diagnose.prediction import loss_partials, objective_loss


def verify_pair(
    model,
    params: list[Tensor],
    ex,
    name: str,
    hp: dict,
    eta: float,
    steps: int,
    q0: dict,
    device,
    grads: tuple[list[Tensor], list[Tensor]] | None = None,
) -> dict:
    """Take ``steps`` plain SGD steps θ ← θ − η∇_θL on the pair, measure Δℓ_w, Δℓ_l after the
    first and the last, then restore the weights exactly.

    ∇_θL comes from autograd through the objective. With ``grads`` = (∇ℓ_w, ∇ℓ_l) already
    taken at the start (``pair_quantities``), the first step uses ∇_θL = a∇ℓ_w + b∇ℓ_l with
    (a, b) = ``loss_partials`` (the chain rule, exact), which saves its two backward passes;
    later steps always run the full backward."""
    saved = [p.detach().clone() for p in params]
    out: dict[str, float] = {}
    needs_l = objectives.get(name).data == "pairs"
    first = 0
    try:
        if grads is not None:
            a, b = loss_partials(name, hp, q0)
            with torch.no_grad():
                for p, g_w, g_l in zip(params, *grads):
                    p.add_(g_w, alpha=-eta * a).add_(g_l, alpha=-eta * b)
            first = 1
        for s in range(first, steps + 1):
            train = s < steps
            with torch.set_grad_enabled(train):
                lw, nw, _ = response_forward(model, ex.prompt_ids, ex.chosen_ids, device)
            with torch.set_grad_enabled(train and needs_l):
                ll, nl, _ = response_forward(model, rejected_prompt(ex), ex.rejected_ids, device)
            if s == 1:
                out["meas_dlogp_w"] = lw.item() - q0["logp_w"]
                out["meas_dlogp_l"] = ll.item() - q0["logp_l"]
            if s == steps and steps > 1:
                out["meas_dlogp_w_k"] = lw.item() - q0["logp_w"]
                out["meas_dlogp_l_k"] = ll.item() - q0["logp_l"]
            if train:
                loss = objective_loss(name, hp, lw, ll, nw, nl, q0)
                step = param_grads(loss, params)
                with torch.no_grad():
                    for p, g in zip(params, step):
                        p.add_(g.to(p.dtype), alpha=-eta)
    finally:
        with torch.no_grad():
            for p, v in zip(params, saved):
                p.copy_(v)
    out["meas_displace"] = out["meas_dlogp_w"] < 0
    return out


def batch_terms(
    df: pd.DataFrame,
    M: Tensor,
    model,
    params: list[Tensor],
    examples,
    names: tuple[str, ...],
    hparams: dict[str, dict],
    eta: float,
    verify: bool,
    device,
) -> pd.DataFrame:
    """One SGD step on the batch's mean loss, θ ← θ − η(1/n)Σ_j (a_j∇ℓ_w,j + b_j∇ℓ_l,j), per
    objective. ``M`` stacks (∇ℓ_w,i, ∇ℓ_l,i) of pair i as rows 2i, 2i+1. First order, from
    the Gram matrix K = M Mᵀ: Δℓ_w,i ≈ −(η/n) Σ_j (a_j⟨∇ℓ_w,i,∇ℓ_w,j⟩ + b_j⟨∇ℓ_w,i,∇ℓ_l,j⟩)
    (a_j, b_j: the closed forms, as per pair); with ``verify`` the step is taken (a_j, b_j by
    autograd through the loss, ``loss_partials``) and every pair's Δℓ measured, then undone."""
    n = len(examples)
    K = gram(M)
    out = []
    for name in names:
        g = df[df.objective == name]
        coef = torch.zeros(2 * n, dtype=torch.float64)
        coef[0::2] = torch.tensor(g.dL_dlogp_w.to_numpy(), dtype=torch.float64)
        coef[1::2] = torch.tensor(g.dL_dlogp_l.to_numpy(), dtype=torch.float64)
        pred = -eta / n * (K @ coef)
        cols = {"batch_pred_dlogp_w": pred[0::2].numpy(), "batch_pred_dlogp_l": pred[1::2].numpy()}
        if verify:
            q0s = g.to_dict("records")
            for i, q0 in enumerate(q0s):
                coef[2 * i], coef[2 * i + 1] = loss_partials(name, hparams[name], q0)
            step = (coef.to(M.dtype) @ M) * (-eta / n)
            w, l = _measure_after(model, params, step, examples, device)
            cols["batch_meas_dlogp_w"] = w - g.logp_w.to_numpy()
            cols["batch_meas_dlogp_l"] = l - g.logp_l.to_numpy()
        out.append(g.assign(**cols))
    return pd.concat(out).sort_index()


def _measure_after(model, params, step: Tensor, examples, device) -> tuple[np.ndarray, ...]:
    """(ℓ_w, ℓ_l) of every pair after θ ← θ + ``step`` (flattened over ``params``); the weights
    are restored exactly afterwards."""
    saved = [p.detach().clone() for p in params]
    try:
        with torch.no_grad():
            offset = 0
            for p in params:
                p.add_(step[offset : offset + p.numel()].view_as(p).to(p))
                offset += p.numel()
            w = [response_forward(model, e.prompt_ids, e.chosen_ids, device)[0] for e in examples]
            l = [
                response_forward(model, rejected_prompt(e), e.rejected_ids, device)[0]
                for e in examples
            ]
    finally:
        with torch.no_grad():
            for p, v in zip(params, saved):
                p.copy_(v)
    return np.array([float(x) for x in w]), np.array([float(x) for x in l])
