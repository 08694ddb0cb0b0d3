"""Objectives on scored samples grouped by prompt: P prompts × N responses, each with a reward.

Inputs have shape (P, N) (``logps``: log π_θ(y|x) of each sample; ``rewards``: its scalar reward)
and every function returns the per-prompt loss of shape (P,): the mean over that prompt's N
samples of a per-sample loss, so that the mean over prompts is the mean over all B = P·N
samples. Rewards, advantages, reference and old (data-collecting) log-probs are detached inside.
Leading axes are carried through: the bandit passes (S, P, N) with a seed axis and gets (S, P).

Inputs are checked (``objectives._checks``): every input given must be a floating
``torch.Tensor``, all on one device and of one dtype (a ``baseline`` may also be a Python
number, PPO's ``token_mask`` a bool or integer tensor), else a TypeError; ``logps``,
``rewards``, ``old_logps`` and ``ref_logps`` must have exactly the same shape (PPO's per-token
form: ``rewards`` is the sequence shape, the rest (…, T)); a ``baseline`` must broadcast to the
per-prompt shape ``rewards.shape[:-1] + (1,)``; no log-probability may be positive beyond
rounding: each a ValueError. Every error names the function and the argument.

Coupling between rows: the samples of one prompt are coupled by design (the group z-score of
``advantages``, RWR's per-prompt weight normalisation, best/worst selection), so a NaN reward or
log-prob makes that prompt's loss NaN. Prompts never share anything, so the other prompts'
losses are unaffected; the training loops detect the non-finite loss.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from objectives._checks import (
    baseline_per_prompt,
    expect_shape,
    logps_not_positive,
    same_kind,
    same_shape,
)
from objectives._math import as_tensor_like, group_zscore


def _check_groups(fn: str, logps, rewards, old_logps=None, ref_logps=None, baseline=None) -> None:
    """Exactly equal shapes, a per-prompt baseline, no positive log-probs (ValueError)."""
    same_shape(fn, logps=logps, rewards=rewards, old_logps=old_logps, ref_logps=ref_logps)
    baseline_per_prompt(fn, baseline, rewards)
    logps_not_positive(fn, logps=logps, old_logps=old_logps, ref_logps=ref_logps)


def shaped_rewards(
    rewards: Tensor,
    logps: Tensor,
    ref_logps: Tensor | None = None,
    *,
    kl_coef: float = 0.0,
    ent_coef: float = 0.0,
) -> Tensor:
    """r - kl_coef·(ℓ - ℓ_ref) + ent_coef·(-ℓ), all detached.

    Folding the penalties into the reward makes the score-function gradient that of
    E[r] - kl_coef·KL(π‖π_ref) + ent_coef·H(π) (a KL term put in the loss itself would have zero
    expected gradient under on-policy sampling).
    """
    r = rewards.detach()
    if kl_coef:
        if ref_logps is None:
            raise ValueError("kl_coef > 0 needs ref_logps")
        r = r - kl_coef * (logps.detach() - ref_logps.detach())
    if ent_coef:
        r = r - ent_coef * logps.detach()
    return r


def advantages(rewards: Tensor, baseline: Tensor | float | None = None) -> Tensor:
    """Â: rewards z-scored within each prompt, or ``rewards - baseline`` (a running mean)."""
    b = as_tensor_like(baseline, rewards)
    return group_zscore(rewards) if b is None else rewards - b


def bon(logps: Tensor, rewards: Tensor, **_: object) -> Tensor:
    """Filtered BC / best-of-N: -ℓ of the highest-reward sample of each prompt (first on ties)."""
    _check_groups("bon", logps, rewards)
    best = rewards.detach().argmax(dim=-1, keepdim=True)
    return -logps.gather(-1, best).squeeze(-1)


def bon_pushdown(
    logps: Tensor, rewards: Tensor, *, beta: float = 0.5, pushdown: str = "worst", **_: object
) -> Tensor:
    """Best-of-N with a negative gradient: -ℓ_best + β·ℓ_down.

    ``pushdown="worst"``: ℓ_down is the lowest-reward sample's ℓ; ``"mean"``: the mean ℓ of all
    samples whose reward is below the best (zero when every sample ties). β is not stated in
    paper A's text available to us; 0.5 is our default.
    """
    _check_groups("bon_pushdown", logps, rewards)
    r = rewards.detach()
    pull = bon(logps, r)
    if pushdown == "worst":
        down = logps.gather(-1, r.argmin(dim=-1, keepdim=True)).squeeze(-1)
    elif pushdown == "mean":
        worse = (r < r.max(dim=-1, keepdim=True).values).to(logps.dtype)
        down = (logps * worse).sum(-1) / worse.sum(-1).clamp(min=1)
    else:
        raise ValueError(f"pushdown must be 'worst' or 'mean', got {pushdown!r}")
    return pull + beta * down


def rwr_weights(
    rewards: Tensor, *, beta: float = 0.1, w_max: float = 20.0, normalize: bool = True
) -> Tensor:
    """RWR weights w = exp(r/β), optionally divided by their mean within the prompt (computed in
    log space, so a prompt's weights average to 1), then clipped at ``w_max``. Detached."""
    log_w = rewards.detach() / beta
    if normalize:
        log_w = log_w - (torch.logsumexp(log_w, dim=-1, keepdim=True) - math.log(log_w.shape[-1]))
    return torch.exp(log_w.clamp(max=math.log(w_max)))


def rwr(
    logps: Tensor,
    rewards: Tensor,
    *,
    beta: float = 0.1,
    w_max: float = 20.0,
    normalize: bool = True,
    **_: object,
) -> Tensor:
    """Reward-weighted regression (Peters & Schaal 2007): mean over samples of -w·ℓ.

    β is not stated for paper A's bandit in the text available to us; 0.1 is our default.
    """
    _check_groups("rwr", logps, rewards)
    w = rwr_weights(rewards, beta=beta, w_max=w_max, normalize=normalize)
    return -(w * logps).mean(-1)


def reinforce(
    logps: Tensor,
    rewards: Tensor,
    ref_logps: Tensor | None = None,
    baseline: Tensor | float | None = None,
    *,
    kl_coef: float = 0.0,
    ent_coef: float = 0.0,
    **_: object,
) -> Tensor:
    """REINFORCE (Williams 1992): mean over samples of -Â·ℓ (push-down where Â < 0)."""
    _check_groups("reinforce", logps, rewards, ref_logps=ref_logps, baseline=baseline)
    r = shaped_rewards(rewards, logps, ref_logps, kl_coef=kl_coef, ent_coef=ent_coef)
    return -(advantages(r, baseline) * logps).mean(-1)


def ppo(
    logps: Tensor,
    rewards: Tensor,
    old_logps: Tensor,
    ref_logps: Tensor | None = None,
    baseline: Tensor | float | None = None,
    *,
    clip_eps: float = 0.2,
    kl_coef: float = 0.0,
    token_mask: Tensor | None = None,
    **_: object,
) -> Tensor:
    """PPO clipped surrogate (Schulman et al. 2017, eq. 7): -min(ρ_t Â, clip(ρ_t, 1±ε) Â).

    ρ_t = π_θ/π_old. Per sequence when ``logps`` is (P, N); per token when it is (P, N, T) with a
    ``token_mask`` (P, N, T), the sequence's loss then being the masked mean over its tokens. No
    value function: Â comes from the (KL-shaped) sequence reward as in ``advantages``.
    """
    if token_mask is None:
        _check_groups("ppo", logps, rewards, old_logps, ref_logps, baseline)
    else:
        same_shape(
            "ppo", logps=logps, old_logps=old_logps, ref_logps=ref_logps, token_mask=token_mask
        )
        same_kind("ppo", logps=logps, rewards=rewards)
        expect_shape("ppo", "rewards", rewards, logps.shape[:-1], "per sequence: logps without T")
        baseline_per_prompt("ppo", baseline, rewards)
        logps_not_positive("ppo", logps=logps, old_logps=old_logps, ref_logps=ref_logps)
    old = old_logps.detach()
    seq_old = old if token_mask is None else (old * token_mask).sum(-1)
    seq_ref = (
        ref_logps if ref_logps is None or token_mask is None else (ref_logps * token_mask).sum(-1)
    )
    adv = advantages(shaped_rewards(rewards, seq_old, seq_ref, kl_coef=kl_coef), baseline)
    if token_mask is not None:
        adv = adv.unsqueeze(-1)
    ratio = torch.exp(logps - old)
    surrogate = torch.minimum(ratio * adv, ratio.clamp(1 - clip_eps, 1 + clip_eps) * adv)
    if token_mask is not None:
        surrogate = (surrogate * token_mask).sum(-1) / token_mask.sum(-1).clamp(min=1)
    return -surrogate.mean(-1)
