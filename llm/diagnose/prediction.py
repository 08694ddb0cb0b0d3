"""The objective side (pure; shared with the tests' one-token softmax): each objective's partials
∂L/∂ℓ_w, ∂L/∂ℓ_l, probability-space partials and push-down ratio at a pair's log-probs, and the
first-order Δℓ of one SGD step from the gradient inner products."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

import objectives


def _convention(obj, hp: dict, logp, n: int):
    """ℓ̄ = ℓ/|y| when the objective, with these hyperparameters, takes per-token means
    (``uses_mean_logps``: ASFT/ORPO/SimPO, or ``length_norm=mean``), else ℓ."""
    return logp / n if obj.uses_mean_logps(hp) else logp


def objective_terms(name: str, hp: dict, q: dict, eta: float) -> dict:
    """Partials, probability-space partials, push-down ratio and the first-order Δℓ of one SGD
    step of size ``eta`` on one pair, from its quantities ``q`` (``pair_quantities``'s keys)."""
    obj = objectives.get(name)
    mean = obj.uses_mean_logps(hp)
    dt = torch.float64
    v_w = _convention(obj, hp, q["logp_w"], q["len_w"])
    v_l = _convention(obj, hp, q["logp_l"], q["len_l"])
    t_w, t_l = torch.tensor([v_w], dtype=dt), torch.tensor([v_l], dtype=dt)
    inputs = {"chosen_logps": t_w, "rejected_logps": t_l}
    if obj.needs_ref:  # the model is its own reference before the first step
        inputs |= {"ref_chosen_logps": t_w.clone(), "ref_rejected_logps": t_l.clone()}
    g = obj.partials(**{k: v for k, v in inputs.items() if k in obj.inputs}, **hp)
    g_w = float(g["chosen_logps"][0])
    g_l = float(g["rejected_logps"][0]) if "rejected_logps" in g else 0.0
    a = g_w / q["len_w"] if mean else g_w  # chain rule: ∂L/∂ℓ = (∂L/∂ℓ̄)/|y|
    b = g_l / q["len_l"] if mean else g_l
    x_w, x_l = t_w.exp(), t_l.exp()
    refs = (x_w, x_l) if obj.needs_ref else (None, None)
    with np.errstate(all="ignore"):
        d_xw, d_xl = objectives.prob_partials(name, x_w, x_l, *refs, **hp)
        ratio = objectives.pushdown_ratio(name, x_w, x_l, *refs, **hp)
    log10_ratio = (
        (math.log(abs(g_l)) - math.log(abs(g_w)) + v_w - v_l) / math.log(10)
        if g_l != 0 and g_w != 0
        else (-math.inf if g_l == 0 else math.inf)
    )
    pred_w = -eta * (a * q["grad_ww"] + b * q["grad_wl"])
    pred_l = -eta * (a * q["grad_wl"] + b * q["grad_ll"])
    return {
        "objective": name,
        "x_kind": "P" if mean else "pi",
        "x_w": float(x_w[0]),
        "x_l": float(x_l[0]),
        "dL_dlogp_w": a,
        "dL_dlogp_l": b,
        "dL_dx_w": _finite(d_xw),
        "dL_dx_l": _finite(d_xl),
        "pushdown": _finite(ratio),
        "log10_pushdown": log10_ratio,
        "eta": eta,
        "pred_dlogp_w": pred_w,
        "pred_dlogp_l": pred_l,
        "pred_displace": pred_w < 0,
    }


def _finite(t: Tensor) -> float:
    v = float(t.reshape(-1)[0])
    return v if math.isfinite(v) else math.nan


def objective_loss(name: str, hp: dict, lw: Tensor, ll: Tensor, nw: int, nl: int, q0: dict):
    """The objective's loss on one pair from live summed log-probs ``lw``, ``ll`` (graphs kept);
    the reference is frozen at the starting values ``q0``."""
    obj = objectives.get(name)
    one = lambda v: torch.as_tensor(v, dtype=torch.float64).reshape(1)  # noqa: E731
    live_w = _convention(obj, hp, lw, nw).reshape(1)
    live_l = _convention(obj, hp, ll, nl).reshape(1)
    inputs = {"chosen_logps": live_w, "rejected_logps": live_l}
    if obj.needs_ref:
        inputs["ref_chosen_logps"] = one(_convention(obj, hp, q0["logp_w"], nw)).to(live_w)
        inputs["ref_rejected_logps"] = one(_convention(obj, hp, q0["logp_l"], nl)).to(live_l)
    return obj(**obj.select_inputs(inputs, hp), **hp).sum()


def loss_partials(name: str, hp: dict, q0: dict) -> tuple[float, float]:
    """(∂L/∂ℓ_w, ∂L/∂ℓ_l) at the start by autograd through the objective itself (on scalar
    leaves ℓ_w, ℓ_l, the mean convention's 1/|y| included): independent of the closed forms."""
    lw = torch.tensor(float(q0["logp_w"]), dtype=torch.float64, requires_grad=True)
    ll = torch.tensor(float(q0["logp_l"]), dtype=torch.float64, requires_grad=True)
    loss = objective_loss(name, hp, lw, ll, q0["len_w"], q0["len_l"], q0)
    a, b = torch.autograd.grad(loss, (lw, ll), allow_unused=True)
    return (0.0 if a is None else float(a)), (0.0 if b is None else float(b))
