"""Train bandit policies with any registry objective (paper A, Algorithm 1), several seeds at once.

    python -m toy.train --preset onpolicy_bon --objective dpo --hp beta=0.1 --seeds 0 1 2 3 4
    python -m toy.train --help

From Python: ``result = toy.train.run(BanditConfig(...))`` or ``run(preset("offline_ipo"))``.

Outputs go to ``<out_dir>/<name>/`` (see ``toy.runio``): ``config.json`` before training, then
``metrics.jsonl`` and ``dist.npz`` (and, with ``--report-to tensorboard|wandb``, ``tracking/``:
the same metrics through accelerate's trackers, see ``report``), then ``COMPLETE`` last. The
automatic name ends in a hash of every field that changes the results, so different configs
never share a directory.

Reliability:

- Every invalid config value is an error naming the field, raised before any directory is
  created or training starts; on the command line it is one ``error: ...`` line and exit code 2
  (``runio.cli_entry``; ``--debug`` shows the traceback).
- A non-finite loss or gradient norm (any seed) stops the run with ``runio.NonFiniteError``
  naming the first bad step and seed (exit code 3). It is checked once per round from the
  recorder's buffers, so the loop is not slowed. No metrics, distributions or COMPLETE marker
  are written: the directory keeps only config.json, an incomplete run.
- An existing run directory is refused unless ``--resume`` or ``--overwrite``. ``--resume`` of
  a complete run loads it without training; ``--resume`` of an incomplete one (killed mid-way)
  checks that the config matches and reruns it from scratch. The toy needs no checkpoints:
  runs take seconds and are fully deterministic, so the rerun's outputs are identical to those
  of an uninterrupted run.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import queue
import sys
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:  # pandas is imported where a table is built, not on the training path
    import pandas as pd
from tqdm.auto import tqdm

import objectives
import rounds
from objectives import values_checked_once
from runio import NonFiniteError, cli_entry, deferred_validation
from toy import runio as toy_runio
from toy.bandit import CONTEXT_DIM, contexts, reference_probs, reward_vector
from toy.config import PRESETS, BanditConfig, preset, validate
from toy.data import round_of_arms, sample_arms
from toy.metrics import Recorder
from toy.optim import RowAdam
from toy.policy import POLICIES, fit_to_reference, flatten_parameters, kl_to_reference
from toy.threads import background_eval, small_problem_threads

# flatten_parameters gives the policy strided gradient views on purpose (see its docstring)
warnings.filterwarnings("ignore", message="grad and param do not obey the gradient layout")


@dataclass
class RunResult:
    config: BanditConfig
    metrics: pd.DataFrame
    """One row per (seed, step); see toy.metrics for the columns."""
    dist_steps: np.ndarray
    dist: np.ndarray
    """(len(dist_steps), S, K): mean over eval contexts of π(·|x) at those steps."""
    run_dir: Path | None
    loaded: bool = False
    """True when ``--resume`` found the run complete and loaded it instead of training."""


@dataclass(frozen=True)
class Rows:
    """The independent runs of one batched computation, one per row S: each row's seed and
    learning rate, and per-row values of the objective's hyperparameters (``toy.sweep`` makes
    grid points × seeds; a plain config makes one row per seed). Rows sharing a seed share its
    contexts, prompt draws, uniforms and π_ref initialisation."""

    seeds: tuple[int, ...]
    lr: tuple[float, ...]
    hp: tuple[tuple[str, tuple[float, ...]], ...] = ()
    """(name, one value per row) for hyperparameters that vary across rows."""

    @classmethod
    def of(cls, cfg: BanditConfig) -> Rows:
        return cls(tuple(cfg.seeds), (cfg.lr,) * len(cfg.seeds))


class _Problem:
    """Everything fixed for a run: reference, reward, contexts, generators (one per row)."""

    def __init__(self, cfg: BanditConfig, rows: Rows):
        self.gens = [torch.Generator().manual_seed(s) for s in rows.seeds]
        self.ref_logp_K = reference_probs(cfg.n_arms, dtype=torch.float32).log()
        source = cfg.reward if cfg.reward_vector is None else cfg.reward_vector
        self.reward_K = reward_vector(source, cfg.n_arms, dtype=torch.float32)
        self.train_ctx = torch.stack([contexts(cfg.n_train_contexts, g) for g in self.gens])
        self.eval_ctx = torch.stack([contexts(cfg.n_eval_contexts, g) for g in self.gens])

    def uniforms(self, *shape: int) -> torch.Tensor:
        return torch.stack([torch.rand(*shape, generator=g) for g in self.gens])

    def draw_prompts(self, n_train: int, p: int) -> torch.Tensor:
        """Each round's P prompts: the whole pool when it holds exactly P (the official
        setup: every training prompt once per round), else P draws with replacement."""
        if n_train == p:
            return torch.arange(p).expand(len(self.gens), p)
        return torch.stack([torch.randint(n_train, (p,), generator=g) for g in self.gens])

    def permutations(self, p: int) -> torch.Tensor:
        return torch.stack([torch.randperm(p, generator=g) for g in self.gens])


def _collect(
    cfg: BanditConfig, prob: _Problem, rnd: int, prompts_SP, policy_logp_SPK
) -> rounds.Round:
    """Sample N responses per prompt: round 0 and offline samples from π_ref, others fresh."""
    s, p, n = len(prob.gens), cfg.prompts_per_round, cfg.samples_per_prompt
    n_off = rounds.offline_count(cfg.mode, n, rnd, cfg.offline_fraction)
    offline_SPN = rounds.offline_mask(n_off, (s, p, n))
    ref_probs = prob.ref_logp_K.exp().expand(s, p, -1)
    probs = torch.where(offline_SPN[..., :1], ref_probs, policy_logp_SPK.exp())
    arms = (
        sample_arms(probs, prob.uniforms(p, n))
        if n_off in (0, n)
        else torch.where(
            offline_SPN,
            sample_arms(ref_probs, prob.uniforms(p, n)),
            sample_arms(policy_logp_SPK.exp(), prob.uniforms(p, n)),
        )
    )
    return round_of_arms(
        prompts_SP,
        arms,
        prob.reward_K,
        policy_logp_SPK,
        prob.ref_logp_K,
        offline_SPN,
        cfg.pair_threshold,
    )


# Fitted initial parameters, keyed by everything they depend on: sweeps in one process (the
# figures) fit each seed set once.
_INIT_CACHE: dict[tuple, dict[str, torch.Tensor]] = {}


def _make_policy(cfg: BanditConfig, prob: _Problem, rows: Rows) -> torch.nn.Module:
    """The rows' policies at π_ref: fitted once per distinct seed, then copied to its rows."""
    if cfg.policy == "mlp":
        policy = POLICIES["mlp"](prob.gens)
    else:
        policy = POLICIES[cfg.policy](prob.gens, cfg.n_arms)
    unique = tuple(dict.fromkeys(rows.seeds))
    first = torch.tensor([rows.seeds.index(u) for u in unique])
    key = (cfg.policy, unique, cfg.n_arms, cfg.init_steps, cfg.init_lr, cfg.init_contexts,
           cfg.n_train_contexts)  # fmt: skip
    if key not in _INIT_CACHE:
        distinct = copy.deepcopy(policy)
        for param in distinct.parameters():
            param.data = param.data[first].clone()
        init_ctx = prob.train_ctx[first, : cfg.init_contexts]
        fit_to_reference(distinct, init_ctx, prob.ref_logp_K, cfg.init_steps, cfg.init_lr)
        if len(_INIT_CACHE) >= 64:
            _INIT_CACHE.pop(next(iter(_INIT_CACHE)))
        _INIT_CACHE[key] = {k: v.detach().clone() for k, v in distinct.state_dict().items()}
    to_row = torch.tensor([unique.index(s) for s in rows.seeds])
    policy.load_state_dict({k: v[to_row] for k, v in _INIT_CACHE[key].items()})
    return policy


