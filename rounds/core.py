"""The model-agnostic half of Algorithm 1 (paper A): one round of P prompts × N scored samples.

Shapes: ``...`` is any number of leading axes (the bandit passes a seed axis S; the LLM harness
none), then P prompts, N samples per prompt, M = N(N-1)/2 candidate pairs per prompt. Everything
is vectorised; nothing here knows how a sample was drawn (an arm or a generated text).

- ``offline_count``: how many of a prompt's N samples come from π_ref (offline / on-policy /
  hybrid mixing; round 0 always samples π_ref, as in the bandit).
- ``build_pairs``: all N(N-1)/2 pairs, the higher reward winning; a pair counts only when its
  reward gap is above the threshold (ties never pair), unless ``ties="first"`` (TRL's
  OnlineDPOTrainer: a tied pair is kept, its first sample chosen).
- ``make_round``: a ``Round`` from rewards and the collecting/reference log-probs.
- ``objective_inputs``: the keyword tensors an objective of data kind chosen / pairs / groups
  takes, and the mask of examples that count.
- ``round_loss``: the objective's loss of a round (or a micro-batch of its prompts), reduced:
  the one place both worlds turn a round into a loss.
- ``masked_mean``: the loss of a round (mean over prompts, or over valid pairs).
- ``update_baseline``: the running mean of past rounds' rewards (REINFORCE/PPO baseline).
- ``fold_kl`` / ``kl_shaped``: r - β·(ℓ_old - ℓ_ref), a sampled-sequence KL folded into the
  reward (the ``kl_reward`` knob).
- ``sampled_kl``: an importance-weighted sampled estimate of KL(π_θ‖π_ref) to add to a loss
  (the ``kl_penalty`` knob of a language model; the bandit computes that KL exactly).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from objectives import Objective

MODES = ("on_policy", "offline", "hybrid")
"""Where each round's samples come from: the current policy, π_ref, or a per-prompt mixture."""


def offline_count(mode: str, n: int, round_index: int, offline_fraction: float) -> int:
    """How many of each prompt's ``n`` samples are drawn from π_ref this round: all of them in
    round 0 (the policy starts as π_ref) and in ``offline`` mode, none ``on_policy``, and
    ``round(offline_fraction · n)`` in ``hybrid`` mode."""
    fraction = {"on_policy": 0.0, "offline": 1.0, "hybrid": offline_fraction}[mode]
    return n if round_index == 0 else round(fraction * n)


def offline_mask(n_offline: int, shape: tuple[int, ...]) -> Tensor:
    """Bool (..., P, N): True for the samples drawn from π_ref (the first ``n_offline`` of each
    prompt)."""
    return (torch.arange(shape[-1]) < n_offline).expand(shape)


PAIR_TIES = ("drop", "first")
"""What ``build_pairs`` does with a tied pair: drop it, or keep it with the first sample chosen."""


def build_pairs(
    rewards_PN: Tensor, threshold: float = 0.0, ties: str = "drop"
) -> tuple[Tensor, Tensor, Tensor]:
    """All N(N-1)/2 pairs of each prompt's samples, the higher reward winning.

    Returns sample indices of the winner and loser, (..., P, M), and a validity mask that drops
    pairs whose reward gap is not above ``threshold`` (ties never make a pair). ``ties="first"``
    (TRL's OnlineDPOTrainer, ``first_half >= second_half``): a pair of exactly equal rewards is
    kept, the sample of lower index chosen; other pairs still need a gap above ``threshold``.
    """
    if ties not in PAIR_TIES:
        raise ValueError(f"build_pairs: ties must be one of {PAIR_TIES}, got {ties!r}")
    n = rewards_PN.shape[-1]
    i, j = torch.triu_indices(n, n, offset=1, device=rewards_PN.device)
    r_i, r_j = rewards_PN[..., i], rewards_PN[..., j]
    i_wins = r_i > r_j if ties == "drop" else r_i >= r_j
    winner = torch.where(i_wins, i, j)
    loser = torch.where(i_wins, j, i)
    valid = (r_i - r_j).abs() > threshold
    return winner, loser, valid if ties == "drop" else valid | (r_i == r_j)


