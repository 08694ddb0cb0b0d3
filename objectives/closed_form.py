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

from objectives._math import log_odds
from objectives.online import group_advantages
from objectives.pairwise import implicit_rewards, kto_reference_point, orpo
from objectives.sampled import advantages, rwr_weights, shaped_rewards
from objectives.trl_pairwise import aot_pairs, bco_shift


def _pair(g_w: Tensor, g_l: Tensor) -> dict[str, Tensor]:
    return {"chosen_logps": g_w, "rejected_logps": g_l}


def _h(c, r, rc, rr) -> Tensor:
    return implicit_rewards(c, rc).detach() - implicit_rewards(r, rr).detach()


def d_sft(chosen_logps, **_) -> dict[str, Tensor]:
    return {"chosen_logps": -torch.ones_like(chosen_logps)}


def d_dpo(
    chosen_logps,
    rejected_logps,
    ref_chosen_logps,
    ref_rejected_logps,
    *,
    beta=0.1,
    length_norm="sum",
):
    s = torch.sigmoid(
        -beta * _h(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    )
    return _pair(-beta * s, beta * s)


def d_ipo(
    chosen_logps,
    rejected_logps,
    ref_chosen_logps,
    ref_rejected_logps,
    *,
    tau=0.1,
    length_norm="sum",
):
    d = 2 * (_h(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps) - 1 / (2 * tau))
    return _pair(d, -d)


def d_slic(chosen_logps, rejected_logps, *_, delta=1.0, lam=0.0, **__):
    active = (delta - (chosen_logps - rejected_logps) > 0).to(chosen_logps.dtype).detach()
    return _pair(-active - lam, active)


def d_orpo(
    chosen_logps, rejected_logps, ref_chosen_logps=None, ref_rejected_logps=None,
    chosen_full_logps=None, *, lam=0.1, nll="response",
):  # fmt: skip
    c, r = chosen_logps.detach(), rejected_logps.detach()
    s = torch.sigmoid(-(log_odds(c) - log_odds(r)))
    # d log_odds(ℓ)/dℓ = 1/(1 - e^ℓ) = -1/expm1(ℓ)
    odds_w, odds_l = lam * s / torch.expm1(c), -lam * s / torch.expm1(r)
    if nll == "response":
        return _pair(-1 + odds_w, odds_l)
    # nll="all": the NLL term is -chosen_full_logps, the odds-ratio term stays on the responses
    if chosen_full_logps is None:
        orpo(chosen_logps, rejected_logps, nll=nll)  # the function's one-line error
    return _pair(odds_w, odds_l) | {"chosen_full_logps": -torch.ones_like(chosen_full_logps)}


def d_simpo(chosen_logps, rejected_logps, *_, beta=2.0, gamma=1.0, **__):
    s = torch.sigmoid(-(beta * (chosen_logps - rejected_logps).detach() - gamma))
    return _pair(-beta * s, beta * s)


def d_asft(chosen_logps, rejected_logps, *_, lam=0.1, beta=1.0, **__):
    c, r = chosen_logps.detach(), rejected_logps.detach()
    if not isinstance(beta, Tensor) and beta == 1.0:
        p_l = r.exp()
        return _pair(torch.full_like(chosen_logps, -(1 + lam)), lam * p_l / (1 - p_l))
    # tempered: d/dℓ log σ(±β r) = ±β σ(∓β r) r'(ℓ), r'(ℓ) = 1/(1 - e^ℓ) = -1/expm1(ℓ)
    s_w = torch.sigmoid(-beta * log_odds(c))
    s_l = torch.sigmoid(beta * log_odds(r))
    return _pair(-1 + lam * beta * s_w / torch.expm1(c), -lam * beta * s_l / torch.expm1(r))


def d_kto(
    chosen_logps,
    rejected_logps,
    ref_chosen_logps,
    ref_rejected_logps,
    kl_logps=None,
    ref_kl_logps=None,
    *,
    beta=0.1,
    lam_d=1.0,
    lam_u=1.0,
    kl_estimate=None,
    z0="batch",
    form="paired",
):
    rho_w = implicit_rewards(chosen_logps, ref_chosen_logps).detach()
    rho_l = implicit_rewards(rejected_logps, ref_rejected_logps).detach()
    z = kto_reference_point("kto", rho_w, rho_l, kl_logps, ref_kl_logps, kl_estimate, z0)
    s_w = torch.sigmoid(beta * (rho_w - z))
    s_l = torch.sigmoid(beta * (z - rho_l))
    scale = 0.5 if form == "unpaired" else 1.0
    return _pair(-scale * lam_d * beta * s_w * (1 - s_w), scale * lam_u * beta * s_l * (1 - s_l))


# ---------------------------------------------------------------- TRL's other DPO loss types


def _rhos(c, r, rc, rr) -> tuple[Tensor, Tensor]:
    return implicit_rewards(c, rc).detach(), implicit_rewards(r, rr).detach()


def d_hinge(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, *, beta=0.1):
    h = _h(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    g = beta * (1 - beta * h > 0).to(h.dtype)
    return _pair(-g, g)


def d_nca_pair(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, *, beta=0.1):
    # d/dx [-log σ(x)] = -σ(-x);  d/dx [-log σ(-x)] = σ(x)
    rho_w, rho_l = _rhos(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    r_w, r_l = beta * rho_w, beta * rho_l
    g_w = beta * (-torch.sigmoid(-r_w) + 0.5 * torch.sigmoid(r_w))
    return _pair(g_w, 0.5 * beta * torch.sigmoid(r_l))


def d_bco_pair(
    chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, *, beta=0.1, delta=0.0
):
    rho_w, rho_l = _rhos(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    d = bco_shift(rho_w, rho_l, beta, delta)
    return _pair(-beta * torch.sigmoid(-(beta * rho_w - d)), beta * torch.sigmoid(beta * rho_l - d))


def d_robust(
    chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, *, beta=0.1, eps=0.1
):
    x = beta * _h(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    g = -beta * ((1 - eps) * torch.sigmoid(-x) + eps * torch.sigmoid(x)) / (1 - 2 * eps)
    return _pair(g, -g)


def d_exo_pair(
    chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, *, beta=0.1, eps=1e-3
):
    # with x = βh: d/dx Σ q log(q/p) = q_w q_l (x + log(ε/(1-ε)))
    x = beta * _h(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    e = torch.as_tensor(eps, dtype=x.dtype, device=x.device)
    g = beta * torch.sigmoid(x) * torch.sigmoid(-x) * (x + torch.log(e) - torch.log1p(-e))
    return _pair(g, -g)


def d_sppo_hard(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, *, beta=0.1):
    rho_w, rho_l = _rhos(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return _pair(2 * (rho_w - 0.5 / beta), 2 * (rho_l + 0.5 / beta))


def d_apo_zero(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, *, beta=0.1):
    rho_w, rho_l = _rhos(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    s_w, s_l = torch.sigmoid(beta * rho_w), torch.sigmoid(beta * rho_l)
    return _pair(-beta * s_w * (1 - s_w), beta * s_l * (1 - s_l))


def d_apo_down(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, *, beta=0.1):
    rho_w, rho_l = _rhos(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    s_w, s_h = torch.sigmoid(beta * rho_w), torch.sigmoid(beta * (rho_w - rho_l))
    return _pair(beta * s_w * (1 - s_w) - beta * s_h * (1 - s_h), beta * s_h * (1 - s_h))


def d_discopop(
    chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, *, beta=0.1, tau=0.05
):
    # L(x) = (1-m)·A + m·E, A = -log σ(x), E = e^{-x}, m = σ(x/τ):
    # dL/dx = -(1-m) σ(-x) - m E + (E - A) m (1-m)/τ, with m E = exp(log σ(x/τ) - x)
    x = beta * _h(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    m, one_m = torch.sigmoid(x / tau), torch.sigmoid(-x / tau)
    mE = torch.exp(torch.nn.functional.logsigmoid(x / tau) - x)
    A = torch.nn.functional.softplus(-x)
    g = beta * (-one_m * torch.sigmoid(-x) - mE + (mE - m * A) * one_m / tau)
    return _pair(g, -g)


def _d_smoothed_logistic(x: Tensor, eps) -> Tensor:
    """d/dx of -(1-ε) log σ(x) - ε log σ(-x)."""
    return -(1 - eps) * torch.sigmoid(-x) + eps * torch.sigmoid(x)


def _d_aot(paired: bool, c, r, rc, rr, beta, eps) -> dict[str, Tensor]:
    """∂(Σ_rows loss)/∂ℓ of row j: the derivative at the rank that row's input holds; 0 for
    rows left out of the ranking (their loss is NaN)."""
    name = "aot" if paired else "aot_unpaired"
    delta, a_idx, b_idx, ok, scalar = aot_pairs(
        name, *(x.detach() for x in (c, r, rc, rr)), paired=paired, check=False
    )
    g_sorted = beta * _d_smoothed_logistic(beta * delta, eps)
    g_a = torch.zeros_like(g_sorted).scatter(-1, a_idx, g_sorted)
    if paired:  # a = ℓ_w - ℓ_l
        g_w, g_l = g_a, -g_a
    else:  # a = ρ_w, b = ρ_l, δ = a - b
        g_w, g_l = g_a, -torch.zeros_like(g_sorted).scatter(-1, b_idx, g_sorted)
    g_w, g_l = (torch.where(ok, g, torch.zeros_like(g)) for g in (g_w, g_l))
    if scalar:
        g_w, g_l = g_w.reshape(()), g_l.reshape(())
    return _pair(g_w, g_l)


def d_aot(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, *, beta=0.1, eps=0.0):
    args = (chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return _d_aot(True, *args, beta, eps)


def d_aot_unpaired(
    chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, *, beta=0.1, eps=0.0
):
    args = (chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return _d_aot(False, *args, beta, eps)


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


def _clip_mask(ratio, adv, clip_eps, clip_eps_high):
    """Where -min(w·Â, clip(w)·Â) takes the clipped, constant branch (no gradient)."""
    return ((adv > 0) & (ratio > 1 + clip_eps_high)) | ((adv < 0) & (ratio < 1 - clip_eps))


def d_grpo(logps, rewards, old_logps=None, ref_logps=None, *, loss_type="dapo", scale="group",
           std="sample", eps=1e-4, importance="token", clip_eps=0.2, clip_eps_high=0.2, beta=0.0,
           kl_correction=True, max_completion_length=None, **_):  # fmt: skip
    """Per-sequence inputs (T = 1, where every loss type but dr_grpo's 1/L is the mean)."""
    adv = group_advantages(rewards, scale=scale, std=std, eps=eps)
    ratio = torch.exp(logps.detach() - (logps if old_logps is None else old_logps).detach())
    g = torch.where(_clip_mask(ratio, adv, clip_eps, clip_eps_high), 0.0, -ratio * adv)
    if beta:  # ∂k3/∂ℓ = 1 - exp(ℓ_ref - ℓ); with kl_correction, ∂(w·k3)/∂ℓ = w·(k3 + ∂k3/∂ℓ)
        d = ref_logps.detach() - logps.detach()
        dk3 = 1 - torch.exp(d)
        g = g + beta * (ratio * (torch.exp(d) - d - 1 + dk3) if kl_correction else dk3)
    length = 1 if loss_type != "dr_grpo" or max_completion_length is None else max_completion_length
    return {"logps": g / (logps.shape[-1] * length)}


def d_rloo(logps, rewards, old_logps=None, ref_logps=None, *, beta=0.05, normalize=False,
           clip_eps=0.2, clip_eps_high=0.2, **_):  # fmt: skip
    """Per-sequence inputs; Â from the KL-shaped rewards (ℓ_old - ℓ_ref), detached."""
    old = (logps if old_logps is None else old_logps).detach()
    r = rewards - beta * (old - ref_logps) if beta else rewards
    adv = group_advantages(r, baseline="loo", scale="none")
    if normalize:
        flat = adv.flatten(-2)
        adv = (adv - flat.mean(-1)[..., None, None]) / (flat.std(-1)[..., None, None] + 1e-4)
    ratio = torch.exp(logps.detach() - old)
    g = torch.where(_clip_mask(ratio, adv, clip_eps, clip_eps_high), 0.0, -ratio * adv)
    return {"logps": g / logps.shape[-1]}
