"""Objectives on preference pairs (y_w preferred to y_l) and on chosen responses alone.

Every function takes per-example log-probabilities of shape (B,) and returns the unreduced
per-example loss of shape (B,). Pairwise functions share one signature::

    fn(chosen_logps=..., rejected_logps=..., ref_chosen_logps=..., ref_rejected_logps=..., **hp)

Reference-free objectives accept and ignore the ``ref_*`` arguments, so a caller can pass the
same keyword set to every pairwise objective. Whether ``*_logps`` are sums over response tokens
(ℓ) or per-token means (ℓ̄ = ℓ/|y|) is the caller's choice; ORPO, SimPO and ASFT declare in the
registry that they need means. Reference log-probs are detached inside.

Notation (science.md §3): ρ = ℓ - log π_ref, h = ρ_w - ρ_l, P = exp(ℓ̄).

Inputs are checked (``objectives._checks``): every tensor given must have exactly the same shape
(no broadcasting) and no log-probability may be positive beyond rounding; either is a
ValueError naming the function and the argument. Any leading axes (e.g. the bandit's seed axis,
(S, B)) are carried through. NaN inputs are allowed and stay row-local: each loss is elementwise
in its row, and KTO's batch estimate z0 skips non-finite rows (see ``kto_z0``), so a NaN row
gives NaN only in its own loss, which the training loops then detect.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from objectives._checks import logps_not_positive, same_shape
from objectives._math import as_tensor_like, log1mexp, log_odds


def implicit_rewards(logps: Tensor, ref_logps: Tensor | None) -> Tensor:
    """ρ = log π_θ(y) - log π_ref(y) (the reference detached); ℓ itself when there is none."""
    return logps if ref_logps is None else logps - ref_logps.detach()


def _check_pair(
    fn: str, chosen_logps, rejected_logps, ref_chosen_logps=None, ref_rejected_logps=None
) -> None:
    """Same shape for all given inputs, no positive log-probs (ValueError naming ``fn``)."""
    kw = {
        "chosen_logps": chosen_logps,
        "rejected_logps": rejected_logps,
        "ref_chosen_logps": ref_chosen_logps,
        "ref_rejected_logps": ref_rejected_logps,
    }
    same_shape(fn, **kw)
    logps_not_positive(fn, **kw)


def _margin(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps) -> Tensor:
    """h = ρ_w - ρ_l."""
    return implicit_rewards(chosen_logps, ref_chosen_logps) - implicit_rewards(
        rejected_logps, ref_rejected_logps
    )


def kto_z0(rho_w: Tensor, rho_l: Tensor) -> Tensor:
    """KTO's batch KL estimate z0 = max(0, mean of ρ_w and ρ_l over the batch's pairs), detached.

    The batch is the last axis: leading axes (the bandit's seeds, (S, B)) get one z0 each, so a
    seed's run does not depend on which other seeds are batched with it. Only pairs whose ρ_w
    and ρ_l are both finite count (z0 = 0 when none is): a plain mean would let one NaN pair
    make z0, and hence every pair's loss, NaN. With this, a NaN pair yields NaN in its own loss
    only, which the training loops detect, and the other pairs' losses equal those of the batch
    without it. Shape: ``rho_w.shape[:-1] + (1,)`` (a scalar for 0-d inputs).
    """
    if rho_w.dim() == 0:
        return kto_z0(rho_w.reshape(1), rho_l.reshape(1)).reshape(())
    rho_w, rho_l = rho_w.detach(), rho_l.detach()
    ok = torch.isfinite(rho_w) & torch.isfinite(rho_l)
    total = torch.where(ok, rho_w + rho_l, 0.0).sum(-1, keepdim=True)
    count = ok.sum(-1, keepdim=True).clamp(min=1)
    return (total / (2 * count)).clamp(min=0)


def sft(chosen_logps: Tensor, **_: object) -> Tensor:
    """Maximum likelihood on the chosen response: -ℓ_w (Pref-FT when y_w comes from pairs)."""
    logps_not_positive("sft", chosen_logps=chosen_logps)
    return -chosen_logps


def dpo(
    chosen_logps: Tensor,
    rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    *,
    beta: float = 0.1,
) -> Tensor:
    """DPO (Rafailov et al. 2023, eq. 7): -log σ(β h)."""
    _check_pair("dpo", chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    h = _margin(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return -F.logsigmoid(beta * h)


def ipo(
    chosen_logps: Tensor,
    rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    *,
    tau: float = 0.1,
) -> Tensor:
    """IPO (Azar et al. 2023, eq. 17): (h - 1/(2τ))².

    Paper A's bandit uses a margin target of 10, i.e. τ = 0.05. No length normalisation.
    """
    _check_pair("ipo", chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    h = _margin(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return (h - 1.0 / (2.0 * tau)) ** 2


def slic(
    chosen_logps: Tensor,
    rejected_logps: Tensor,
    ref_chosen_logps: Tensor | None = None,
    ref_rejected_logps: Tensor | None = None,
    *,
    delta: float = 1.0,
    lam: float = 0.0,
) -> Tensor:
    """SLiC-HF hinge (Zhao et al. 2023): max(0, δ - (ℓ_w - ℓ_l)) - λ ℓ_w (λ: SFT regulariser)."""
    _check_pair("slic", chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return F.relu(delta - (chosen_logps - rejected_logps)) - lam * chosen_logps


def orpo(
    chosen_logps: Tensor,
    rejected_logps: Tensor,
    ref_chosen_logps: Tensor | None = None,
    ref_rejected_logps: Tensor | None = None,
    *,
    lam: float = 0.1,
) -> Tensor:
    """ORPO (Hong et al. 2024): -ℓ̄_w - λ log σ(log odds(P_w) - log odds(P_l)). Needs means."""
    _check_pair("orpo", chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    ratio = log_odds(chosen_logps) - log_odds(rejected_logps)
    return -chosen_logps - lam * F.logsigmoid(ratio)


def simpo(
    chosen_logps: Tensor,
    rejected_logps: Tensor,
    ref_chosen_logps: Tensor | None = None,
    ref_rejected_logps: Tensor | None = None,
    *,
    beta: float = 2.0,
    gamma: float = 1.0,
) -> Tensor:
    """SimPO (Meng et al. 2024, eq. 6): -log σ(β ℓ̄_w - β ℓ̄_l - γ). Needs means."""
    _check_pair("simpo", chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return -F.logsigmoid(beta * (chosen_logps - rejected_logps) - gamma)


def asft(
    chosen_logps: Tensor,
    rejected_logps: Tensor,
    ref_chosen_logps: Tensor | None = None,
    ref_rejected_logps: Tensor | None = None,
    *,
    lam: float = 0.1,
) -> Tensor:
    """ASFT (Wang et al. 2024): -ℓ̄_w - λ[log σ(r_w) + log σ(-r_l)], r = log(P/(1-P)).

    Since σ(r) = P this equals -(1+λ) ℓ̄_w - λ log(1 - P_l), the form computed here (log1mexp,
    finite as P_l -> 1). The push-down weight on ℓ̄_l is λ P_l/(1 - P_l): bounded as P_l -> 0.
    Needs per-token means: with summed log-probs P_l ≈ 0 and the push-down vanishes.
    λ is not given in the paper's text available to us; 0.1 is our default.
    """
    _check_pair("asft", chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return -(1.0 + lam) * chosen_logps - lam * log1mexp(rejected_logps)


def kto(
    chosen_logps: Tensor,
    rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    *,
    beta: float = 0.1,
    lam_d: float = 1.0,
    lam_u: float = 1.0,
    kl_estimate: Tensor | float | None = None,
) -> Tensor:
    """KTO (Ethayarajh et al. 2024) on paired data, chosen desirable and rejected undesirable.

    λ_D (1 - σ(β(ρ_w - z0))) + λ_U (1 - σ(β(z0 - ρ_l))), with z0 a detached KL estimate. When
    ``kl_estimate`` is None, z0 is ``kto_z0``: max(0, mean of ρ over the batch's chosen and
    rejected responses) — our batch-level stand-in for the paper's mismatched-pair estimate —
    taken over the finite pairs only, so that a NaN pair gives NaN in its own loss alone.
    """
    _check_pair("kto", chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    rho_w = implicit_rewards(chosen_logps, ref_chosen_logps)
    rho_l = implicit_rewards(rejected_logps, ref_rejected_logps)
    z0 = as_tensor_like(kl_estimate, rho_w)
    if z0 is None:
        z0 = kto_z0(rho_w, rho_l)
    return lam_d * (1 - torch.sigmoid(beta * (rho_w - z0))) + lam_u * (
        1 - torch.sigmoid(beta * (z0 - rho_l))
    )
