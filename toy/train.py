"""Train bandit policies with any registry objective (paper A, Algorithm 1), several seeds at once.

    python -m toy.train --preset onpolicy_bon --objective dpo --hp beta=0.1 --seeds 0 1 2 3 4
    python -m toy.train --help

From Python: ``result = toy.train.run(BanditConfig(...))`` or ``run(preset("offline_ipo"))``.

Outputs go to ``<out_dir>/<name>/`` (see ``toy.outputs``): ``config.json`` before training, then
``metrics.jsonl`` and ``dist.npz`` (and, with ``--report-to tensorboard|wandb``, ``tracking/``:
the same metrics through accelerate's trackers, ``toy.outputs.report``), ``summary.png``
(reward and KL curves, the final distribution: ``toy.summary_plot``; ``--no-plot``: none), then
``COMPLETE`` last. The automatic name ends in a hash of every field that changes the results,
so different configs never share a directory.

Reliability:

- Every invalid config value is an error naming the field, raised before any directory is
  created or training starts; on the command line it is one ``error: ...`` line and exit code 2
  (``runio.cli_entry``; ``--debug`` shows the traceback).
- A non-finite loss or gradient norm (any seed) stops the run with ``runio.NonFiniteError``
  naming the first bad step and seed (exit code 3). It is checked once per round from the
  recorder's buffers, so the loop is not slowed. No metrics, distributions or COMPLETE marker
  are written: the directory keeps config.json and FAILED (the reason), an incomplete run.
- A run directory is claimed atomically (``runio.claim_run_dir``): of two commands with the same
  name, one runs and the other gets one ``error:`` line (exit code 2). An unwritable out_dir is
  found before training; a write that fails mid-run (disk full, file size limit) is one line,
  leaves ``FAILED`` and no ``COMPLETE``, and ``--resume`` retries the run.
- An existing run directory is refused unless ``--resume`` or ``--overwrite``. ``--resume`` of
  a complete run loads it without training; ``--resume`` of an incomplete one (killed mid-way)
  checks that the config matches and reruns it from scratch. The toy needs no checkpoints:
  runs take seconds and are fully deterministic, so the rerun's outputs are identical to those
  of an uninterrupted run.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:  # pandas is imported where a table is built, not on the training path
    pass
from tqdm.auto import tqdm

import objectives
import rounds
import runio
from errors import one_line_cli
from objectives import values_checked_once
from runio import cli_entry, deferred_validation
from toy import outputs, summary_plot
from toy.bandit import CONTEXT_DIM
from toy.config import PRESETS, BanditConfig, preset, validate
from toy.evaluation import EvalBuffer, check_final_policy, check_finite
from toy.metrics import Recorder
from toy.optim import RowAdam
from toy.policy import flatten_parameters, kl_to_reference
from toy.problem import Problem, Rows, collect, make_policy
from toy.threads import background_eval, small_problem_threads

# flatten_parameters gives the policy strided gradient views on purpose (see its docstring)
warnings.filterwarnings("ignore", message="grad and param do not obey the gradient layout")

PHASES = ("init", "collect", "eval", "forward", "backward", "optim", "record")
"""The loop's named phases (``train``'s ``phases``): the set-up (problem, π_ref fit, optimiser,
recorder); each round's sampling; the evaluation forwards; per step the training forward and
objective, the backward, the optimiser step, and recording with the non-finite checks."""

Phases = Callable[[str], contextlib.AbstractContextManager]
_NULL = contextlib.nullcontext()  # reusable: one instance serves every `with`


def _untimed(name: str) -> contextlib.AbstractContextManager:
    return _NULL


@dataclass(eq=False)
class RunResult(runio.RunResult):
    """``runio.RunResult`` (config, metrics: one row per (seed, step), see toy.metrics for the
    columns; run_dir; as a mapping, the last step's metrics averaged over seeds) plus the
    stored distributions."""

    dist_steps: np.ndarray = None
    """The steps whose distributions are stored."""
    dist: np.ndarray = None
    """(len(dist_steps), S, K): mean over eval contexts of π(·|x) at those steps."""


def _result(cfg: BanditConfig, metrics, dist_steps, dist, run_dir, loaded=False) -> RunResult:
    last = metrics[metrics.step == metrics.step.max()].drop(columns=["seed"]).mean().to_dict()
    final = {**last, **({"run_dir": str(run_dir)} if run_dir is not None else {})}
    return RunResult(cfg, metrics, run_dir, final, loaded, dist_steps=dist_steps, dist=dist)


def _row_hparams(obj, hp: dict, rows: Rows, s: int) -> dict:
    """The objective's keyword hyperparameters with the per-row ones as (S, 1[, 1]) tensors
    (shaped to broadcast against its inputs: pairs (S, B), groups (S, P, N))."""
    out = dict(hp)
    dims = 2 if obj.data == "groups" else 1
    for name, values in rows.hp:
        out[name] = torch.tensor(values, dtype=torch.float32).view(s, *[1] * dims)
    return out


def _contexts_at(ctx_SXD: torch.Tensor, idx_SP: torch.Tensor) -> torch.Tensor:
    """Each row's contexts at its indices ``idx_SP``: (S, P, CONTEXT_DIM)."""
    return ctx_SXD.gather(1, idx_SP[..., None].expand(-1, -1, CONTEXT_DIM))


def train_forward(policy: torch.nn.Module, ctx_SPD: torch.Tensor):
    """The training forward: (logits, saved). A policy with a hand-written backward
    (``backward_into``) runs without autograd and its logits become the graph's leaf; else
    ``saved`` is None and autograd records the whole forward."""
    if hasattr(policy, "backward_into"):
        logits, saved = policy.forward_saving(ctx_SPD)
        return logits.requires_grad_(True), saved
    return policy(ctx_SPD), None


def train_backward(policy, flat: torch.Tensor, loss_S: torch.Tensor, logits, saved) -> None:
    """Write the gradient of ``loss_S.sum()`` into ``flat.grad`` (overwritten): autograd to
    the logits, then the policy's ``backward_into``; or all of it through autograd."""
    if saved is not None:
        loss_S.sum().backward()
        policy.backward_into(saved, logits.grad)
    else:
        flat.grad.zero_()
        loss_S.sum().backward()


def train(cfg: BanditConfig, rows: Rows | None = None, bar=None,
          phases: Phases | None = None) -> tuple[Recorder, Problem]:  # fmt: skip
    """The training loop of Algorithm 1; returns the filled recorder and the problem.

    ``rows`` (default: one row per seed of ``cfg``) are independent runs trained as one batched
    computation (``toy.sweep``). Raises ``runio.NonFiniteError`` (checked at the end of every
    round) when a loss or gradient norm of any row is NaN or infinite. ``phases(name)``, for each
    name of ``PHASES``, gives a context manager the loop runs that phase in (a benchmark's
    timers, ``bench.toy_speed``); by default none, so the loop pays nothing for the hook."""
    rows = rows or Rows.of(cfg)
    phase = phases or _untimed
    obj = objectives.get(cfg.objective)
    s, p, n = len(rows.seeds), cfg.prompts_per_round, cfg.samples_per_prompt
    m = cfg.minibatch_size or p
    with small_problem_threads(rows=s) as n_threads:
        with phase("init"):
            hp = _row_hparams(obj, cfg.hparams(), rows, s)
            prob = Problem(cfg, rows.seeds)
            policy = make_policy(cfg, prob, rows.seeds)
            flat = flatten_parameters(policy)
            opt = RowAdam(flat, torch.tensor(rows.lr))
            rec = Recorder(cfg.total_steps, s, cfg.n_arms, p, n, m)
            evals = EvalBuffer(policy, flat, prob.eval_ctx, rec, background_eval(n_threads))
        running = cfg.baseline == "running" and "baseline" in obj.optional_inputs
        baseline_S = torch.zeros(s) if running else None
        own_bar = bar is None  # a caller's bar (a sweep's) advances by S rows per step
        if own_bar:
            bar = tqdm(total=cfg.total_steps, delay=3, disable=not cfg.progress,
                       desc=cfg.run_name())  # fmt: skip
        per_step = 1 if own_bar else s
        step = 0
        try:
            for r in range(cfg.rounds):
                with phase("collect"):
                    prompts_SP = prob.draw_prompts(cfg.n_train_contexts, p)
                    ctx_SPD = _contexts_at(prob.train_ctx, prompts_SP)
                    with torch.no_grad():  # collect with the policy as at the round's start
                        collect_logp = torch.log_softmax(policy(ctx_SPD), -1)
                    rnd = collect(cfg, prob, r, prompts_SP, collect_logp)
                    rec.rounds.append(rnd)
                for _ in range(cfg.steps_per_round):
                    # one pass over the round, in minibatches of M prompts
                    batches = [None] if m == p else prob.permutations(p).split(m, dim=1)
                    for idx_SM in batches:
                        if step % cfg.eval_every == 0:
                            with phase("eval"):
                                evals.push(step)
                        with phase("forward"):
                            sub = rnd if idx_SM is None else rnd.subset(idx_SM)
                            ctx = ctx_SPD if idx_SM is None else _contexts_at(ctx_SPD, idx_SM)
                            logits, saved = train_forward(policy, ctx)
                            train_logp = torch.log_softmax(logits, -1)
                            logps_SMN = train_logp.gather(-1, sub.samples_PN)
                            first = step % cfg.steps_in_round == 0  # values checked then
                            with _NULL if first else values_checked_once():
                                loss_S = rounds.round_loss(obj, hp, logps_SMN, sub, baseline_S,
                                                           lead=1)  # fmt: skip
                            if cfg.kl_penalty:
                                kl_S = kl_to_reference(train_logp, prob.ref_logp_K).mean(-1)
                                loss_S = loss_S + cfg.kl_penalty * kl_S
                        with phase("backward"):
                            train_backward(policy, flat, loss_S, logits, saved)
                        step += 1
                        with phase("record"):
                            grad_norm = flat.grad.norm(dim=1)
                            rec.record_train(step, loss_S, grad_norm, logps_SMN, idx_SM)
                        with phase("optim"):
                            opt.step(flat.grad)
                        bar.update(per_step)
                with phase("record"):
                    check_finite(cfg, rows, rec, step - cfg.steps_in_round + 1, step)
                    if baseline_S is not None:  # running mean of past rounds' rewards
                        baseline_S = rounds.update_baseline(
                            baseline_S, rnd.rewards_PN, cfg.baseline_decay, first=r == 0
                        )
            with phase("eval"):
                evals.push(step)
                evals.flush()
                evals.close()
            with phase("record"):
                check_final_policy(rows, rec, step)
        finally:
            evals.close(finish=False)  # no worker left behind (a no-op after close())
            if own_bar:
                bar.close()
    return rec, prob


def run(cfg: BanditConfig) -> RunResult:
    """Run ``cfg`` (all its seeds batched) and write its outputs under ``cfg.out_dir``.

    With ``cfg.resume`` and a complete run already there, that run is loaded and returned
    without training. Raises ``runio.UserError`` (invalid config, unwritable out_dir, existing
    run, mismatched resume, a live run of the same name) before anything is written, and
    ``runio.NonFiniteError`` when training diverges; an error after the claim (divergence, a
    disk fault) leaves ``FAILED`` and no ``COMPLETE``. With ``out_dir=""`` nothing is written."""
    validate(cfg)  # also a config built with validation deferred, before anything is written
    run_dir, done = outputs.start_run(cfg) if cfg.out_dir else (None, False)
    try:
        if done:
            metrics, dist_steps, dist = outputs.load_run(run_dir)
            return _result(cfg, metrics, dist_steps, dist, run_dir, loaded=True)
        rec, prob = train(cfg)
        last = cfg.total_steps
        keep = np.unique(np.r_[np.arange(0, last + 1, cfg.dist_every), last])
        keep = keep[(keep % cfg.eval_every == 0) | (keep == last)]
        metrics = rec.frame(cfg.seeds, prob.reward_K, prob.ref_logp_K)
        result = _result(cfg, metrics, keep, rec.mean_p[keep].numpy(), run_dir)
        if run_dir is not None:
            if cfg.report_to != "none":
                outputs.report(cfg, run_dir, result.metrics)
            plot = None
            if cfg.plot:
                ref_K, reward_K = prob.ref_logp_K.exp().numpy(), prob.reward_K.numpy()
                plot = partial(summary_plot.write, cfg, run_dir, result.metrics, result.dist,
                               ref_K, reward_K)  # fmt: skip
            outputs.finish_run(run_dir, result.metrics, result.dist_steps, result.dist, plot)
        return result
    except Exception as e:  # FAILED says why (where the disk still takes it); never COMPLETE
        if run_dir is not None and not done:
            outputs.mark_failed(run_dir, e)
        raise
    finally:
        if run_dir is not None:  # the directory's claim ends with the run, however it ends
            runio.release_run_dir(run_dir)


def parse(argv: list[str]) -> BanditConfig:
    """The command line → a validated config (``runio.UserError`` naming the field)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", default=None)
    known, rest = pre.parse_known_args(argv)
    import tyro

    base = preset(known.preset) if known.preset else BanditConfig()
    description = (
        f"{__doc__}\nPresets (--preset NAME, then override any field): "
        f"{', '.join(sorted(PRESETS))}."
    )
    with deferred_validation():  # validated below: one error line, not tyro's panel
        cfg = one_line_cli(
            lambda: tyro.cli(BanditConfig, default=base, args=rest, description=description)
        )
    validate(cfg)
    return cfg


def summary(result: RunResult) -> str:
    """The line the command prints: final expected reward over seeds, and where the run is."""
    cfg = result.config
    final = result.metrics[result.metrics.step == cfg.total_steps]["reward/expected"]
    if result.run_dir is None:
        where = "nothing written (no --out-dir)"
    elif result.loaded:
        where = f"loaded (complete run) {result.run_dir}"
    else:
        where = f"outputs in {result.run_dir}"
    return (
        f"{cfg.run_name()}: expected reward after {cfg.total_steps} steps "
        f"{final.mean():.3f} ± {final.std(ddof=0):.3f} over {len(cfg.seeds)} seed(s); {where}"
    )


def main(argv: list[str] | None = None) -> int:
    """The console entry (``modeseek-bandit``, ``python -m toy.train``): parse, run, print the
    summary; returns the exit code under the error contract (``runio.cli_entry``: one
    ``error:`` line, 2 for a user error, 3 for a non-finite loss; ``--debug``: the traceback).
    In-process callers wanting the result use ``run(parse(argv))``."""
    return cli_entry(lambda args: print(summary(run(parse(args)))), argv)


if __name__ == "__main__":
    sys.exit(main())