def _update_baseline(cfg: BanditConfig, baseline_S, rnd: rounds.Round, r: int):
    """Running mean of past rounds' rewards (the next round's baseline; ``rounds``)."""
    return rounds.update_baseline(baseline_S, rnd.rewards_PN, cfg.baseline_decay, first=r == 0)


def _check_finite(cfg: BanditConfig, rows: Rows, rec: Recorder, first: int, last: int) -> None:
    """Raise ``NonFiniteError`` at the first (step, seed) of steps ``first..last`` whose loss or
    gradient norm is not finite. One vectorised test over the recorder's rows: called once per
    round, it costs nothing measurable."""
    loss, grad = rec.loss[first : last + 1], rec.grad_norm[first : last + 1]
    ok = torch.isfinite(loss) & torch.isfinite(grad)
    if bool(ok.all()):
        return
    i, j = (~ok).nonzero()[0].tolist()  # row-major: the earliest step, then the first seed
    step, t = first + i, cfg.steps_in_round
    what = "gradient norm" if torch.isfinite(loss[i, j]) else "loss"
    raise NonFiniteError(
        f"non-finite {what} at step {step} (round {(step - 1) // t}, step {(step - 1) % t + 1} "
        f"of the round), seed {rows.seeds[j]}{_row_note(rows, j)}: loss {loss[i, j].item():.4g}, "
        f"gradient norm {grad[i, j].item():.4g}; lower --lr or check --hp"
    )


