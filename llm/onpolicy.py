"""Algorithm 1 (paper A) on a causal LM: ``--mode on_policy | offline | hybrid``.

    python -m llm.train --mode on_policy --prompts data/shakespeare_prompts/train.jsonl \\
        --reward length_min --objective reinforce --rounds 10 --prompts-per-round 8 \\
        --samples-per-prompt 4 --steps-per-round 2

Each round r: draw P prompts; sample N responses per prompt (``rounds.offline_count`` of them
from the frozen reference — all in round 0 and in offline mode, a fraction in hybrid mode — the
rest from the current policy); score them; compute their log-probs under the collecting policy
and the reference (no-grad passes, each skipped when nothing reads it: ``llm.round_passes``);
fold ``kl_reward``'s estimate into the rewards; build the round (``round_of_samples``: the
bandit's ``rounds.Round``); then take T = steps_per_round
optimiser steps on it, each loss from ``rounds.round_loss`` (the bandit's too: groups get the
(P, N) log-probs and rewards, pairwise and chosen-only objectives the all-pairs winners/losers)
plus ``kl_penalty``'s sampled KL (``rounds.sampled_kl``). ORPO's ``nll="all"`` adds a
second forward of each micro-batch's sample rows with every token after the first counted
(``full_logps``), whose winners give ``chosen_full_logps``; KTO's ``z0="mismatched"`` is
refused when the config is validated (a round's pairs are within one prompt's samples). Each
step is a full-batch step over all P prompts: with ``micro_prompts`` the prompts are split into
micro-batches (each keeps its N samples) whose gradients are accumulated, which equals the full
batch.

Guarantees (as the pairs mode): the config is validated when parsed; the prompts file is read,
checked and tokenised before the model loads; the run directory is claimed (never overwritten
without --resume/--overwrite); a non-finite reward is an error before any update; a non-finite
loss or gradient norm stops the run before the update (FAILED written, nothing saved); checkpoints
at round boundaries (``save_every`` rounds) hold the model, optimiser, scheduler and RNG
(``llm.runs``) plus ``rounds_state.json`` (the next round and the running baseline), and every
draw of a round is seeded from (seed, round), so ``--resume`` continues to the identical result.
COMPLETE is written last.

Outputs runs/<name>/: config.json, metrics.jsonl (one record per round, ``llm.round_log``),
generations.jsonl (``generations_per_round`` samples per round), checkpoints/, final/,
summary.png (reward, KL and loss over the steps; ``--no-plot``: none), COMPLETE.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

import objectives
import rounds
from llm import round_passes, runs, setup
from llm.collect import Collected, collect, draw_prompts, evaluate_policy
from llm.config import TrainConfig
from llm.prompts import Prompt, load_prompts
from llm.reward_fns import build_rewards
from llm.rewards import check_loadable
from llm.round_log import (
    WITHOUT_PAIRS,
    generation_records,
    load_round_state,
    planned_rounds,
    planned_updates,
    round_record,
    rounds_without_pairs,
    save_round_state,
    steps_of_round,
    truncate_generations,
    warn_without_pairs,
)
from llm.sampling import HFSampler, Sampler, eos_ids
from runio import NonFiniteError, RunResult, UserError, tracking


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
    defer: bool = False  # old log-probs from the training forward (llm.round_passes)


def _reference(cfg: TrainConfig, obj, hp: dict, skip: bool) -> str:
    """How the run gets π_ref: ``setup.reference_mode``, or none when no pass reads it."""
    if skip and not round_passes.needs_ref_logps(cfg, obj, hp):
        return "none"
    return setup.reference_mode(cfg, obj)


def _references(cfg: TrainConfig, acc, policy, ref_model, ref_mode: str):
    """(π_ref's logps function or None, context manager yielding the LM that samples π_ref).
    Without a reference, round 0 (the only round sampling π_ref on-policy) samples the policy:
    it is π_ref until the first update."""
    if ref_mode != "none":
        return setup.reference_logps(cfg, acc, policy, ref_model)
    return None, lambda: contextlib.nullcontext(acc.unwrap_model(policy).model)


def _setup(
    cfg: TrainConfig, sampler: Sampler | None = None, skip_passes: bool = True
) -> RoundsSession:
    from accelerate.utils import set_seed

    obj, hp = objectives.get(cfg.objective), cfg.hparams()
    acc = setup.accelerator(cfg)
    if acc.num_processes > 1:
        raise UserError(f"--mode {cfg.mode} runs in one process for now (got {acc.num_processes})")
    set_seed(cfg.seed)
    if cfg.objective in ("grpo", "rloo") and acc.is_main_process:  # TRL's token-level forms
        print(
            f"[llm] note: {cfg.objective} runs on sequence log-probs here (its T = 1 form); TRL's"
            " per-token aggregation needs per-token log-probs, not passed yet",
            file=sys.stderr,
        )
    tokenizer, prompts, report = load_prompts(cfg)
    reward_fn = build_rewards(cfg.reward, cfg.reward_args, cfg.reward_weights,
                              cfg.reward_batch_size, acc.device)  # fmt: skip
    run_dir = setup.run_dir_of(cfg)
    resuming = runs.claim(cfg, run_dir, acc)
    ref_mode = _reference(cfg, obj, hp, skip_passes)
    total = planned_updates(cfg)  # --max-steps bounds the updates
    policy, optimizer, scheduler, ref_model, _ = setup.build_trainable(
        cfg, acc, tokenizer, ref_mode, total
    )
    ref_logps, reference_lm = _references(cfg, acc, policy, ref_model, ref_mode)
    eos = eos_ids(tokenizer, acc.unwrap_model(policy).model)
    sampler = sampler or HFSampler(tokenizer.pad_token_id, eos, cfg.max_new_tokens,
                                   cfg.temperature, cfg.top_k, cfg.top_p)  # fmt: skip
    meta = setup.run_meta(cfg, ref_mode, total, data={"prompts": report})
    start = runs.start_run(cfg, run_dir, meta, acc, scheduler, resuming)
    baseline = None
    if cfg.baseline == "running" and "baseline" in obj.optional_inputs:
        baseline = torch.zeros(())
    if start > 0:
        state = load_round_state(run_dir, start)
        if baseline is not None:
            baseline = torch.tensor(state["baseline"])
        truncate_generations(run_dir, state["round"])
    return RoundsSession(cfg, obj, hp, acc, tokenizer, prompts, policy, optimizer, scheduler,
                         ref_logps, reference_lm, reward_fn, sampler, run_dir, start,
                         baseline, skip_passes and round_passes.defer_policy_pass(cfg))  # fmt: skip


def _row_slices(cfg: TrainConfig) -> list[slice]:
    """Rows of the scoring batch per micro-batch of prompts (each prompt's N rows together)."""
    p, n = cfg.prompts_per_round, cfg.samples_per_prompt
    mp = cfg.micro_prompts or p
    return [slice(a * n, min(a + mp, p) * n) for a in range(0, p, mp)]


def _policy_logps(ses: RoundsSession):
    def fn(b):
        b = {k: v.to(ses.accelerator.device) for k, v in b.items()}
        with ses.accelerator.autocast():
            return ses.policy(b["input_ids"], b["attention_mask"], b["loss_mask"])

    return fn


def _collect_round(ses: RoundsSession, r: int) -> Collected:
    cfg = ses.cfg
    n = cfg.samples_per_prompt
    idx = draw_prompts(len(ses.prompts), cfg.prompts_per_round, cfg.seed, r).tolist()
    lm = ses.accelerator.unwrap_model(ses.policy).model
    return collect(
        ses.prompts, idx, n, rounds.offline_count(cfg.mode, n, r, cfg.offline_fraction),
        sampler=ses.sampler, policy_lm=lm, reference_lm=ses.reference_lm,
        policy_logps=None if ses.defer else _policy_logps(ses), ref_logps=ses.ref_logps,
        reward_fn=ses.reward_fn,
        tokenizer=ses.tokenizer, seed=cfg.seed, round_index=r, row_slices=_row_slices(cfg),
        prompts_file=cfg.prompts,
    )  # fmt: skip


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


def kl_penalty_part(cfg: TrainConfig, col: Collected, sums: torch.Tensor, rows: slice):
    """A micro-batch's share of ``kl_penalty`` · KL(π_θ‖π_ref), estimated from the round's
    samples (``rounds.sampled_kl`` on summed log-probs; the shares add up to the mean over
    the round's P·N samples)."""
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


def update_step(ses: RoundsSession, col: Collected, rnd: rounds.Round) -> tuple[float, float]:
    """One full-batch optimiser step on the round's data (micro-batches accumulated). Returns
    (loss, grad norm); raises ``NonFiniteError`` before the update when either is not finite."""
    cfg, acc, obj = ses.cfg, ses.accelerator, ses.obj
    n = cfg.samples_per_prompt
    denom = rounds.loss_denominator(obj.data, rnd)
    fn, total = _policy_logps(ses), 0.0
    for rows in _row_slices(cfg):
        batch = {k: v[rows] for k, v in col.batch.items()}
        sums, counts = fn(batch)
        if ses.defer:  # the old log-probs: this forward's, detached (llm.round_passes)
            col.policy_sums_PN.view(-1)[rows] = sums.detach().float().cpu()
            rnd = round_of_samples(cfg, obj, col)
        mean = obj.uses_mean_logps(ses.hp)
        logps_PN = rounds.sequence_logps(sums, counts, mean).view(-1, n).cpu()
        full_PN = None
        if "chosen_full_logps" in obj.required_inputs(ses.hp):
            full_PN = full_logps(fn, batch).view(-1, n).cpu()
        sub = rnd.subset(slice(rows.start // n, rows.stop // n))
        part = rounds.round_loss(obj, ses.hp, logps_PN, sub, ses.baseline, full_logps_PN=full_PN,
                                 denom=denom)  # fmt: skip
        if cfg.kl_penalty:
            part = part + kl_penalty_part(cfg, col, sums, rows)
        acc.backward(part)
        total += float(part.detach())
    norm = cfg.max_grad_norm if cfg.max_grad_norm > 0 else float("inf")
    gnorm = float(acc.clip_grad_norm_(ses.policy.parameters(), norm))
    if not (torch.isfinite(torch.tensor([total, gnorm])).all()):
        ses.optimizer.zero_grad(set_to_none=True)
        raise NonFiniteError(f"non-finite loss/train = {total} or grad/norm = {gnorm}")
    ses.optimizer.step()
    ses.scheduler.step()
    ses.optimizer.zero_grad(set_to_none=True)
    return total, gnorm


def _fail(ses: RoundsSession, r: int, t: int, e: Exception) -> NonFiniteError:
    message = (
        f"round {r}, step {t + 1} of the round: {e}; the update was not applied and nothing was "
        f"saved (last checkpoint: {runs.latest_step(ses.run_dir)}). Lower --lr or check --hp"
    )
    runs.mark_failed(ses.run_dir, message)
    return NonFiniteError(f"{message} [{ses.run_dir}/FAILED]")


def _save(ses: RoundsSession, r: int) -> None:
    """Checkpoint after round r: rounds_state.json first, trainer_state.json (llm.runs) last."""
    step = (r + 1) * ses.cfg.steps_per_round
    save_round_state(ses.run_dir, step, r + 1, ses.baseline)
    runs.save_checkpoint(ses.accelerator, ses.run_dir, step, ses.scheduler, ses.policy)


def eval_due(cfg: TrainConfig, r: int) -> bool:
    """Whether round r ends with an evaluation: the last round, or a round in whose steps
    (r·T, (r+1)·T] a multiple of ``eval_every`` falls (the policy is sampled between rounds)."""
    t, k = cfg.steps_per_round, cfg.eval_every
    return r == planned_rounds(cfg) - 1 or (k > 0 and (r + 1) * t // k > r * t // k)


def _evaluate(ses: RoundsSession, r: int) -> dict[str, float]:
    cfg, t0 = ses.cfg, time.perf_counter()
    out = evaluate_policy(
        ses.prompts[: cfg.eval_prompts], cfg.samples_per_prompt, sampler=ses.sampler,
        policy_lm=ses.accelerator.unwrap_model(ses.policy).model, reward_fn=ses.reward_fn,
        tokenizer=ses.tokenizer, seed=cfg.seed, round_index=r, prompts_file=cfg.prompts,
    )  # fmt: skip
    return {**out, "time/eval": time.perf_counter() - t0}


def train_round(ses: RoundsSession, r: int) -> tuple[dict, list[dict]]:
    """Collect round r, take its T steps, update the baseline; returns its metrics record and
    its generations.jsonl records (written by the caller once the round is logged)."""
    col = _collect_round(ses, r)
    rnd = round_of_samples(ses.cfg, ses.obj, col)
    t0, losses, norms = time.perf_counter(), [], []
    lr = ses.scheduler.get_last_lr()[0]
    for t in range(steps_of_round(ses.cfg, r)):
        try:
            loss, gnorm = update_step(ses, col, rnd)
        except NonFiniteError as e:
            raise _fail(ses, r, t, e) from None
        losses.append(loss)
        norms.append(gnorm)
    if ses.baseline is not None:
        ses.baseline = rounds.update_baseline(
            ses.baseline, rnd.rewards_PN, ses.cfg.baseline_decay, first=r == 0
        )
    record = round_record(ses.cfg, r, col, rnd, losses, norms, lr, time.perf_counter() - t0)
    if ses.cfg.eval_prompts and eval_due(ses.cfg, r):
        record.update(_evaluate(ses, r))
    return record, generation_records(ses.cfg, ses.prompts, r, col)


def run(
    cfg: TrainConfig,
    on_round: Callable[[int, dict], None] | None = None,
    *,
    sampler: Sampler | None = None,
    extra_metrics: Callable[[torch.nn.Module, int], dict] | None = None,
    skip_passes: bool = True,
) -> RunResult:
    """The rounds modes of ``llm.train.run`` (its docstring says what the arguments do).
    ``skip_passes=False`` builds the reference and runs both no-grad scoring passes even when
    nothing needs them (``llm.round_passes``; the results are the same)."""
    if cfg.dry_run:
        _, _, report = load_prompts(cfg)
        check_loadable(cfg.reward)
        print(json.dumps({"prompts": report}, indent=1))
        return runs.result_of(cfg, None, {"prompts": report})
    ses = _setup(cfg, sampler, skip_passes)
    if ses.start == runs.DONE:
        print(f"[llm] {ses.run_dir} is complete; nothing to resume", file=sys.stderr)
        return runs.result_of(cfg, ses.run_dir, runs.last_record(ses.run_dir), loaded=True)
    setup.start_tracking(cfg, ses.accelerator, ses.run_dir, ses.start)
    with tracking.finishing(ses.accelerator.trackers):  # closed before COMPLETE
        record = _rounds(ses, on_round, extra_metrics)
        if cfg.save_final:
            runs.save_final(ses.accelerator, ses.policy, ses.tokenizer, ses.run_dir / "final")
    setup.write_summary(cfg, ses.accelerator, ses.run_dir)  # its failure is a warning
    runs.mark_complete(ses.run_dir, record)
    return runs.result_of(cfg, ses.run_dir, record)


def _rounds(
    ses: RoundsSession,
    on_round: Callable[[int, dict], None] | None,
    extra_metrics: Callable[[torch.nn.Module, int], dict] | None,
) -> dict:
    """The rounds from the one ``ses.start`` is in, each logged (metrics.jsonl and the
    trackers, then its generations: both hold finished rounds only); returns the last round's
    record. A ``UserError`` in a round (the reward raised or was not finite) writes FAILED.
    Pairwise and chosen-only objectives count the rounds in which no pair formed
    (``rounds/without_pairs``, warned about once)."""
    cfg = ses.cfg
    first = ses.start // cfg.steps_per_round
    last = planned_rounds(cfg)  # cfg.rounds, fewer when --max-steps ends the run earlier
    bar = tqdm(total=last, initial=first, disable=not cfg.progress, desc=cfg.mode)
    ses.policy.train()
    record: dict = {}
    pairwise = ses.obj.data != "groups"
    without, warned = (rounds_without_pairs(ses.run_dir, first) if pairwise else 0), False
    for r in range(first, last):
        try:
            record, gens = train_round(ses, r)
        except UserError as e:  # the reward raised or was not finite: no update with it
            message = f"round {r}: {e}"
            runs.mark_failed(ses.run_dir, message)
            raise UserError(f"{message} [{ses.run_dir}/FAILED]") from None
        if pairwise:
            if record["pairs/valid"] == 0:
                warned = warned or warn_without_pairs(cfg, r)
                without += 1
            record[WITHOUT_PAIRS] = without
        if extra_metrics is not None:
            with torch.no_grad():
                record.update(extra_metrics(ses.accelerator.unwrap_model(ses.policy).model, r))
        setup.log_record(ses.accelerator, ses.run_dir / "metrics.jsonl", record)
        for g in gens:
            runs.append(ses.run_dir / "generations.jsonl", g)
        if cfg.save_every and (r + 1) % cfg.save_every == 0 and r + 1 < last:
            _save(ses, r)
        bar.update(1)
        bar.set_postfix(reward=f"{record['reward/mean']:.3g}", loss=f"{record['loss/train']:.3g}")
        if on_round is not None:
            on_round(r, record)
    bar.close()
    return record
