"""TRL's online policy-gradient losses (GRPOTrainer, RLOOTrainer, TRL 1.16) on scored groups.

Inputs are per sequence, (..., P, N) like ``objectives.sampled`` (the bandit: one arm is one
"token", T = 1), or per token, (..., P, N, T) with a ``token_mask`` (..., P, N, T) (a language
model); ``rewards`` is always per sequence, (..., P, N). Every function returns the per-prompt
loss (..., P) whose mean over the prompts is TRL's loss of the batch (one micro-batch, one
process, no gradient accumulation). Rewards, advantages, old and reference log-probs are
detached inside.

Log-probs must be those of the sampling distribution: TRL divides the logits by the sampling
``temperature`` before the log-softmax, in training as in generation (``tempered_logps``). That
is the caller's job; the losses here take whatever log-probs they are given.

- ``group_advantages``: GRPO's (and RLOO's) advantages, every convention as a switch: a group
  mean or leave-one-out baseline, scaled by the group's or the batch's reward std or not at all,
  sample (TRL) or population (``objectives.sampled.advantages``) std, and the ε added to it.
- ``grpo``: GRPOTrainer's clipped surrogate with its loss types (``grpo``, ``bnpo``,
  ``dr_grpo``, ``dapo``, plus ``sequence``: one term per sequence of summed log-probs), token
  or sequence importance ratios, two-sided ε, and β·k3 KL in the loss.
- ``rloo``: RLOOTrainer's loss: leave-one-out baseline, β·(ℓ_old - ℓ_ref) (summed over tokens)
  folded into the reward, optional batch normalisation of the advantages, a clipped surrogate
  of sequence log-probs.
"""

from __future__ import annotations

import torch
from torch import Tensor

from objectives._checks import expect_shape, logps_not_positive, same_kind, same_shape
from objectives.hparams import (
    BOOL,
    FINITE_OR_NONE,
    NON_NEGATIVE,
    OPEN_UNIT,
    POSITIVE,
    TENSOR_OR_NONE,
    choice,
)

BASELINES = ("mean", "loo")
SCALES = ("group", "batch", "none")
STDS = ("sample", "population")
LOSS_TYPES = ("sequence", "grpo", "bnpo", "dr_grpo", "dapo")
IMPORTANCE = ("token", "sequence")
TRL_EPS = 1e-4
"""The ε TRL adds to a reward std before dividing (the library's group z-score adds 1e-6)."""


def _std(x: Tensor, dims: tuple[int, ...], std: str) -> Tensor:
    return x.std(dim=dims, keepdim=True, correction=1 if std == "sample" else 0)


def group_advantages(
    rewards: Tensor,
    *,
    baseline: str = "mean",
    scale: str = "group",
    std: str = "sample",
    eps: float = TRL_EPS,
) -> Tensor:
    """Advantages (..., P, N) of rewards (..., P, N), detached.

    ``baseline``: "mean" subtracts the prompt's mean reward (GRPO), "loo" the mean of the prompt's
    other N-1 rewards (RLOO). ``scale``: divide by ``std + eps`` of the prompt's rewards
    ("group", GRPO's default), of all P·N rewards of each leading row ("batch", TRL's
    ``scale_rewards="batch"``), or not at all ("none", Dr. GRPO). ``std``: "sample" (N-1 in the
    denominator, TRL's ``nanstd``) or "population" (N). With ``baseline="mean", scale="group",
    std="population", eps=1e-6`` this is ``objectives.sampled.advantages`` (the group z-score).
    """
    for name, value, allowed in (("baseline", baseline, BASELINES), ("scale", scale, SCALES),
                                 ("std", std, STDS)):  # fmt: skip
        if value not in allowed:
            raise ValueError(f"group_advantages: {name} must be one of {allowed}, got {value!r}")
    r = rewards.detach()
    n = r.shape[-1]
    if baseline == "mean":
        adv = r - r.mean(-1, keepdim=True)
    elif n > 1:
        adv = r - (r.sum(-1, keepdim=True) - r) / (n - 1)
    else:
        adv = torch.zeros_like(r)  # TRL: a lone sample has no leave-one-out baseline
    if scale == "none":
        return adv
    if scale == "group":
        s = _std(r, (-1,), std) if n > 1 else torch.zeros_like(r[..., :1])
    else:
        s = _std(r, (-2, -1), std) if r.shape[-2:].numel() > 1 else torch.zeros_like(r[..., :1])
    return adv / (s + eps)


