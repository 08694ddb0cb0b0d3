"""The pairwise losses of TRL's ``DPOTrainer`` that are not DPO, IPO or SFT, as pure functions.

Same conventions as ``objectives.pairwise``: per-example log-probs of shape (B,) (any leading
axes carried through), summed over response tokens unless the caller chooses otherwise, the
shared keyword signature ``fn(chosen_logps=..., rejected_logps=..., ref_chosen_logps=...,
ref_rejected_logps=..., **hp)``, reference log-probs detached inside, the unreduced (B,) loss,
inputs checked by ``objectives._checks``. β multiplies the implicit reward ρ = ℓ - ℓ_ref (or the
margin h = ρ_w - ρ_l) exactly where TRL puts it, so that with TRL's hyperparameter values these
give TRL's per-sequence losses (``tests/test_trl_parity.py``).

Every loss here is elementwise in its row except AOT's two losses, which sort over the batch
(the last axis): there a NaN row is kept out of the sorting (see ``_sorted_pairing``) so that it
makes only its own loss NaN.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from objectives._math import as_tensor_like
from objectives.pairwise import check_pair, implicit_rewards, pair_margin


def _rhos(c, r, rc, rr) -> tuple[Tensor, Tensor]:
    return implicit_rewards(c, rc), implicit_rewards(r, rr)


def hinge(
    chosen_logps: Tensor,
    rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    *,
    beta: float = 0.1,
) -> Tensor:
    """Reference-based hinge, max(0, 1 - β h) (SLiC's hinge on DPO's implicit margin, as in RSO,
    Liu et al. 2024, and TRL's ``loss_type="hinge"``). Without a reference it is β times
    ``slic`` with δ = 1/β."""
    check_pair("hinge", chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    h = pair_margin(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return F.relu(1 - beta * h)


def nca_pair(
    chosen_logps: Tensor,
    rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    *,
    beta: float = 0.1,
) -> Tensor:
    """NCA on pairs (Chen et al. 2024, *Noise Contrastive Alignment*), TRL's ``nca_pair``:
    -log σ(β ρ_w) - ½ log σ(-β ρ_w) - ½ log σ(-β ρ_l). Each response's own ρ, not only the
    margin: it raises ρ_w towards a bounded value and lowers ρ_l."""
    check_pair("nca_pair", chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    rho_w, rho_l = _rhos(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    r_w, r_l = beta * rho_w, beta * rho_l
    return -F.logsigmoid(r_w) - 0.5 * F.logsigmoid(-r_w) - 0.5 * F.logsigmoid(-r_l)


def bco_shift(rho_w: Tensor, rho_l: Tensor, beta, delta: Tensor | float | None) -> Tensor:
    """BCO's detached reward shift δ: ``delta`` itself, or (None) the mean of the batch's rewards
    β ρ_w and β ρ_l over the pairs whose both rewards are finite (last axis; 0 when none is)."""
    given = as_tensor_like(delta, rho_w)
    if given is not None:
        return given
    if rho_w.dim() == 0:
        return bco_shift(rho_w.reshape(1), rho_l.reshape(1), beta, None).reshape(())
    r_w, r_l = (beta * rho_w).detach(), (beta * rho_l).detach()
    ok = torch.isfinite(r_w) & torch.isfinite(r_l)
    total = torch.where(ok, r_w + r_l, 0.0).sum(-1, keepdim=True)
    return total / (2 * ok.sum(-1, keepdim=True).clamp(min=1))


def bco_pair(
    chosen_logps: Tensor,
    rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    *,
    beta: float = 0.1,
    delta: Tensor | float | None = 0.0,
) -> Tensor:
    """BCO on pairs (Jung et al. 2024, *Binary Classifier Optimization*):
    -log σ(β ρ_w - δ) - log σ(-(β ρ_l - δ)), chosen classified positive, rejected negative.

    The paper's δ is a running mean of the rewards β ρ, a state a pure function cannot keep, so
    δ is a detached hyperparameter in reward units: a number or tensor (a caller's running
    mean); None for this batch's mean of β ρ_w and β ρ_l (``bco_shift``; a one-batch running
    mean). The default 0 is TRL 1.16's ``loss_type="bco_pair"``, which has no shift.
    """
    check_pair("bco_pair", chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    rho_w, rho_l = _rhos(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    d = bco_shift(rho_w, rho_l, beta, delta)
    return -F.logsigmoid(beta * rho_w - d) - F.logsigmoid(-(beta * rho_l - d))


def robust(
    chosen_logps: Tensor,
    rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    *,
    beta: float = 0.1,
    eps: float = 0.1,
) -> Tensor:
    """Robust DPO (Chowdhury et al. 2024, *Provably Robust DPO*), TRL's ``robust``: the DPO loss
    debiased for labels flipped with probability ε ∈ [0, ½),
    [-(1-ε) log σ(β h) + ε log σ(-β h)] / (1 - 2ε). ε = 0 is DPO; 0.1 is the paper's typical
    value (TRL's ``label_smoothing`` is this ε)."""
    check_pair("robust", chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    x = beta * pair_margin(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return (-(1 - eps) * F.logsigmoid(x) + eps * F.logsigmoid(-x)) / (1 - 2 * eps)


def exo_pair(
    chosen_logps: Tensor,
    rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    *,
    beta: float = 0.1,
    eps: float = 1e-3,
) -> Tensor:
    """EXO on pairs (Ji et al. 2024, *Towards Efficient Exact Optimization of Language Model
    Alignment*, eq. 16 with K = 2), TRL's ``exo_pair``: KL(q ‖ p) between q = (σ(β h), σ(-β h))
    and the smoothed label p = (1-ε, ε): q_w (log q_w - log(1-ε)) + q_l (log q_l - log ε).
    ε ∈ (0, 1) (TRL's ``label_smoothing``; the paper suggests 1e-3, our default)."""
    check_pair("exo_pair", chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    x = beta * pair_margin(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    e = torch.as_tensor(eps, dtype=x.dtype, device=x.device)
    q_w, q_l = torch.sigmoid(x), torch.sigmoid(-x)
    return q_w * (F.logsigmoid(x) - torch.log1p(-e)) + q_l * (F.logsigmoid(-x) - torch.log(e))


def sppo_hard(
    chosen_logps: Tensor,
    rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    *,
    beta: float = 0.1,
) -> Tensor:
    """SPPO with hard win probabilities (Wu et al. 2024, *Self-Play Preference Optimization*,
    eq. 4.7 with P = 1 for y_w and 0 for y_l), TRL's ``sppo_hard``:
    (ρ_w - 1/(2β))² + (ρ_l + 1/(2β))². β = 1/η of the paper. ρ is against the reference (the
    previous iterate π_t in the paper)."""
    check_pair("sppo_hard", chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    rho_w, rho_l = _rhos(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    half = 0.5 / beta
    return (rho_w - half) ** 2 + (rho_l + half) ** 2


def apo_zero(
    chosen_logps: Tensor,
    rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    *,
    beta: float = 0.1,
) -> Tensor:
    """APO-zero (D'Oosterlinck et al. 2024, *Anchored Preference Optimization*, eq. 7), TRL's
    ``apo_zero``: 1 - σ(β ρ_w) + σ(β ρ_l). Raises y_w and lowers y_l, each anchored at ρ = 0
    (for chosen responses better than the model's own)."""
    check_pair("apo_zero", chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    rho_w, rho_l = _rhos(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return 1 - torch.sigmoid(beta * rho_w) + torch.sigmoid(beta * rho_l)


def apo_down(
    chosen_logps: Tensor,
    rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    *,
    beta: float = 0.1,
) -> Tensor:
    """APO-down (D'Oosterlinck et al. 2024, eq. 8), TRL's ``apo_down``:
    σ(β ρ_w) + 1 - σ(β h). Lowers y_w and y_l, y_l more (for chosen responses worse than the
    model's own)."""
    check_pair("apo_down", chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    rho_w, rho_l = _rhos(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return torch.sigmoid(beta * rho_w) + 1 - torch.sigmoid(beta * (rho_w - rho_l))


def discopop(
    chosen_logps: Tensor,
    rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    *,
    beta: float = 0.1,
    tau: float = 0.05,
) -> Tensor:
    """DiscoPOP, the log-ratio modulated loss (Lu et al. 2024, *Discovering Preference
    Optimization Algorithms with and for Large Language Models*, eq. 5), TRL's ``discopop``:
    with x = β h and m = σ(x/τ), (1 - m)·(-log σ(x)) + m·e^{-x}, a blend of the logistic (DPO)
    and exponential losses. Computed as σ(-x/τ)·softplus(-x) + exp(log σ(x/τ) - x), finite
    where the literal form gives ∞·0 (x → -∞ with τ < 1). τ (TRL's ``discopop_tau``): the
    paper's 0.05."""
    check_pair("discopop", chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    x = beta * pair_margin(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return torch.sigmoid(-x / tau) * F.softplus(-x) + torch.exp(F.logsigmoid(x / tau) - x)


def _smoothed_logistic(x: Tensor, eps) -> Tensor:
    """-(1-ε) log σ(x) - ε log σ(-x): the logistic loss with label smoothing ε."""
    return -(1 - eps) * F.logsigmoid(x) - eps * F.logsigmoid(-x)


def _sorted_pairing(a: Tensor, b: Tensor, ok: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Sort ``a`` and ``b`` separately along the last axis with the rows where ``ok`` is False
    moved to the end of both (so the finite rows pair up exactly as in the batch without the
    others). Returns (sorted a - sorted b, 0 past the finite rows; the rank order of ``a``;
    of ``b``; the mask of finite sorted positions)."""
    inf = torch.full_like(a.detach(), math.inf)
    a_sorted, a_idx = torch.sort(torch.where(ok, a, inf), dim=-1, stable=True)
    b_sorted, b_idx = torch.sort(torch.where(ok, b, inf), dim=-1, stable=True)
    ok_sorted = torch.isfinite(a_sorted.detach()) & torch.isfinite(b_sorted.detach())
    delta = torch.where(ok_sorted, a_sorted - b_sorted, torch.zeros_like(a_sorted))
    return delta, a_idx, b_idx, ok_sorted


def aot_pairs(
    fn: str, c, r, rc, rr, paired: bool, check: bool = True
) -> tuple[Tensor, Tensor, Tensor, Tensor, bool]:
    """The sorted differences of ``aot``/``aot_unpaired``; the last axis is the batch (a 0-d
    input is a batch of one). Returns (δ, rank order giving row j's position, the other rank
    order, finite-row mask, whether the input was 0-d). ``check=False`` (the closed-form
    partials, which like the others accept broadcastable inputs) broadcasts instead of
    refusing different shapes."""
    if check:
        check_pair(fn, c, r, rc, rr)
    else:
        c, r, rc, rr = torch.broadcast_tensors(*(torch.as_tensor(x) for x in (c, r, rc, rr)))
    scalar = c.dim() == 0
    if scalar:
        c, r, rc, rr = (x.reshape(1) for x in (c, r, rc, rr))
    ok = torch.isfinite(c) & torch.isfinite(r) & torch.isfinite(rc) & torch.isfinite(rr)
    if paired:  # policy margins against reference margins
        a, b = c - r, (rc - rr).detach()
    else:  # chosen log-ratios against rejected log-ratios
        a, b = implicit_rewards(c, rc), implicit_rewards(r, rr)
    delta, a_idx, b_idx, _ = _sorted_pairing(a, b, ok.detach())
    return delta, a_idx, b_idx, ok, scalar


def _unsort(sorted_vals: Tensor, idx: Tensor) -> Tensor:
    """The value at each row's sorted position: out[..., idx[k]] = sorted_vals[..., k]."""
    return torch.zeros_like(sorted_vals).scatter(-1, idx, sorted_vals)


def aot(
    chosen_logps: Tensor,
    rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    *,
    beta: float = 0.1,
    eps: float = 0.0,
) -> Tensor:
    """AOT, paired (Melnyk et al. 2024, *Distributional Preference Alignment of LLMs via Optimal
    Transport*), TRL's ``aot``: the batch's policy margins ℓ_w - ℓ_l and reference margins are
    sorted separately and matched by rank (the 1-D optimal transport plan); with δ_k = k-th
    smallest policy margin - k-th smallest reference margin, each rank k gets the smoothed
    logistic loss -(1-ε) log σ(β δ_k) - ε log σ(-β δ_k) (ε: TRL's ``label_smoothing``).

    Couples the batch (the last axis). Row j's entry is the loss of the rank its policy margin
    holds, so the batch mean is TRL's loss; ∂(sum)/∂ℓ of row j is that rank's derivative. A
    row with a non-finite input is left out of the ranking and gets NaN.
    """
    delta, a_idx, _, ok, scalar = aot_pairs(
        "aot", chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, paired=True
    )
    loss = _unsort(_smoothed_logistic(beta * delta, eps), a_idx)
    loss = torch.where(ok, loss, torch.full_like(loss, math.nan))
    return loss.reshape(()) if scalar else loss


def aot_unpaired(
    chosen_logps: Tensor,
    rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    *,
    beta: float = 0.1,
    eps: float = 0.0,
) -> Tensor:
    """AOT, unpaired (Melnyk et al. 2024), TRL's ``aot_unpaired``: the batch's chosen log-ratios
    ρ_w and rejected log-ratios ρ_l are sorted separately and matched by rank,
    δ_k = k-th smallest ρ_w - k-th smallest ρ_l, each rank with the smoothed logistic loss of
    ``aot``. Row j's entry is the loss of the rank its ρ_w holds (so the batch mean is TRL's);
    its ρ_l enters the rank it holds among the ρ_l. Non-finite rows are left out and get NaN.
    """
    delta, a_idx, _, ok, scalar = aot_pairs(
        "aot_unpaired",
        chosen_logps,
        rejected_logps,
        ref_chosen_logps,
        ref_rejected_logps,
        paired=False,
    )
    loss = _unsort(_smoothed_logistic(beta * delta, eps), a_idx)
    loss = torch.where(ok, loss, torch.full_like(loss, math.nan))
    return loss.reshape(()) if scalar else loss
