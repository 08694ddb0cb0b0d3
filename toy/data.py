"""The bandit's half of a round of Algorithm 1, vectorised over seed rows S, prompts P and
samples N: drawing arms and scoring them. Pairs, the objective's inputs and the loss are the
shared ``rounds`` package's (the LLM harness uses the same functions on generated text)."""

from __future__ import annotations

import torch
from torch import Tensor

import rounds


def sample_arms(probs_SPK: Tensor, uniforms_SPN: Tensor) -> Tensor:
    """Inverse-CDF sampling: arm y with probability probs[..., y] for each uniform, (S, P, N)."""
    cdf_SPK = probs_SPK.cumsum(-1)
    arms = torch.searchsorted(cdf_SPK.contiguous(), uniforms_SPN * cdf_SPK[..., -1:], right=True)
    return arms.clamp_(max=probs_SPK.shape[-1] - 1)


def round_of_arms(
    prompts_SP: Tensor,
    arms_SPN: Tensor,
    reward_K: Tensor,
    collect_logp_SPK: Tensor,
    ref_logp_K: Tensor,
    offline_SPN: Tensor,
    threshold: float,
    kl_reward: float = 0.0,
    ties: str = "drop",
) -> rounds.Round:
    """Score the sampled arms (exact rewards, collecting and reference log-probs) and build the
    round's pairs (``rounds.make_round``). ``offline_SPN`` marks samples drawn from π_ref;
    ``kl_reward`` folds β·(ℓ_old - ℓ_ref) into the rewards first (``rounds.kl_shaped``)."""
    collect = collect_logp_SPK.gather(-1, arms_SPN)
    ref = ref_logp_K[arms_SPN]
    rewards = rounds.kl_shaped(reward_K[arms_SPN], collect, ref, offline_SPN, kl_reward)
    return rounds.make_round(rewards, collect, ref, offline_SPN, threshold, samples_PN=arms_SPN,
                             prompts_P=prompts_SP, ties=ties)  # fmt: skip