@dataclass
class Round:
    """One round of Algorithm 1, the one type both worlds use: scored samples (each (..., P, N))
    and their pairs ((..., P, M)). ``old_logps`` are log-probs under the policy that collected
    each sample (π_ref for offline samples); ``ref_logps`` under π_ref. ``samples_PN``: what was
    sampled, when it is a tensor (the bandit's arms; a language model's token rows stay with its
    collector); ``prompts_P``: which prompts of the pool (the bandit's context indices)."""

    rewards_PN: Tensor
    old_logps_PN: Tensor
    ref_logps_PN: Tensor
    winner_PM: Tensor
    loser_PM: Tensor
    valid_PM: Tensor
    samples_PN: Tensor | None = None
    prompts_P: Tensor | None = None

    @property
    def n_valid_pairs(self) -> Tensor:
        """Valid pairs per leading index (a 0-d tensor without leading axes)."""
        return self.valid_PM.flatten(-2).sum(-1)

    def subset(self, prompts: slice | Tensor) -> Round:
        """The round restricted to some of its prompts: a slice (a micro-batch of consecutive
        prompts), or indices (..., M) per leading row (a shuffled minibatch of M prompts)."""

        def take(x: Tensor) -> Tensor:
            if isinstance(prompts, slice):  # prompts_P has one axis fewer than the (P, N) ones
                return x[..., prompts] if x.dim() < self.rewards_PN.dim() else x[..., prompts, :]
            lead = prompts.dim()
            idx = prompts.view(*prompts.shape, *[1] * (x.dim() - lead))
            return x.gather(lead - 1, idx.expand(*prompts.shape, *x.shape[lead:]))

        return Round(*(None if (x := getattr(self, f.name)) is None else take(x)
                       for f in fields(self)))  # fmt: skip


def make_round(
    rewards_PN: Tensor,
    collect_logps_PN: Tensor,
    ref_logps_PN: Tensor,
    offline_PN: Tensor,
    threshold: float,
    samples_PN: Tensor | None = None,
    prompts_P: Tensor | None = None,
    ties: str = "drop",
) -> Round:
    """Build pairs from the rewards (``build_pairs``, ``ties`` as there); ``old_logps`` take
    π_ref's log-prob on offline samples."""
    old = torch.where(offline_PN, ref_logps_PN, collect_logps_PN)
    winner, loser, valid = build_pairs(rewards_PN, threshold, ties)
    return Round(rewards_PN, old, ref_logps_PN, winner, loser, valid, samples_PN, prompts_P)


def _pairs_flat(x_PN: Tensor, idx_PM: Tensor) -> Tensor:
    return x_PN.gather(-1, idx_PM).flatten(-2)


def objective_inputs(
    data_kind: str,
    logps_PN: Tensor,
    rnd: Round,
    baseline: Tensor | None,
    full_logps_PN: Tensor | None = None,
) -> tuple[dict[str, Tensor], Tensor | None]:
    """Keyword inputs for an objective of the given data kind, plus the mask (..., B) of the
    examples that count (None when all do). Pairs and chosen-only inputs are (..., P·M), the
    winners as ``chosen_*``; groups are (..., P, N). ``baseline`` has the leading shape (...).
    ``full_logps_PN``: each sample's mean log-prob over prompt and response (ORPO's
    ``nll="all"``), passed for the winners as ``chosen_full_logps``."""
    if data_kind == "groups":
        inputs = {
            "logps": logps_PN,
            "rewards": rnd.rewards_PN,
            "old_logps": rnd.old_logps_PN,
            "ref_logps": rnd.ref_logps_PN,
        }
        if baseline is not None:
            inputs["baseline"] = baseline[..., None, None]
        return inputs, None
    inputs = {
        "chosen_logps": _pairs_flat(logps_PN, rnd.winner_PM),
        "rejected_logps": _pairs_flat(logps_PN, rnd.loser_PM),
        "ref_chosen_logps": _pairs_flat(rnd.ref_logps_PN, rnd.winner_PM),
        "ref_rejected_logps": _pairs_flat(rnd.ref_logps_PN, rnd.loser_PM),
    }
    if full_logps_PN is not None:
        inputs["chosen_full_logps"] = _pairs_flat(full_logps_PN, rnd.winner_PM)
    return inputs, rnd.valid_PM.flatten(-2)


def masked_mean(loss: Tensor, mask: Tensor | None, lead: int = 0) -> Tensor:
    """Mean of per-example losses over the examples that count: the axes after the first
    ``lead`` are flattened, so the result has the ``lead`` leading axes (a scalar for 0). No
    example counting (a round without valid pairs) gives 0."""
    loss_B = loss.flatten(lead)
    if mask is None:
        return loss_B.mean(-1)
    m = mask.flatten(lead).to(loss_B.dtype)
    return (loss_B * m).sum(-1) / m.sum(-1).clamp(min=1)


def update_baseline(baseline: Tensor, rewards_PN: Tensor, decay: float, first: bool) -> Tensor:
    """The running baseline after a round (shape (...)): the round's mean reward over P and N
    after the ``first`` round, else ``decay·baseline + (1 - decay)·mean``. The baseline used in
    round 0 is 0 (the caller's initial value)."""
    mean = rewards_PN.flatten(-2).mean(-1)
    return mean if first else decay * baseline + (1 - decay) * mean


