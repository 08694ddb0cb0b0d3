"""Closed-form partial derivatives of each per-example loss with respect to its log-prob inputs.

Each function takes the same arguments as its objective and returns ``{input_name: ∂L/∂input}``
for the differentiable inputs (``chosen_logps``/``rejected_logps`` for pairs, ``logps`` for
groups), shaped like the input; for groups the loss is the per-prompt loss. These are written
out by hand from the formulas (not via autograd), so the tests can check the two against each
other and the gradient analysis can use them directly.
"""

from __future__ import annotations

import torch
from torch import Tensor

from objectives._math import as_tensor_like, log_odds
from objectives.pairwise import implicit_rewards, kto_z0
from objectives.sampled import advantages, rwr_weights, shaped_rewards


def _pair(g_w: Tensor, g_l: Tensor) -> dict[str, Tensor]:
    return {"chosen_logps": g_w, "rejected_logps": g_l}


def _h(c, r, rc, rr) -> Tensor:
    return implicit_rewards(c, rc).detach() - implicit_rewards(r, rr).detach()


def d_sft(chosen_logps, **_) -> dict[str, Tensor]:
    return {"chosen_logps": -torch.ones_like(chosen_logps)}


def d_dpo(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, *, beta=0.1):
    s = torch.sigmoid(
        -beta * _h(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    )
    return _pair(-beta * s, beta * s)


def d_ipo(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, *, tau=0.1):
    d = 2 * (_h(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps) - 1 / (2 * tau))
    return _pair(d, -d)


def d_slic(chosen_logps, rejected_logps, *_, delta=1.0, lam=0.0, **__):
    active = (delta - (chosen_logps - rejected_logps) > 0).to(chosen_logps.dtype).detach()
    return _pair(-active - lam, active)


def d_orpo(chosen_logps, rejected_logps, *_, lam=0.1, **__):
    c, r = chosen_logps.detach(), rejected_logps.detach()
    s = torch.sigmoid(-(log_odds(c) - log_odds(r)))
    # d log_odds(ℓ)/dℓ = 1/(1 - e^ℓ) = -1/expm1(ℓ)
    return _pair(-1 + lam * s / torch.expm1(c), -lam * s / torch.expm1(r))


def d_simpo(chosen_logps, rejected_logps, *_, beta=2.0, gamma=1.0, **__):
    s = torch.sigmoid(-(beta * (chosen_logps - rejected_logps).detach() - gamma))
    return _pair(-beta * s, beta * s)


def d_asft(chosen_logps, rejected_logps, *_, lam=0.1, **__):
    p_l = rejected_logps.detach().exp()
    return _pair(torch.full_like(chosen_logps, -(1 + lam)), lam * p_l / (1 - p_l))


def d_kto(
    chosen_logps,
    rejected_logps,
    ref_chosen_logps,
    ref_rejected_logps,
    *,
    beta=0.1,
    lam_d=1.0,
    lam_u=1.0,
    kl_estimate=None,
):
    rho_w = implicit_rewards(chosen_logps, ref_chosen_logps).detach()
    rho_l = implicit_rewards(rejected_logps, ref_rejected_logps).detach()
    z0 = as_tensor_like(kl_estimate, rho_w)
    if z0 is None:
        z0 = kto_z0(rho_w, rho_l)
    s_w = torch.sigmoid(beta * (rho_w - z0))
    s_l = torch.sigmoid(beta * (z0 - rho_l))
    return _pair(-lam_d * beta * s_w * (1 - s_w), lam_u * beta * s_l * (1 - s_l))


def d_bon(logps, rewards, **_):
    g = torch.zeros_like(logps)
    return {"logps": g.scatter(-1, rewards.argmax(-1, keepdim=True), -1.0)}


def d_bon_pushdown(logps, rewards, *, beta=0.5, pushdown="worst", **_):
    g = d_bon(logps, rewards)["logps"]
    if pushdown == "worst":
        down = torch.zeros_like(logps).scatter(-1, rewards.argmin(-1, keepdim=True), 1.0)
    else:
        down = (rewards < rewards.max(-1, keepdim=True).values).to(logps.dtype)
        down = down / down.sum(-1, keepdim=True).clamp(min=1)
    return {"logps": g + beta * down}


def d_rwr(logps, rewards, *, beta=0.1, w_max=20.0, normalize=True, **_):
    w = rwr_weights(rewards, beta=beta, w_max=w_max, normalize=normalize)
    return {"logps": -w / logps.shape[-1]}


def d_reinforce(logps, rewards, ref_logps=None, baseline=None, *, kl_coef=0.0, ent_coef=0.0, **_):
    r = shaped_rewards(rewards, logps, ref_logps, kl_coef=kl_coef, ent_coef=ent_coef)
    return {"logps": -advantages(r, baseline) / logps.shape[-1]}


def d_ppo(
    logps, rewards, old_logps, ref_logps=None, baseline=None, *, clip_eps=0.2, kl_coef=0.0, **_
):
    """Per-sequence PPO: the gradient flows only where the unclipped term is the minimum."""
    adv = advantages(shaped_rewards(rewards, old_logps, ref_logps, kl_coef=kl_coef), baseline)
    ratio = torch.exp(logps.detach() - old_logps.detach())
    clipped = ((adv > 0) & (ratio > 1 + clip_eps)) | ((adv < 0) & (ratio < 1 - clip_eps))
    return {"logps": torch.where(clipped, 0.0, -ratio * adv) / logps.shape[-1]}