def tempered_logps(logits: Tensor, token_ids: Tensor, temperature: float = 1.0) -> Tensor:
    """Per-token log-probs of ``token_ids`` (..., T) under softmax(logits / temperature), logits
    (..., T, V): what TRL's GRPO and RLOO trainers compute (``logits /= temperature``) before
    every loss, so the ratios and KL are those of the distribution that sampled."""
    logps = torch.log_softmax(logits / temperature, dim=-1)
    return logps.gather(-1, token_ids.unsqueeze(-1)).squeeze(-1)


def _per_token(fn, logps, rewards, old_logps, ref_logps, token_mask):
    """Check the inputs and return them per token: (..., P, N, T), the mask as a float."""
    if token_mask is None:
        same_shape(fn, logps=logps, rewards=rewards, old_logps=old_logps, ref_logps=ref_logps)
        logps_not_positive(fn, logps=logps, old_logps=old_logps, ref_logps=ref_logps)
        mask = torch.ones_like(logps.detach()).unsqueeze(-1)
        return [None if x is None else x.unsqueeze(-1) for x in (logps, old_logps, ref_logps)], mask
    same_shape(fn, logps=logps, old_logps=old_logps, ref_logps=ref_logps, token_mask=token_mask)
    same_kind(fn, logps=logps, rewards=rewards)
    expect_shape(fn, "rewards", rewards, logps.shape[:-1], "per sequence: logps without T")
    logps_not_positive(fn, logps=logps, old_logps=old_logps, ref_logps=ref_logps)
    return [logps, old_logps, ref_logps], token_mask.to(logps.dtype)


def _clipped(log_w: Tensor, adv: Tensor, clip_eps: float, clip_eps_high: float) -> Tensor:
    """-min(w·Â, clip(w, 1-ε_low, 1+ε_high)·Â), w = exp(log_w)."""
    w = torch.exp(log_w)
    return -torch.minimum(w * adv, w.clamp(1 - clip_eps, 1 + clip_eps_high) * adv)