def loss_denominator(data_kind: str, rnd: Round) -> Tensor:
    """What a round's summed loss is divided by: P prompts for groups (their loss is per
    prompt), else the valid pairs over all prompts (at least 1). Splitting the prompts into
    micro-batches and summing ``loss_sum`` over them then gives ``masked_mean`` of the round."""
    if data_kind == "groups":
        return torch.tensor(float(rnd.rewards_PN.shape[-2]))
    return rnd.valid_PM.flatten(-2).sum(-1).clamp(min=1).to(rnd.rewards_PN.dtype)


def loss_sum(loss: Tensor, mask: Tensor | None, lead: int = 0) -> Tensor:
    """Sum of the per-example losses that count, over the axes after the first ``lead``."""
    loss_B = loss.flatten(lead)
    return loss_B.sum(-1) if mask is None else (loss_B * mask.flatten(lead)).sum(-1)


def round_loss(
    obj: Objective,
    hp: dict,
    logps_PN: Tensor,
    rnd: Round,
    baseline: Tensor | None = None,
    *,
    full_logps_PN: Tensor | None = None,
    lead: int = 0,
    denom: Tensor | None = None,
    extra_inputs: dict[str, Tensor] | None = None,
) -> Tensor:
    """The loss of a round (or of some of its prompts) under objective ``obj``: the one place
    that turns a round into an objective's inputs (``objective_inputs``), calls it
    (``Objective.loss``) and reduces it. ``logps_PN``: the current policy's log-probs of the
    round's samples, in the objective's convention (ℓ or ℓ̄). Returns the mean over the
    examples that count, per leading axis (``lead`` of them: the bandit's seed rows); with
    ``denom`` (``loss_denominator`` of the whole round) the share of a micro-batch of prompts,
    sum / denom, so the shares of a round's micro-batches add up to its mean. ``extra_inputs``:
    inputs a caller computed itself (e.g. ``grpo``'s whole-round advantages)."""
    inputs, mask = objective_inputs(obj.data, logps_PN, rnd, baseline, full_logps_PN)
    inputs.update(extra_inputs or {})
    hint = " to this round's loss (a round builds chosen_full_logps, not mismatched pairs)"
    loss = obj.fn(**obj.select_inputs(inputs, hp, hint), **hp)
    if denom is None:
        return masked_mean(loss, mask, lead)
    return loss_sum(loss, mask, lead) / denom


def fold_kl(rewards_PN: Tensor, old_logps_PN: Tensor, ref_logps_PN: Tensor, coef: float) -> Tensor:
    """r - coef·(ℓ_old - ℓ_ref): the single-sample estimate of KL(π_old‖π_ref) of each sampled
    sequence, folded into its reward (so every objective, pairwise ones included, sees it)."""
    if not coef:
        return rewards_PN
    return rewards_PN - coef * (old_logps_PN - ref_logps_PN).detach()


def kl_shaped(
    rewards_PN: Tensor,
    collect_logps_PN: Tensor,
    ref_logps_PN: Tensor,
    offline_PN: Tensor,
    coef: float,
) -> Tensor:
    """The rewards of ``kl_reward``: ``fold_kl`` with ℓ_old the log-prob under the policy that
    sampled each response (π_ref for offline samples, whose estimate is then 0). Log-probs are
    summed over the response (a bandit arm: its log-prob)."""
    old = torch.where(offline_PN, ref_logps_PN, collect_logps_PN)
    return fold_kl(rewards_PN, old, ref_logps_PN, coef)


def sampled_kl(logps_PN: Tensor, old_logps_PN: Tensor, ref_logps_PN: Tensor) -> Tensor:
    """Per-sample terms whose mean estimates KL(π_θ‖π_ref) from samples drawn from π_old, with
    the right gradient: w·(ℓ - ℓ_ref), w = π_θ/π_old = exp(ℓ - ℓ_old) (ℓ summed over the
    response). Its expectation under π_old is Σ_y π_θ(y)(ℓ - ℓ_ref) = KL(π_θ‖π_ref), and
    autograd differentiates the same expectation, so the mean's gradient is an unbiased
    estimate of ∇KL. At π_θ = π_old (a round's first step) w = 1 and the value is the usual
    k1 estimate; offline samples (π_old = π_ref) are reweighted to the current policy."""
    w = (logps_PN - old_logps_PN.detach()).exp()
    return w * (logps_PN - ref_logps_PN.detach())


def sequence_logps(sums: Tensor, counts: Tensor, mean: bool) -> Tensor:
    """ℓ (the sum of token log-probs) or ℓ̄ = ℓ/|y| when the objective ``needs_mean_logps``."""
    return sums / counts.clamp(min=1) if mean else sums


def first_nonfinite(rewards_PN: Tensor) -> tuple[int, ...] | None:
    """The index of the first NaN or infinite reward (row-major), or None when all are
    finite."""
    bad = ~torch.isfinite(rewards_PN)
    if not bool(bad.any()):
        return None
    return tuple(int(i) for i in bad.nonzero()[0])
