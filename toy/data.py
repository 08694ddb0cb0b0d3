"""Data of one round of Algorithm 1, vectorised over seeds S, prompts P, samples N and pairs M:
sampling, scoring, all-pairs construction, and the objective's inputs."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def sample_arms(probs_SPK: Tensor, uniforms_SPN: Tensor) -> Tensor:
    """Inverse-CDF sampling: arm y with probability probs[..., y] for each uniform, (S, P, N)."""
    cdf_SPK = probs_SPK.cumsum(-1)
    arms = torch.searchsorted(cdf_SPK.contiguous(), uniforms_SPN * cdf_SPK[..., -1:], right=True)
    return arms.clamp_(max=probs_SPK.shape[-1] - 1)


def build_pairs(rewards_SPN: Tensor, threshold: float = 0.0) -> tuple[Tensor, Tensor, Tensor]:
    """All N(N-1)/2 pairs of each prompt's samples, the higher reward winning.

    Returns sample indices of the winner and loser, (S, P, M), and a validity mask that drops
    pairs whose reward gap is not above ``threshold`` (ties never make a pair).
    """
    n = rewards_SPN.shape[-1]
    i, j = torch.triu_indices(n, n, offset=1, device=rewards_SPN.device)
    r_i, r_j = rewards_SPN[..., i], rewards_SPN[..., j]
    i_wins = r_i > r_j
    winner = torch.where(i_wins, i, j)
    loser = torch.where(i_wins, j, i)
    return winner, loser, (r_i - r_j).abs() > threshold


@dataclass
class Round:
    """One round's data. ``old_logps`` are log-probs under the policy that collected each
    sample (π_ref for offline samples); ``ref_logps`` under π_ref."""

    prompts_SP: Tensor
    arms_SPN: Tensor
    rewards_SPN: Tensor
    old_logps_SPN: Tensor
    ref_logps_SPN: Tensor
    winner_SPM: Tensor
    loser_SPM: Tensor
    valid_SPM: Tensor

    @property
    def n_valid_pairs(self) -> Tensor:
        return self.valid_SPM.flatten(1).sum(-1)


def make_round(
    prompts_SP: Tensor,
    arms_SPN: Tensor,
    reward_K: Tensor,
    collect_logp_SPK: Tensor,
    ref_logp_K: Tensor,
    offline_SPN: Tensor,
    threshold: float,
) -> Round:
    """Score the sampled arms and build pairs. ``offline_SPN`` marks samples drawn from π_ref."""
    rewards = reward_K[arms_SPN]
    ref = ref_logp_K[arms_SPN]
    old = torch.where(offline_SPN, ref, collect_logp_SPK.gather(-1, arms_SPN))
    winner, loser, valid = build_pairs(rewards, threshold)
    return Round(prompts_SP, arms_SPN, rewards, old, ref, winner, loser, valid)


def _pairs_flat(x_SPN: Tensor, idx_SPM: Tensor) -> Tensor:
    return x_SPN.gather(-1, idx_SPM).flatten(1)


def objective_inputs(
    data_kind: str, logps_SPN: Tensor, rnd: Round, baseline_S: Tensor | None
) -> tuple[dict[str, Tensor], Tensor | None]:
    """Keyword inputs for an objective of the given data kind, plus the (S, B) mask of examples
    that count (None when all do). Pairs and chosen-only inputs are (S, P·M); groups (S, P, N)."""
    if data_kind == "groups":
        inputs = {
            "logps": logps_SPN,
            "rewards": rnd.rewards_SPN,
            "old_logps": rnd.old_logps_SPN,
            "ref_logps": rnd.ref_logps_SPN,
        }
        if baseline_S is not None:
            inputs["baseline"] = baseline_S[:, None, None]
        return inputs, None
    inputs = {
        "chosen_logps": _pairs_flat(logps_SPN, rnd.winner_SPM),
        "rejected_logps": _pairs_flat(logps_SPN, rnd.loser_SPM),
        "ref_chosen_logps": _pairs_flat(rnd.ref_logps_SPN, rnd.winner_SPM),
        "ref_rejected_logps": _pairs_flat(rnd.ref_logps_SPN, rnd.loser_SPM),
    }
    return inputs, rnd.valid_SPM.flatten(1)


def reduce_per_seed(loss: Tensor, mask_SB: Tensor | None) -> Tensor:
    """Mean per seed of per-example losses (S, B...) over the examples that count, (S,)."""
    loss_SB = loss.flatten(1)
    if mask_SB is None:
        return loss_SB.mean(-1)
    m = mask_SB.to(loss_SB.dtype)
    return (loss_SB * m).sum(-1) / m.sum(-1).clamp(min=1)