def grpo(
    logps: Tensor,
    rewards: Tensor,
    old_logps: Tensor | None = None,
    ref_logps: Tensor | None = None,
    advantages: Tensor | None = None,
    prompt_tokens: Tensor | None = None,
    *,
    loss_type: str = "dapo",
    scale: str = "group",
    std: str = "sample",
    eps: float = TRL_EPS,
    importance: str = "token",
    clip_eps: float = 0.2,
    clip_eps_high: float = 0.2,
    beta: float = 0.0,
    kl_correction: bool = True,
    max_completion_length: float | None = None,
    token_mask: Tensor | None = None,
    **_: object,
) -> Tensor:
    """GRPOTrainer's loss (TRL 1.16; defaults are GRPOConfig's), per prompt (..., P).

    Â = ``group_advantages(rewards, scale=, std=, eps=)`` (TRL's ``scale_rewards``), one per
    sequence. Per token t of sequence i: w = π_θ/π_old per token (``importance="token"``) or
    exp of the sequence's mean token log-ratio (``"sequence"``, GSPO), loss
    -min(w·Â, clip(w, 1-ε, 1+ε_high)·Â) + β·k3, k3 = exp(ℓ_ref - ℓ) - (ℓ_ref - ℓ) - 1, times w
    when ``kl_correction`` (TRL's ``use_bias_correction_kl``, default True: w = 1 on-policy but
    its gradient is not, so the KL gradient is the unbiased reverse-KL one). Then
    aggregated by ``loss_type``: "grpo" the token mean of each sequence, then the mean;
    "bnpo" and "dapo" the sum over the batch's tokens / their count (TRL's dapo divides by the
    token count of the whole generation batch: the same within one call); "dr_grpo" the sum /
    (B · ``max_completion_length``, default T); "sequence" (not TRL's) one term per sequence of
    summed log-probs, as ``objectives.sampled.ppo``. A batch here is each leading row's P·N
    sequences. ``old_logps`` None: π_old = π_θ (TRL's num_iterations=1), ratios 1.
    """
    fn = "grpo"
    (lp, old, ref), mask = _per_token(fn, logps, rewards, old_logps, ref_logps, token_mask)
    same_kind(fn, logps=logps, prompt_tokens=prompt_tokens)
    expect_shape(fn, "prompt_tokens", prompt_tokens, rewards.shape[:-2], "one per leading row")
    if beta and ref is None:
        raise ValueError("grpo: beta > 0 needs ref_logps")
    if loss_type not in LOSS_TYPES or importance not in IMPORTANCE:
        raise ValueError(f"grpo: loss_type must be one of {LOSS_TYPES} and importance one of "
                         f"{IMPORTANCE}, got {loss_type!r}, {importance!r}")  # fmt: skip
    adv = _given_or(advantages, rewards, fn, lambda: group_advantages(
        rewards, scale=scale, std=std, eps=eps)).unsqueeze(-1)  # fmt: skip
    old = lp.detach() if old is None else old.detach()
    ref = None if ref is None else ref.detach()
    if loss_type == "sequence":  # summed log-probs, one "token" per sequence
        lp, old, ref = [None if x is None else (x * mask).sum(-1, keepdim=True)
                        for x in (lp, old, ref)]  # fmt: skip
        mask = torch.ones_like(mask[..., :1])
    log_w = lp - old
    if importance == "sequence":
        log_w = (log_w * mask).sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp(min=1)
    per = _clipped(log_w, adv, clip_eps, clip_eps_high)
    if beta:
        d = ref - lp
        kl = torch.exp(d) - d - 1
        per = per + beta * (kl * torch.exp(log_w) if kl_correction else kl)
    per = per * mask
    n = rewards.shape[-1]
    if loss_type in ("sequence", "grpo"):
        return (per.sum(-1) / mask.sum(-1).clamp(min=1)).mean(-1)
    if loss_type == "dr_grpo":
        length = mask.shape[-1] if max_completion_length is None else max_completion_length
        return per.sum((-2, -1)) / (n * length)
    # bnpo / dapo: the batch's token sum over its token count, shared out over the P prompts
    if prompt_tokens is not None:
        return per.sum((-2, -1)) / prompt_tokens.detach().clamp(min=1e-12).unsqueeze(-1)
    tokens = mask.sum((-3, -2, -1)).clamp(min=1).unsqueeze(-1)
    return rewards.shape[-2] * per.sum((-2, -1)) / tokens


def _given_or(advantages: Tensor | None, rewards: Tensor, fn: str, compute) -> Tensor:
    """``advantages`` (detached; shaped like ``rewards``) when given, else ``compute()``."""
    if advantages is None:
        return compute()
    same_shape(fn, rewards=rewards, advantages=advantages)
    return advantages.detach()


def rloo_advantages(
    rewards: Tensor,
    old_seq: Tensor | None = None,
    ref_seq: Tensor | None = None,
    *,
    beta: float = 0.05,
    normalize: bool = False,
) -> Tensor:
    """RLOOTrainer's advantages (..., P, N): r - β·(ℓ_old - ℓ_ref) (sequence log-probs; β = 0
    needs neither), the leave-one-out baseline subtracted, then normalised over the batch (each
    leading row's P·N; sample std + 1e-4) when ``normalize``. Detached."""
    r = rewards.detach()
    if beta:
        r = r - beta * (old_seq.detach() - ref_seq.detach())
    adv = group_advantages(r, baseline="loo", scale="none")
    if normalize:
        mean = adv.mean((-2, -1), keepdim=True)
        adv = (adv - mean) / (_std(adv, (-2, -1), "sample") + TRL_EPS)
    return adv


