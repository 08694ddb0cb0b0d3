"""Objectives on preference pairs (y_w preferred to y_l) and on chosen responses alone.

Every function takes per-example log-probabilities of shape (B,) and returns the unreduced
per-example loss of shape (B,). Pairwise functions share one signature::

    fn(chosen_logps=..., rejected_logps=..., ref_chosen_logps=..., ref_rejected_logps=..., **hp)

Reference-free objectives accept and ignore the ``ref_*`` arguments, so a caller can pass the
same keyword set to every pairwise objective. Whether ``*_logps`` are sums over response tokens
(ℓ) or per-token means (ℓ̄ = ℓ/|y|) is the caller's choice; ORPO, SimPO and ASFT declare in the
registry that they need means, and SFT, DPO and IPO take a ``length_norm`` switch ("sum", the
default, or "mean": TRL's ``sft``/``sigmoid_norm``/``ipo``) that tells the caller which to pass
(``Objective.uses_mean_logps``). Reference log-probs are detached inside.

Notation (docs/science.md §3): ρ = ℓ - log π_ref, h = ρ_w - ρ_l, P = exp(ℓ̄).

Inputs are checked (``objectives._checks``): every input given must be a floating
``torch.Tensor``, all on one device and of one dtype (else a TypeError, ``same_kind``); every
tensor given must have exactly the same shape (no broadcasting) and no log-probability may be
positive beyond rounding (else a ValueError). Each error names the function and the argument.
Any leading axes (e.g. the bandit's seed axis, (S, B)) are carried through. NaN inputs are
allowed and stay row-local: each loss is elementwise in its row, and KTO's batch estimate z0
skips non-finite rows (see ``kto_z0``), so a NaN row gives NaN only in its own loss, which the
training loops then detect.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from errors import UserError
from objectives._checks import logps_not_positive, same_kind, same_shape
from objectives._math import as_tensor_like, log1mexp, log_odds


def implicit_rewards(logps: Tensor, ref_logps: Tensor | None) -> Tensor:
    """ρ = log π_θ(y) - log π_ref(y) (the reference detached); ℓ itself when there is none."""
    return logps if ref_logps is None else logps - ref_logps.detach()


def check_pair(
    fn: str,
    chosen_logps,
    rejected_logps,
    ref_chosen_logps=None,
    ref_rejected_logps=None,
    **extra: Tensor | None,
) -> None:
    """One kind for all given inputs, ``extra`` included (TypeError: ``same_kind``); the same
    shape for the four pair inputs and no positive log-probs among them (ValueError). Every
    error names ``fn``. ``extra``: inputs of other shapes (ORPO's ``chosen_full_logps``, KTO's
    ``kl_logps``), whose shape and values are checked where they are used; their kind is
    checked here, used or not, so a given input of the wrong kind is always refused."""
    kw = {
        "chosen_logps": chosen_logps,
        "rejected_logps": rejected_logps,
        "ref_chosen_logps": ref_chosen_logps,
        "ref_rejected_logps": ref_rejected_logps,
    }
    same_shape(fn, **kw)
    if extra:
        same_kind(fn, chosen_logps=chosen_logps, **extra)
    logps_not_positive(fn, **kw)


def pair_margin(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps) -> Tensor:
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


LENGTH_NORMS = ("sum", "mean")


def _length_norm(fn: str, length_norm: str) -> None:
    """A ValueError unless ``length_norm`` is one of ``LENGTH_NORMS``."""
    if length_norm not in LENGTH_NORMS:
        raise ValueError(f"{fn}: length_norm must be 'sum' or 'mean', got {length_norm!r}")


def sft(chosen_logps: Tensor, *, length_norm: str = "sum", **_: object) -> Tensor:
    """Maximum likelihood on the chosen response: -ℓ_w (Pref-FT when y_w comes from pairs).

    ``length_norm`` is a declaration for the caller, not a change of formula: "sum" (default)
    asks for ℓ_w summed over response tokens, "mean" for ℓ̄_w = ℓ_w/|y_w| (the registry's
    ``uses_mean_logps``; the bandit, with one-arm responses, is unaffected). TRL's DPO
    ``loss_type="sft"`` is the "mean" form with one difference: TRL averages over all chosen
    tokens of the batch (a token-weighted mean), this is the per-example ℓ̄_w, so the two batch
    means agree when the chosen responses have equal lengths.
    """
    _length_norm("sft", length_norm)
    same_shape("sft", chosen_logps=chosen_logps)
    logps_not_positive("sft", chosen_logps=chosen_logps)
    return -chosen_logps


def dpo(
    chosen_logps: Tensor,
    rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    *,
    beta: float = 0.1,
    length_norm: str = "sum",
) -> Tensor:
    """DPO (Rafailov et al. 2023, eq. 7): -log σ(β h).

    ``length_norm`` tells the caller which log-probs to pass (the formula is the same): "sum"
    (default, the paper, TRL's ``loss_type="sigmoid"``) or "mean", per-token means of policy and
    reference, so h = ρ_w/|y_w| - ρ_l/|y_l| (TRL's ``loss_type="sigmoid_norm"``).
    """
    _length_norm("dpo", length_norm)
    check_pair("dpo", chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    h = pair_margin(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return -F.logsigmoid(beta * h)


def ipo(
    chosen_logps: Tensor,
    rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    *,
    tau: float = 0.1,
    length_norm: str = "sum",
) -> Tensor:
    """IPO (Azar et al. 2023, eq. 17): (h - 1/(2τ))².

    Paper A's bandit uses a margin target of 10, i.e. τ = 0.05. ``length_norm`` tells the caller
    which log-probs to pass (the formula on its inputs is the same): "sum" (default, the paper's
    sequence log-probs, no length normalisation) or "mean", per-token means of policy and
    reference, h = ρ_w/|y_w| - ρ_l/|y_l|: TRL's ``loss_type="ipo"``, whose β is this τ.
    """
    _length_norm("ipo", length_norm)
    check_pair("ipo", chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    h = pair_margin(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
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
    check_pair("slic", chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return F.relu(delta - (chosen_logps - rejected_logps)) - lam * chosen_logps


def orpo(
    chosen_logps: Tensor,
    rejected_logps: Tensor,
    ref_chosen_logps: Tensor | None = None,
    ref_rejected_logps: Tensor | None = None,
    chosen_full_logps: Tensor | None = None,
    *,
    lam: float = 0.1,
    nll: str = "response",
) -> Tensor:
    """ORPO (Hong et al. 2024): -ℓ̄_w - λ log σ(log odds(P_w) - log odds(P_l)). Needs means.

    ``nll`` picks the tokens of the NLL term: "response" (default, what this repository does):
    -ℓ̄_w, the mean over the chosen response's tokens; "all": -``chosen_full_logps``, the mean
    log-prob per token of the whole chosen sequence, prompt included (every token after the
    first), which the caller must pass: TRL's ``ORPOTrainer`` (whose β is this λ). TRL averages
    that NLL over all chosen tokens of the batch; the per-example form here gives the same batch
    mean when the chosen sequences have equal lengths. The odds-ratio term uses ℓ̄ of the
    responses in both forms.
    """
    check_pair(
        "orpo",
        chosen_logps,
        rejected_logps,
        ref_chosen_logps,
        ref_rejected_logps,
        chosen_full_logps=chosen_full_logps,
    )
    ratio = log_odds(chosen_logps) - log_odds(rejected_logps)
    if nll == "response":
        return -chosen_logps - lam * F.logsigmoid(ratio)
    if nll != "all":
        raise ValueError(f"orpo: nll must be 'response' or 'all', got {nll!r}")
    if chosen_full_logps is None:
        raise UserError(
            "orpo: nll='all' needs chosen_full_logps (the mean log-prob of prompt and response), "
            "which this caller did not pass; use nll='response'"
        )
    same_shape("orpo", chosen_logps=chosen_logps, chosen_full_logps=chosen_full_logps)
    logps_not_positive("orpo", chosen_full_logps=chosen_full_logps)
    return -chosen_full_logps - lam * F.logsigmoid(ratio)


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
    check_pair("simpo", chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return -F.logsigmoid(beta * (chosen_logps - rejected_logps) - gamma)


def asft(
    chosen_logps: Tensor,
    rejected_logps: Tensor,
    ref_chosen_logps: Tensor | None = None,
    ref_rejected_logps: Tensor | None = None,
    *,
    lam: float = 0.1,
    beta: float = 1.0,
) -> Tensor:
    """ASFT (Wang et al. 2024): -ℓ̄_w - λ[log σ(β r_w) + log σ(-β r_l)], r = log(P/(1-P)).

    With β = 1 (the default, the untempered form) σ(r) = P, so this equals
    -(1+λ) ℓ̄_w - λ log(1 - P_l), the form computed then (log1mexp, finite as P_l -> 1). The
    push-down weight on ℓ̄_l is λ P_l/(1 - P_l): bounded as P_l -> 0. ``beta`` ≠ 1 is the
    tempered form, the reward r scaled by β (σ(β r) = P^β/(P^β + (1-P)^β)); its push-down weight
    is λ β σ(β r_l)/(1 - P_l). Needs per-token means: with summed log-probs P_l ≈ 0 and the
    push-down vanishes. λ is not given in the paper's text available to us; 0.1 is our default.
    TRL has no ASFT loss.
    """
    check_pair("asft", chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    if not isinstance(beta, Tensor) and beta == 1.0:
        return -(1.0 + lam) * chosen_logps - lam * log1mexp(rejected_logps)
    r_w, r_l = log_odds(chosen_logps), log_odds(rejected_logps)
    return -chosen_logps - lam * (F.logsigmoid(beta * r_w) + F.logsigmoid(-beta * r_l))


def kto_mismatched_z0(kl_logps: Tensor, ref_kl_logps: Tensor) -> Tensor:
    """KTO's z0 from mismatched pairs (TRL's estimate): max(0, mean of ℓ - ℓ_ref over the batch's
    mismatched (x_i, y_j), i ≠ j, completions), detached; the batch is the last axis, the mean
    is over the finite entries only (0 when none is). Shape ``kl_logps.shape[:-1] + (1,)``."""
    if kl_logps.dim() == 0:
        return kto_mismatched_z0(kl_logps.reshape(1), ref_kl_logps.reshape(1)).reshape(())
    d = kl_logps.detach() - ref_kl_logps.detach()
    ok = torch.isfinite(d)
    total = torch.where(ok, d, 0.0).sum(-1, keepdim=True)
    return (total / ok.sum(-1, keepdim=True).clamp(min=1)).clamp(min=0)


def kto_reference_point(
    fn: str,
    rho_w: Tensor,
    rho_l: Tensor,
    kl_logps: Tensor | None,
    ref_kl_logps: Tensor | None,
    kl_estimate: Tensor | float | None,
    z0: str,
) -> Tensor:
    """The detached z0 of ``kto``: ``kl_estimate`` when given, else by the ``z0`` rule."""
    given = as_tensor_like(kl_estimate, rho_w)
    if given is not None:
        return given
    if z0 == "batch":
        return kto_z0(rho_w, rho_l)
    if z0 != "mismatched":
        raise ValueError(f"{fn}: z0 must be 'batch' or 'mismatched', got {z0!r}")
    if kl_logps is None or ref_kl_logps is None:
        raise UserError(
            f"{fn}: z0='mismatched' needs kl_logps and ref_kl_logps (log-probs of mismatched "
            "prompt-completion pairs under the policy and the reference), which this caller "
            "did not pass; use z0='batch'"
        )
    same_shape(fn, kl_logps=kl_logps, ref_kl_logps=ref_kl_logps)
    lead, kl_lead = tuple(rho_w.shape[:-1]), tuple(kl_logps.shape[:-1])
    if rho_w.dim() and kl_lead != lead:
        raise ValueError(
            f"{fn}: kl_logps must have the leading shape {lead} of the pair inputs (any batch "
            f"length), got {tuple(kl_logps.shape)}"
        )
    logps_not_positive(fn, kl_logps=kl_logps, ref_kl_logps=ref_kl_logps)
    out = kto_mismatched_z0(kl_logps, ref_kl_logps)
    return out.reshape(()) if rho_w.dim() == 0 else out


def kto(
    chosen_logps: Tensor,
    rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    kl_logps: Tensor | None = None,
    ref_kl_logps: Tensor | None = None,
    *,
    beta: float = 0.1,
    lam_d: float = 1.0,
    lam_u: float = 1.0,
    kl_estimate: Tensor | float | None = None,
    z0: str = "batch",
    form: str = "paired",
) -> Tensor:
    """KTO (Ethayarajh et al. 2024) on paired data, chosen desirable and rejected undesirable.

    λ_D (1 - σ(β(ρ_w - z0))) + λ_U (1 - σ(β(z0 - ρ_l))), with z0 a detached KL estimate:
    ``kl_estimate`` when given; otherwise by the ``z0`` rule. "batch" (default): ``kto_z0``,
    max(0, mean of ρ over the batch's chosen and rejected responses) — our batch-level stand-in
    for the paper's mismatched-pair estimate — taken over the finite pairs only, so that a NaN
    pair gives NaN in its own loss alone. "mismatched": TRL's estimate, max(0, batch mean of
    ``kl_logps - ref_kl_logps``), the log-probs of mismatched (x_i, y_j) completions, which the
    caller passes (last axis: any length; TRL pairs x_i with y_{i-1}).

    ``form``: "paired" (default) is the per-pair sum above; "unpaired" is TRL's ``KTOTrainer``,
    which treats the pair's two responses as separate examples and averages over them: half the
    sum, so the batch mean of this equals TRL's mean over the batch's 2B responses.
    """
    check_pair(
        "kto",
        chosen_logps,
        rejected_logps,
        ref_chosen_logps,
        ref_rejected_logps,
        kl_logps=kl_logps,
        ref_kl_logps=ref_kl_logps,
    )
    if form not in ("paired", "unpaired"):
        raise ValueError(f"kto: form must be 'paired' or 'unpaired', got {form!r}")
    rho_w = implicit_rewards(chosen_logps, ref_chosen_logps)
    rho_l = implicit_rewards(rejected_logps, ref_rejected_logps)
    ref_point = kto_reference_point("kto", rho_w, rho_l, kl_logps, ref_kl_logps, kl_estimate, z0)
    loss = lam_d * (1 - torch.sigmoid(beta * (rho_w - ref_point))) + lam_u * (
        1 - torch.sigmoid(beta * (ref_point - rho_l))
    )
    return loss / 2 if form == "unpaired" else loss
