"""Where does the mass go? One-step mass accounting and paper A's Lemma 6.2, for any policy
given as a function of a flat parameter vector θ returning log π(·|x) over K responses.

``flat_policy`` turns a torch module (tabular, MLP, anything) plus a fixed input into such a
function. First-order changes use Δθ = -η ∇_θ L and a Jacobian-vector product
Δ log π = J Δθ; ``exact=True`` takes the actual step instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev, jvp

import objectives

LogpFn = Callable[[Tensor], Tensor]  # θ (D,) -> log π (K,)


def flat_policy(module: nn.Module, *inputs: Tensor) -> tuple[Tensor, LogpFn]:
    """(θ0, logp_fn) for ``log_softmax(module(*inputs))`` flattened to shape (K,)."""
    names = [n for n, _ in module.named_parameters()]
    shapes = [p.shape for _, p in module.named_parameters()]
    theta0 = torch.cat([p.detach().reshape(-1) for p in module.parameters()])

    def logp_fn(theta: Tensor) -> Tensor:
        params, offset = {}, 0
        for name, shape in zip(names, shapes):
            size = shape.numel()
            params[name] = theta[offset : offset + size].view(shape)
            offset += size
        return torch.log_softmax(functional_call(module, params, inputs), -1).reshape(-1)

    return theta0, logp_fn


def batch_loss(objective: str, logp_K: Tensor, ref_logp_K: Tensor, hparams=None, **arms):
    """Mean loss of ``objective`` on arms of one context (chosen/rejected, or arms+rewards)."""
    inputs = objectives.tabular_inputs(objective, logp_K, ref_logp_K, **arms)
    return objectives.get(objective)(**inputs, **(hparams or {})).mean()


@dataclass
class MassAccount:
    """First-order (or exact) change of one step. ``delta_p`` sums to ~0 over the K responses:
    ``chosen_gain`` + ``others_change`` - ``rejected_loss`` = 0 to first order."""

    delta_logp: Tensor
    delta_p: Tensor
    chosen_gain: float  # Σ Δπ over the batch's chosen responses
    rejected_loss: float  # -Σ Δπ over the rejected responses
    others_change: float  # Σ Δπ over every other response: where freed mass goes


def one_step_mass(
    objective: str,
    theta: Tensor,
    logp_fn: LogpFn,
    ref_logp_K: Tensor,
    lr: float,
    chosen: Tensor,
    rejected: Tensor | None = None,
    hparams=None,
    exact: bool = False,
) -> MassAccount:
    """Account for one gradient step of ``objective`` on the pairs (chosen[i], rejected[i])."""
    arms = {"chosen": chosen} if rejected is None else {"chosen": chosen, "rejected": rejected}
    g = torch.func.grad(lambda t: batch_loss(objective, logp_fn(t), ref_logp_K, hparams, **arms))(
        theta
    )
    step = -lr * g
    logp = logp_fn(theta)
    if exact:
        d_logp = logp_fn(theta + step) - logp
        d_p = logp_fn(theta + step).exp() - logp.exp()
    else:
        d_logp = jvp(logp_fn, (theta,), (step,))[1]
        d_p = logp.exp() * d_logp
    w_mask = torch.zeros_like(d_p, dtype=torch.bool).index_fill(0, chosen, True)
    l_mask = torch.zeros_like(w_mask)
    if rejected is not None:
        l_mask = l_mask.index_fill(0, rejected, True) & ~w_mask
    return MassAccount(
        d_logp.detach(),
        d_p.detach(),
        d_p[w_mask].sum().item(),
        -d_p[l_mask].sum().item(),
        d_p[~w_mask & ~l_mask].sum().item(),
    )


def lemma_6_2(
    theta: Tensor,
    logp_fn: LogpFn,
    chosen: Tensor,
    rejected: Tensor,
    c1: float = 1.0,
    c2: float = 1.0,
    lr: float = 0.1,
) -> dict[str, float | bool]:
    """Paper A, Lemma 6.2: θ ← θ + η E[c₁∇ℓ(y_w) - c₂∇ℓ(y_l)] with c₂ > 0 versus c₂ = 0.

    Returns the next-step mean margin ℓ_w - ℓ_l, ℓ_w and ℓ_l under both updates (actual steps),
    the inner product E[∇ℓ(y_w)]ᵀE[∇ℓ(y_l)] of the mean gradients (the quantity that decides
    the first-order comparison; we read the lemma's E[∇ℓ(y_w)ᵀ∇ℓ(y_l)] this way) and the mean of
    per-pair inner products, and which of the lemma's inequalities hold: the margin one
    (expected for small η whenever ‖g_l‖² ≥ g_wᵀg_l), and, when the inner product is ≤ 0, ℓ_w
    higher and ℓ_l lower with c₂ > 0.
    """
    jac_KD = jacrev(logp_fn)(theta)
    g_w, g_l = jac_KD[chosen], jac_KD[rejected]
    gw_mean, gl_mean = g_w.mean(0), g_l.mean(0)
    inner = (gw_mean @ gl_mean).item()

    def after(c2_: float) -> tuple[float, float, float]:
        logp = logp_fn(theta + lr * (c1 * gw_mean - c2_ * gl_mean))
        lw, ll = logp[chosen].mean().item(), logp[rejected].mean().item()
        return lw - ll, lw, ll

    (m_neg, lw_neg, ll_neg), (m_sft, lw_sft, ll_sft) = after(c2), after(0.0)
    out = {
        "margin_with_c2": m_neg,
        "margin_c2_zero": m_sft,
        "logp_w_with_c2": lw_neg,
        "logp_w_c2_zero": lw_sft,
        "logp_l_with_c2": ll_neg,
        "logp_l_c2_zero": ll_sft,
        "inner_product": inner,
        "per_pair_inner_product": (g_w * g_l).sum(-1).mean().item(),
        "first_order_margin_gain": lr * c2 * (gl_mean @ gl_mean - gw_mean @ gl_mean).item(),
        "margin_holds": m_neg >= m_sft,
    }
    if inner <= 0:
        out["logp_w_holds"] = lw_neg >= lw_sft
        out["logp_l_holds"] = ll_neg <= ll_sft
    return out
