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
step is a full-batch step over all P prompts (``llm.round_step``): micro-batches of
``micro_prompts`` accumulated, and processes summed, equal the full batch. ``grpo`` and
``rloo`` (TRL's online trainers) train on per-token log-probs at the sampling temperature,
every other objective on sequence log-probs at temperature 1 (``llm.round_step``).

Several processes (``accelerate launch``, ``llm.shards``): each samples, scores and takes the
gradient of its own block of P/W prompts; the round's rewards, log-prob sums and texts are
gathered, so the objective sees whole groups and pairs and every process logs the same
numbers (the main one writes them). The samples depend on ``--sample-shards`` (default: one
shard per process), not on the process count: W processes equal one process with
``--sample-shards W``.

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

import torch
from tqdm.auto import tqdm

import objectives
import rounds
from llm import round_passes, runs, setup, shards
from llm.collect import Collected, collect, draw_prompts, evaluate_policy
from llm.config import TrainConfig
from llm.prompts import load_prompts
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
from llm.round_step import (  # noqa: F401 (kl_penalty_part, full_logps, round_of_samples: API)
    RoundsSession,
    full_logps,
    kl_penalty_part,
    policy_logps,
    round_of_samples,
    row_slices,
    token_level,
    update_step,
)
from llm.sampling import HFSampler, Sampler, eos_ids
from runio import NonFiniteError, RunResult, UserError, tracking


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
        temperature = cfg.temperature if token_level(cfg) else None
        return setup.reference_logps(cfg, acc, policy, ref_model, temperature=temperature)
    return None, lambda: contextlib.nullcontext(acc.unwrap_model(policy).model)


def _setup(
    cfg: TrainConfig, sampler: Sampler | None = None, skip_passes: bool = True
) -> RoundsSession:
    from accelerate.utils import set_seed

    obj, hp = objectives.get(cfg.objective), cfg.hparams()
    acc = setup.accelerator(cfg)
    split = shards.plan(cfg.prompts_per_round, cfg.sample_shards, acc.num_processes,
                        acc.process_index)  # fmt: skip
    if obj.batch_coupled and acc.num_processes > 1:
        raise UserError(f"{cfg.objective!r} is batch-coupled: its rounds need one process")
    set_seed(cfg.seed)
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
    meta = setup.run_meta(cfg, ref_mode, total, data={"prompts": report},
                          processes=acc.num_processes, sample_shards=split.count)  # fmt: skip
    start = runs.start_run(cfg, run_dir, meta, acc, scheduler, resuming)
    baseline = None
    if cfg.baseline == "running" and "baseline" in obj.optional_inputs:
        baseline = torch.zeros(())
    if start > 0:
        state = load_round_state(run_dir, start)
        if baseline is not None:
            baseline = torch.tensor(state["baseline"])
        if acc.is_main_process:
            truncate_generations(run_dir, state["round"])
        acc.wait_for_everyone()
    return RoundsSession(cfg, obj, hp, acc, tokenizer, prompts, policy, optimizer, scheduler,
                         ref_logps, reference_lm, reward_fn, sampler, run_dir, start,
                         baseline, skip_passes and round_passes.defer_policy_pass(cfg),
                         split)  # fmt: skip


def _collect_round(ses: RoundsSession, r: int) -> Collected:
    """This process's share of round r collected (``llm.shards``), then gathered whole; a
    reward error in any process is raised in every one."""
    cfg, acc, split = ses.cfg, ses.accelerator, ses.shards
    n = cfg.samples_per_prompt
    idx = draw_prompts(len(ses.prompts), cfg.prompts_per_round, cfg.seed, r).tolist()
    lm = acc.unwrap_model(ses.policy).model
    mine = idx[split.block]
    col = shards.agree(acc, lambda: collect(
        ses.prompts, mine, n, rounds.offline_count(cfg.mode, n, r, cfg.offline_fraction),
        sampler=ses.sampler, policy_lm=lm, reference_lm=ses.reference_lm,
        policy_logps=None if ses.defer else policy_logps(ses), ref_logps=ses.ref_logps,
        reward_fn=ses.reward_fn, tokenizer=ses.tokenizer, seed=cfg.seed, round_index=r,
        row_slices=row_slices(cfg, len(mine)), prompts_file=cfg.prompts,
        shards=split.mine, block=split.block,
    ))  # fmt: skip
    return shards.gather_collected(acc, col)


def _fail(ses: RoundsSession, r: int, t: int, e: Exception) -> NonFiniteError:
    message = (
        f"round {r}, step {t + 1} of the round: {e}; the update was not applied and nothing was "
        f"saved (last checkpoint: {runs.latest_step(ses.run_dir)}). Lower --lr or check --hp"
    )
    if ses.accelerator.is_main_process:
        runs.mark_failed(ses.run_dir, message)
    return NonFiniteError(f"{message} [{ses.run_dir}/FAILED]")


def _save(ses: RoundsSession, r: int) -> None:
    """Checkpoint after round r: rounds_state.json first, trainer_state.json (llm.runs) last."""
    step = (r + 1) * ses.cfg.steps_per_round
    if ses.accelerator.is_main_process:
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
    if ses.defer and ses.shards.world > 1:  # the old log-probs each process took, gathered
        col.policy_sums_PN = shards.gather_rows(ses.accelerator, col.policy_sums_PN[col.block])
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
    acc = ses.accelerator
    if ses.start == runs.DONE:
        if acc.is_main_process:
            print(f"[llm] {ses.run_dir} is complete; nothing to resume", file=sys.stderr)
        return runs.result_of(cfg, ses.run_dir, runs.last_record(ses.run_dir), loaded=True)
    setup.start_tracking(cfg, acc, ses.run_dir, ses.start)
    with tracking.finishing(acc.trackers):  # closed before COMPLETE
        record = _rounds(ses, on_round, extra_metrics)
        if cfg.save_final:
            runs.save_final(acc, ses.policy, ses.tokenizer, ses.run_dir / "final")
        acc.wait_for_everyone()
    setup.write_summary(cfg, acc, ses.run_dir)  # main process; its failure is a warning
    if acc.is_main_process:
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
    cfg, main = ses.cfg, ses.accelerator.is_main_process
    first = ses.start // cfg.steps_per_round
    last = planned_rounds(cfg)  # cfg.rounds, fewer when --max-steps ends the run earlier
    bar = tqdm(total=last, initial=first, disable=not (cfg.progress and main), desc=cfg.mode)
    ses.policy.train()
    record: dict = {}
    pairwise = ses.obj.data != "groups"
    without, warned = (rounds_without_pairs(ses.run_dir, first) if pairwise else 0), False
    for r in range(first, last):
        try:
            record, gens = train_round(ses, r)
        except UserError as e:  # the reward raised or was not finite: no update with it
            message = f"round {r}: {e}"
            if main:
                runs.mark_failed(ses.run_dir, message)
            raise UserError(f"{message} [{ses.run_dir}/FAILED]") from None
        if pairwise:
            if record["pairs/valid"] == 0:
                warned = warned or (main and warn_without_pairs(cfg, r))
                without += 1
            record[WITHOUT_PAIRS] = without
        if extra_metrics is not None:
            with torch.no_grad():
                record.update(extra_metrics(ses.accelerator.unwrap_model(ses.policy).model, r))
        if main:
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
