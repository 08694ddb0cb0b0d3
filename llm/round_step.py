"""One optimiser step of the rounds modes on a round's samples (``update_step``), and the
session it runs in.

A step is a full-batch step over the round's P prompts: with ``micro_prompts`` a process's
prompts are split into micro-batches (each keeps its N samples) whose gradients are
accumulated, and over W processes (``llm.shards``) each process takes the gradient of its own
block of prompts, scaled by W because DDP averages; either way the step equals one full batch.
Each micro-batch's loss is ``rounds.round_loss`` (the bandit's too) on its share of the round,
plus ``kl_penalty``'s sampled KL (``rounds.sampled_kl``).

Two forms of log-probs:

- **sequence** (every objective but ``grpo`` and ``rloo``): summed (or mean) response
  log-probs under the model's own distribution (temperature 1), the papers' form.
- **per token** (``TOKEN_LEVEL``: ``grpo``, ``rloo``, TRL's online trainers): per-token
  log-probs at the sampling temperature (logits / ``temperature``, as TRL), with the response
  mask as ``token_mask`` and per-token old and reference log-probs, so TRL's token-level loss
  types aggregate over tokens. What couples a micro-batch to the rest of the round is computed
  on the whole round first (``whole_round_inputs``): GRPO's advantages (``scale=batch`` needs
  every reward) and the round's tokens per prompt (``bnpo``/``dapo`` divide by the token count
  of the whole batch, so the two coincide here); RLOO's advantages when ``normalize``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

import objectives
import rounds
from llm.collect import Collected
from llm.config import TrainConfig
from llm.prompts import Prompt
from llm.sampling import Sampler
from llm.shards import Shards
from objectives import online
from runio import NonFiniteError

TOKEN_LEVEL = ("grpo", "rloo")
"""Objectives trained on per-token log-probs at the sampling temperature (TRL's forms)."""


@dataclass
class RoundsSession:
    cfg: TrainConfig
    obj: objectives.Objective
    hp: dict
    accelerator: object
    tokenizer: object
    prompts: list[Prompt]
    policy: object
    optimizer: object
    scheduler: object
    ref_logps: Callable | None
    reference_lm: Callable
    reward_fn: Callable
    sampler: Sampler
    run_dir: Path
    start: int
    baseline: torch.Tensor | None
    defer: bool  # old log-probs from the training forward (llm.round_passes)
    shards: Shards  # this process's share of a round (llm.shards)


def token_level(cfg: TrainConfig) -> bool:
    """Whether the run's objective takes per-token log-probs (``TOKEN_LEVEL``)."""
    return cfg.objective in TOKEN_LEVEL


def row_slices(cfg: TrainConfig, prompts: int) -> list[slice]:
    """Rows of a scoring batch of ``prompts`` prompts per micro-batch (each prompt's N rows
    together)."""
    n, mp = cfg.samples_per_prompt, cfg.micro_prompts or prompts
    return [slice(a * n, min(a + mp, prompts) * n) for a in range(0, prompts, mp)]


def policy_logps(ses: RoundsSession) -> Callable:
    """batch → the policy's (sums, counts), or per token (log-probs, mask) at the sampling
    temperature for ``TOKEN_LEVEL`` objectives (``llm.logps.PolicyLogps``)."""
    temperature = ses.cfg.temperature if token_level(ses.cfg) else None

    def fn(b):
        b = {k: v.to(ses.accelerator.device) for k, v in b.items()}
        with ses.accelerator.autocast():
            return ses.policy(b["input_ids"], b["attention_mask"], b["loss_mask"],
                              temperature=temperature)  # fmt: skip

    return fn


def round_of_samples(cfg: TrainConfig, obj: objectives.Objective, col: Collected) -> rounds.Round:
    """The ``rounds.Round`` of collected data, in the objective's log-prob convention (ℓ or ℓ̄),
    with ``kl_reward``'s KL estimate (on summed log-probs) folded into the rewards. Without a
    reference pass the policy's log-probs stand in for π_ref's (nothing reads them then, and
    the only samples from π_ref, round 0's, are the policy's own)."""
    mean = obj.uses_mean_logps(cfg.hparams())
    ref_sums = col.policy_sums_PN if col.ref_sums_PN is None else col.ref_sums_PN
    pol = rounds.sequence_logps(col.policy_sums_PN, col.counts_PN, mean)
    ref = rounds.sequence_logps(ref_sums, col.counts_PN, mean)
    rewards = rounds.kl_shaped(col.rewards_PN, col.policy_sums_PN, ref_sums,
                               col.offline_PN, cfg.kl_reward)  # fmt: skip
    return rounds.make_round(rewards, pol, ref, col.offline_PN, cfg.pair_threshold,
                             ties=cfg.pair_ties)  # fmt: skip


def whole_round_inputs(
    cfg: TrainConfig, obj: objectives.Objective, hp: dict, col: Collected, rnd: rounds.Round
) -> dict[str, torch.Tensor]:
    """What a ``TOKEN_LEVEL`` objective's micro-batch needs from the whole round (see the module
    docstring): per-sample ``advantages`` (P, N) and, for grpo, ``prompt_tokens``."""
    h = {**obj.defaults, **hp}
    if cfg.objective == "grpo":
        adv = online.group_advantages(rnd.rewards_PN, scale=h["scale"], std=h["std"], eps=h["eps"])
        return {"advantages": adv, "prompt_tokens": col.counts_PN.sum() / col.counts_PN.shape[0]}
    if cfg.objective == "rloo" and h["normalize"]:  # the old log-probs are known (round_passes)
        adv = online.rloo_advantages(rnd.rewards_PN, rnd.old_logps_PN, rnd.ref_logps_PN,
                                     beta=h["beta"], normalize=True)  # fmt: skip
        return {"advantages": adv}
    return {}


def kl_penalty_part(cfg: TrainConfig, col: Collected, sums: torch.Tensor, rows: slice):
    """A micro-batch's share of ``kl_penalty`` · KL(π_θ‖π_ref), estimated from the round's
    samples (``rounds.sampled_kl`` on summed log-probs; the shares add up to the mean over
    the round's P·N samples). ``rows``: the micro-batch's rows of the round."""
    old = torch.where(col.offline_PN, col.ref_sums_PN, col.policy_sums_PN).flatten()[rows]
    ref = col.ref_sums_PN.flatten()[rows]
    terms = rounds.sampled_kl(sums.float().cpu(), old, ref)
    return cfg.kl_penalty * terms.sum() / col.rewards_PN.numel()


def full_logps(fn: Callable, batch: dict) -> torch.Tensor:
    """Each row's mean log-prob over every token after the first, prompt and response (ORPO's
    ``nll="all"``, as ``llm.step.batch_loss``): a second forward of the right-padded rows with
    the attention mask as the loss mask. Every sample row is scored (the winners are picked
    from them by the round's pairs); it carries the gradient."""
    att = batch["attention_mask"]
    sums, counts = fn({"input_ids": batch["input_ids"], "attention_mask": att, "loss_mask": att})
    return sums / counts.clamp(min=1)


def _sequence_part(ses, col, rnd, out, batch, fn, rows, denom):
    """A micro-batch's loss share from summed log-probs (``rows``: its rows of the round)."""
    cfg, obj, n = ses.cfg, ses.obj, ses.cfg.samples_per_prompt
    sums, counts = out
    if ses.defer:  # the old log-probs: this forward's, detached (llm.round_passes)
        col.policy_sums_PN.view(-1)[rows] = sums.detach().float().cpu()
        rnd = round_of_samples(cfg, obj, col)
    mean = obj.uses_mean_logps(ses.hp)
    logps_PN = rounds.sequence_logps(sums, counts, mean).view(-1, n).cpu()
    full_PN = None
    if "chosen_full_logps" in obj.required_inputs(ses.hp):
        full_PN = full_logps(fn, batch).view(-1, n).cpu()
    sub = rnd.subset(slice(rows.start // n, rows.stop // n))
    return sums, rounds.round_loss(obj, ses.hp, logps_PN, sub, ses.baseline,
                                   full_logps_PN=full_PN, denom=denom)  # fmt: skip


def token_hparams(cfg: TrainConfig, obj: objectives.Objective, hp: dict) -> dict:
    """``hp`` for a per-token loss: dr_grpo's ``max_completion_length`` defaults to the run's
    ``max_new_tokens`` (TRL's ``max_completion_length``), not to a micro-batch's width."""
    if (
        "max_completion_length" in obj.defaults
        and {**obj.defaults, **hp}.get("max_completion_length") is None
    ):
        return {**hp, "max_completion_length": float(cfg.max_new_tokens)}
    return hp


def _token_part(ses, col, rnd, out, local, rows, denom, whole):
    """A micro-batch's loss share from per-token log-probs (``local``: its rows of this
    process's batch, ``rows``: of the round)."""
    n = ses.cfg.samples_per_prompt
    tok, mask = out
    sums = tok.sum(-1)
    if ses.defer:
        col.policy_sums_PN.view(-1)[rows] = sums.detach().float().cpu()
    pol = tok.detach().float().cpu() if ses.defer else col.policy_tok[local]
    ref = pol if col.ref_tok is None else col.ref_tok[local]
    old = torch.where(col.offline_PN.flatten()[rows, None], ref, pol)
    shape = (-1, n, tok.shape[-1])
    prompts = slice(rows.start // n, rows.stop // n)
    sub = dataclasses.replace(rnd.subset(prompts), old_logps_PN=old.view(shape),
                              ref_logps_PN=ref.view(shape))  # fmt: skip
    extra = {k: v[prompts] if v.dim() else v for k, v in whole.items()}
    hp = {**token_hparams(ses.cfg, ses.obj, ses.hp), "token_mask": mask.view(shape).cpu()}
    return sums, rounds.round_loss(ses.obj, hp, tok.view(shape).cpu(), sub, ses.baseline,
                                   denom=denom, extra_inputs=extra)  # fmt: skip


def update_step(ses: RoundsSession, col: Collected, rnd: rounds.Round) -> tuple[float, float]:
    """One full-batch optimiser step on the round's data (micro-batches accumulated, processes
    summed). Returns (loss, grad norm), the same on every process; raises ``NonFiniteError``
    before the update when either is not finite."""
    cfg, acc, obj = ses.cfg, ses.accelerator, ses.obj
    first = col.block.start * cfg.samples_per_prompt  # this process's first row of the round
    denom = rounds.loss_denominator(obj.data, rnd)
    tokens = token_level(cfg)
    whole = whole_round_inputs(cfg, obj, ses.hp, col, rnd) if tokens else {}
    fn, total = policy_logps(ses), 0.0
    slices = row_slices(cfg, col.block.stop - col.block.start)
    for i, local in enumerate(slices):
        batch = {k: v[local] for k, v in col.batch.items()}
        rows = slice(first + local.start, first + local.stop)
        with nullcontext() if i == len(slices) - 1 else acc.no_sync(ses.policy):
            out = fn(batch)
            if tokens:
                sums, part = _token_part(ses, col, rnd, out, local, rows, denom, whole)
            else:
                sums, part = _sequence_part(ses, col, rnd, out, batch, fn, rows, denom)
            if cfg.kl_penalty:
                part = part + kl_penalty_part(cfg, col, sums, rows)
            acc.backward(part * ses.shards.world)  # DDP averages the W processes' shares
        total += float(part.detach())
    if ses.shards.world > 1:  # the round's loss: the processes' shares summed
        total = float(
            acc.reduce(torch.tensor(total, dtype=torch.float64, device=acc.device), "sum")
        )
    norm = cfg.max_grad_norm if cfg.max_grad_norm > 0 else float("inf")
    gnorm = float(acc.clip_grad_norm_(ses.policy.parameters(), norm))
    if not (torch.isfinite(torch.tensor([total, gnorm])).all()):
        ses.optimizer.zero_grad(set_to_none=True)
        raise NonFiniteError(f"non-finite loss/train = {total} or grad/norm = {gnorm}")
    ses.optimizer.step()
    ses.scheduler.step()
    ses.optimizer.zero_grad(set_to_none=True)
    return total, gnorm