def _row_note(rows: Rows, j: int) -> str:
    """ ", lr 0.01, beta=0.3" for a row of a sweep whose values vary; "" otherwise."""
    varies = len(set(rows.lr)) > 1 or rows.hp
    if not varies:
        return ""
    return f", lr {rows.lr[j]:g}" + "".join(f", {k}={v[j]:g}" for k, v in rows.hp)


def _check_final_policy(rows: Rows, rec: Recorder, step: int) -> None:
    """The last update has no loss after it: check the policy it produced."""
    ok = torch.isfinite(rec.mean_p[step]).all(-1)
    if not bool(ok.all()):
        j = int((~ok).nonzero()[0])
        raise NonFiniteError(
            f"non-finite policy after the last update (step {step}), seed {rows.seeds[j]}"
            f"{_row_note(rows, j)}; lower --lr or check --hp"
        )


class _EvalBuffer:
    """Parameters after each update, evaluated in blocks: one batched forward over several
    steps' parameter sets (rows = steps × S) instead of one small forward per step. The
    metrics are the same numbers. The evaluation forward over ``n_eval_contexts`` is ~10x the
    arithmetic of a training step on P = 10 prompts; ``eval_every`` thins it.

    With ``background`` (``toy.threads.background_eval``: two or more CPUs), full blocks are
    evaluated by one worker thread while the loop trains on: it calls the policy's
    ``forward_params`` (which leaves the module alone; a policy without one is evaluated by
    ``functional_call`` on a copy, since that swaps a module's parameters while it runs),
    writes only the recorder's evaluation rows (the loop writes only its training rows), and
    each op is a single-threaded torch kernel that releases the GIL.
    The blocks, their shapes and so every metric are exactly those of the serial path.
    ``close()`` waits for the worker and re-raises its exception; call it in ``finally``."""

    BUFFERS = 3
    """Parameter blocks in flight: one being filled, up to two queued or being evaluated."""

    def __init__(self, policy: torch.nn.Module, flat: torch.Tensor, eval_ctx_SEC, rec: Recorder,
                 background: bool = False):  # fmt: skip
        s, d = flat.shape
        e = eval_ctx_SEC.shape[1]
        self.block = max(1, min(64, 2_000 // (s * e)))  # ≤ ~2k context rows per forward
        self.names = [name for name, _ in policy.named_parameters()]
        self.sizes = [p[0].numel() for p in policy.parameters()]
        self.shapes = [tuple(p.shape[1:]) for p in policy.parameters()]
        self.flat, self.rec, self.ctx = flat, rec, eval_ctx_SEC
        functional = hasattr(policy, "forward_params")  # else functional_call on a copy
        self.policy = copy.deepcopy(policy) if background and not functional else policy
        n_buffers = self.BUFFERS if background else 1
        self.free: queue.Queue = queue.Queue()
        for _ in range(n_buffers):
            self.free.put(torch.empty(self.block, s, d))
        self.hist = self.free.get()
        self.first, self.count = 0, 0
        self.error: BaseException | None = None
        self.cancelled = False
        self.work: queue.Queue | None = None
        if background:
            self.work = queue.Queue()
            self.worker = threading.Thread(target=self._serve, name="toy-eval", daemon=True)
            self.worker.start()

    def push(self, step: int) -> None:
        """Keep the current parameters as those of ``step`` (after ``step`` updates)."""
        if self.count and step != self.first + self.count:  # blocks hold consecutive steps
            self.flush()
        if self.count == 0:
            self.first = step
        self.hist[self.count].copy_(self.flat.detach())
        self.count += 1
        if self.count == self.block:
            self.flush()

    def flush(self) -> None:
        """Evaluate the block being filled (queue it for the worker when there is one)."""
        if not self.count:
            return
        if self.work is None:
            self._evaluate(self.first, self.hist, self.count)
        else:
            if self.error is not None:
                self.close()  # raises the worker's exception
            self.work.put((self.first, self.hist, self.count))
            self.hist = self.free.get()  # waits while the worker is two blocks behind
        self.count = 0

    def close(self, finish: bool = True) -> None:
        """Stop the worker: with ``finish``, after evaluating what is queued, then re-raise
        any exception it had; without (the loop failed), drop the queued blocks, raise nothing."""
        if self.work is not None:
            if not finish:
                self.cancelled = True
            self.work.put(None)
            self.worker.join()
            self.work = None
        if self.error is not None and finish:
            error, self.error = self.error, None
            raise error

    def _serve(self) -> None:
        while (item := self.work.get()) is not None:
            if self.error is None and not self.cancelled:  # else drain without evaluating
                try:
                    self._evaluate(*item)
                except BaseException as exc:  # re-raised in the loop's thread by close()
                    self.error = exc
            self.free.put(item[1])

    @torch.no_grad()
    def _evaluate(self, first: int, hist: torch.Tensor, count: int) -> None:
        b, s = count, hist.shape[1]
        rows = hist[:b].reshape(b * s, -1)
        params, offset = {}, 0
        for name, size, shape in zip(self.names, self.sizes, self.shapes):
            params[name] = rows[:, offset : offset + size].view(b * s, *shape)
            offset += size
        ctx = self.ctx.expand(b, *self.ctx.shape).reshape(b * s, *self.ctx.shape[1:])
        if hasattr(self.policy, "forward_params"):
            logits = self.policy.forward_params(params, ctx)
        else:
            logits = torch.func.functional_call(self.policy, params, (ctx,))
        logp = torch.log_softmax(logits, -1).view(b, s, *logits.shape[1:])
        self.rec.record_eval_block(first, logp)


def _row_hparams(obj, hp: dict, rows: Rows, s: int) -> dict:
    """The objective's keyword hyperparameters with the per-row ones as (S, 1[, 1]) tensors
    (shaped to broadcast against its inputs: pairs (S, B), groups (S, P, N))."""
    out = dict(hp)
    dims = 2 if obj.data == "groups" else 1
    for name, values in rows.hp:
        out[name] = torch.tensor(values, dtype=torch.float32).view(s, *[1] * dims)
    return out


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


def train(cfg: BanditConfig, rows: Rows | None = None, bar=None) -> tuple[Recorder, _Problem]:
    """The training loop of Algorithm 1; returns the filled recorder and the problem.

    ``rows`` (default: one row per seed of ``cfg``) are independent runs trained as one batched
    computation (``toy.sweep``). Raises ``runio.NonFiniteError`` (checked at the end of every
    round) when a loss or gradient norm of any row is NaN or infinite."""
    rows = rows or Rows.of(cfg)
    obj = objectives.get(cfg.objective)
    hp = _row_hparams(obj, cfg.hparams(), rows, len(rows.seeds))
    prob = _Problem(cfg, rows)
    s, p, n = len(rows.seeds), cfg.prompts_per_round, cfg.samples_per_prompt
    m = cfg.minibatch_size or p
    with small_problem_threads(rows=s) as n_threads:
        policy = _make_policy(cfg, prob, rows)
        flat = flatten_parameters(policy)
        opt = RowAdam(flat, torch.tensor(rows.lr))
        rec = Recorder(cfg.total_steps, s, cfg.n_arms, p, n, m)
        evals = _EvalBuffer(policy, flat, prob.eval_ctx, rec, background_eval(n_threads))
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
                prompts_SP = prob.draw_prompts(cfg.n_train_contexts, p)
                ctx_SPD = prob.train_ctx.gather(
                    1, prompts_SP[..., None].expand(-1, -1, CONTEXT_DIM)
                )
                with torch.no_grad():  # collect with the policy as it is at the round's start
                    collect_logp = torch.log_softmax(policy(ctx_SPD), -1)
                rnd = _collect(cfg, prob, r, prompts_SP, collect_logp)
                rec.rounds.append(rnd)
                for _ in range(cfg.steps_per_round):
                    batches = (
                        [None]
                        if m == p
                        else prob.permutations(p).split(m, dim=1)  # a pass over the round
                    )
                    for idx_SM in batches:
                        if step % cfg.eval_every == 0:
                            evals.push(step)
                        sub = rnd if idx_SM is None else rnd.subset(idx_SM)
                        ctx = (
                            ctx_SPD
                            if idx_SM is None
                            else ctx_SPD.gather(1, idx_SM[..., None].expand(-1, -1, CONTEXT_DIM))
                        )
                        logits, saved = train_forward(policy, ctx)
                        train_logp = torch.log_softmax(logits, -1)
                        logps_SMN = train_logp.gather(-1, sub.samples_PN)
                        checks = (
                            values_checked_once()
                            if step % cfg.steps_in_round
                            else (contextlib.nullcontext())
                        )  # checked at each round's first step
                        with checks:
                            loss_S = rounds.round_loss(obj, hp, logps_SMN, sub, baseline_S, lead=1)
                        if cfg.kl_penalty:
                            kl_S = kl_to_reference(train_logp, prob.ref_logp_K).mean(-1)
                            loss_S = loss_S + cfg.kl_penalty * kl_S
                        train_backward(policy, flat, loss_S, logits, saved)
                        step += 1
                        rec.record_train(step, loss_S, flat.grad.norm(dim=1), logps_SMN, idx_SM)
                        opt.step(flat.grad)
                        bar.update(per_step)
                _check_finite(cfg, rows, rec, step - cfg.steps_in_round + 1, step)
                if baseline_S is not None:
                    baseline_S = _update_baseline(cfg, baseline_S, rnd, r)
            evals.push(step)
            evals.flush()
            evals.close()
            _check_final_policy(rows, rec, step)
        finally:
            evals.close(finish=False)  # no worker left behind (a no-op after close())
            if own_bar:
                bar.close()
    return rec, prob


def run(cfg: BanditConfig) -> RunResult:
    """Run ``cfg`` (all its seeds batched) and write its outputs under ``cfg.out_dir``.

    With ``cfg.resume`` and a complete run already there, that run is loaded and returned
    without training. Raises ``runio.UserError`` (existing run, mismatched resume) before
    anything is written, and ``runio.NonFiniteError`` when training diverges."""
    run_dir, done = toy_runio.start_run(cfg) if cfg.out_dir else (None, False)
    if done:
        metrics, dist_steps, dist = toy_runio.load_run(run_dir)
        return RunResult(cfg, metrics, dist_steps, dist, run_dir, loaded=True)
    rec, prob = train(cfg)
    keep = np.unique(np.r_[np.arange(0, cfg.total_steps + 1, cfg.dist_every), cfg.total_steps])
    keep = keep[(keep % cfg.eval_every == 0) | (keep == cfg.total_steps)]
    result = RunResult(
        cfg,
        rec.frame(cfg.seeds, prob.reward_K, prob.ref_logp_K),
        keep,
        rec.mean_p[keep].numpy(),
        run_dir,
    )
    if run_dir is not None:
        if cfg.report_to != "none":
            report(cfg, run_dir, result.metrics)
        toy_runio.finish_run(run_dir, result.metrics, result.dist_steps, result.dist)
    return result


def report(cfg: BanditConfig, run_dir: Path, metrics: pd.DataFrame) -> None:
    """Log ``metrics`` (the metrics.jsonl table) to ``cfg.report_to``'s tracker (accelerate's,
    in ``run_dir/tracking``; ``runio.tracking``), with the resolved config as hyperparameters.
    Every step is logged at its step under the metrics.jsonl names, NaN (not evaluated) skipped:
    one seed's values, or with several seeds the mean over seeds (of those with a value) plus
    ``<name>/seed_<s>`` per seed. accelerate and the tracker are imported only here."""
    from runio import tracking

    names = [c for c in metrics.columns if c not in ("seed", "step")]
    table = metrics.groupby("step")[names].mean()
    if len(cfg.seeds) > 1:
        import pandas as pd

        wide = metrics.pivot(index="step", columns="seed", values=names)
        wide.columns = [f"{name}/seed_{seed}" for name, seed in wide.columns]
        table = pd.concat([table, wide], axis=1)
    tags = [str(t) for t in table.columns]
    config = toy_runio.resolved_config(cfg)
    tracker = tracking.open_tracker(cfg.report_to, run_dir, cfg.run_name(), config, tag="[toy]")
    with tracking.finishing([tracker]):
        steps = [int(step) for step in table.index]
        tracking.log_table(tracker, steps, tags, table.to_numpy().tolist())


def parse_args(argv: list[str]) -> BanditConfig:
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
        cfg = tyro.cli(BanditConfig, default=base, args=rest, description=description)
    validate(cfg)
    return cfg


def main(argv: list[str] | None = None) -> RunResult:
    """Parse, run and summarise. In-process callers get the ``RunResult`` (and the exceptions);
    ``python -m toy.train`` goes through ``runio.cli_entry`` (one error line, exit code 2)."""
    cfg = parse_args(list(sys.argv[1:] if argv is None else argv))
    result = run(cfg)
    final = result.metrics[result.metrics.step == cfg.total_steps]
    if result.run_dir is None:
        where = "nothing written (no --out-dir)"
    elif result.loaded:
        where = f"loaded (complete run) {result.run_dir}"
    else:
        where = f"outputs in {result.run_dir}"
    print(
        f"{cfg.run_name()}: expected reward after {cfg.total_steps} steps "
        f"{final['reward/expected'].mean():.3f} ± {final['reward/expected'].std(ddof=0):.3f} "
        f"over {len(cfg.seeds)} seed(s); {where}"
    )
    return result


def cli(argv: list[str] | None = None) -> int:
    """The ``modeseek-bandit`` console script: exit code under the error contract."""
    return cli_entry(main, argv)


if __name__ == "__main__":
    sys.exit(cli())