def rloo(
    logps: Tensor,
    rewards: Tensor,
    old_logps: Tensor | None = None,
    ref_logps: Tensor | None = None,
    advantages: Tensor | None = None,
    *,
    beta: float = 0.05,
    normalize: bool = False,
    clip_eps: float = 0.2,
    clip_eps_high: float = 0.2,
    token_mask: Tensor | None = None,
    **_: object,
) -> Tensor:
    """RLOOTrainer's loss (TRL 1.16; defaults are RLOOConfig's), per prompt (..., P).

    Sequence log-probs ℓ = Σ_t ℓ_t (masked). The reward becomes r - β·(ℓ_old - ℓ_ref) (TRL's k1
    estimate from the sampling policy, summed over the tokens); Â = r_i - mean of the prompt's
    other rewards; ``normalize`` (TRL's ``normalize_advantages``): Â ← (Â - mean)/(std + 1e-4)
    over the batch (each leading row's P·N sequences, sample std). Loss per sequence
    -min(w·Â, clip(w, 1-ε, 1+ε_high)·Â), w = exp(ℓ - ℓ_old), averaged. ``old_logps`` None:
    π_old = π_θ (num_iterations=1). ``advantages``: computed on the whole batch by a caller
    that passes part of it (``rloo_advantages``; ``normalize`` needs every sequence), used
    instead of those of this call's rewards.
    """
    fn = "rloo"
    (lp, old, ref), mask = _per_token(fn, logps, rewards, old_logps, ref_logps, token_mask)
    if beta and ref is None:
        raise ValueError("rloo: beta > 0 needs ref_logps")
    seq = (lp * mask).sum(-1)
    old = seq.detach() if old is None else (old.detach() * mask).sum(-1)
    ref_seq = None if ref is None else (ref.detach() * mask).sum(-1)
    adv = _given_or(advantages, rewards, fn, lambda: rloo_advantages(
        rewards, old, ref_seq, beta=beta, normalize=normalize))  # fmt: skip
    return _clipped(seq - old, adv, clip_eps, clip_eps_high).mean(-1)


def online_dpo_pairs(rewards_2: Tensor) -> tuple[Tensor, Tensor]:
    """OnlineDPOTrainer's pairing of two completions per prompt, rewards (..., 2): indices of
    the chosen and rejected one; the first is chosen when r₀ >= r₁ (ties included)."""
    first = rewards_2[..., 0] >= rewards_2[..., 1]
    return (~first).long(), first.long()


_CLIP = {"clip_eps": OPEN_UNIT, "clip_eps_high": POSITIVE, "token_mask": TENSOR_OR_NONE}
REGISTRY = {
    "grpo": (
        {
            "loss_type": choice(*LOSS_TYPES),
            "scale": choice(*SCALES),
            "std": choice(*STDS),
            "eps": POSITIVE,
            "importance": choice(*IMPORTANCE),
            "beta": NON_NEGATIVE,
            "kl_correction": BOOL,
            "max_completion_length": FINITE_OR_NONE,
            **_CLIP,
        },
        "GRPO (Shao et al. 2024) as TRL's GRPOTrainer; Dr. GRPO, DAPO, GSPO switches",
    ),
    "rloo": (
        {"beta": NON_NEGATIVE, "normalize": BOOL, **_CLIP},
        "RLOO (Ahmadian et al. 2024) as TRL's RLOOTrainer",
    ),
}
"""(hyperparameter rules, paper) of the registry entries ``grpo`` and ``rloo``."""
