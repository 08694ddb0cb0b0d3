"""Data of one round of Algorithm 1, vectorised over seeds S, prompts P, samples N and pairs M:
sampling arms and scoring them here; the all-pairs construction, the objective's inputs and the
reduction are the shared ``rounds`` package's (the LLM harness uses the same functions)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

import rounds
from rounds import build_pairs

__all__ = [
    "Round",
    "build_pairs",
    "make_round",
    "objective_inputs",
    "reduce_per_seed",
    "sample_arms",
]


def sample_arms(probs_SPK: Tensor, uniforms_SPN: Tensor) -> Tensor:
    """Inverse-CDF sampling: arm y with probability probs[..., y] for each uniform, (S, P, N)."""
    cdf_SPK = probs_SPK.cumsum(-1)
    arms = torch.searchsorted(cdf_SPK.contiguous(), uniforms_SPN * cdf_SPK[..., -1:], right=True)
    return arms.clamp_(max=probs_SPK.shape[-1] - 1)


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

    def subset(self, idx_SM: Tensor) -> Round:
        """The round restricted to M of its P prompts per seed (a minibatch), (S, M, ...)."""

        def take(x: Tensor) -> Tensor:
            return x.gather(1, idx_SM.view(*idx_SM.shape, *[1] * (x.dim() - 2)).expand(
                -1, -1, *x.shape[2:]))  # fmt: skip

        return Round(take(self.prompts_SP[..., None])[..., 0], *(take(getattr(self, f)) for f in
                     ("arms_SPN", "rewards_SPN", "old_logps_SPN", "ref_logps_SPN", "winner_SPM",
                      "loser_SPM", "valid_SPM")))  # fmt: skip

    @property
    def core(self) -> rounds.Round:
        """The shared ``rounds.Round`` view (seed axis S leading)."""
        return rounds.Round(self.rewards_SPN, self.old_logps_SPN, self.ref_logps_SPN,
                            self.winner_SPM, self.loser_SPM, self.valid_SPM)  # fmt: skip


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
    collect = collect_logp_SPK.gather(-1, arms_SPN)
    c = rounds.make_round(reward_K[arms_SPN], collect, ref_logp_K[arms_SPN], offline_SPN, threshold)
    return Round(prompts_SP, arms_SPN, c.rewards_PN, c.old_logps_PN, c.ref_logps_PN, c.winner_PM,
                 c.loser_PM, c.valid_PM)  # fmt: skip


def objective_inputs(
    data_kind: str, logps_SPN: Tensor, rnd: Round, baseline_S: Tensor | None
) -> tuple[dict[str, Tensor], Tensor | None]:
    """Keyword inputs for an objective of the given data kind, plus the (S, B) mask of examples
    that count (None when all do). Pairs and chosen-only inputs are (S, P·M); groups (S, P, N).
    The shared ``rounds.objective_inputs`` with the seed axis leading."""
    return rounds.objective_inputs(data_kind, logps_SPN, rnd.core, baseline_S)


def reduce_per_seed(loss: Tensor, mask_SB: Tensor | None) -> Tensor:
    """Mean per seed of per-example losses (S, B...) over the examples that count, (S,)."""
    return rounds.masked_mean(loss, mask_SB, lead=1)
