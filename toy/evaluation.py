"""Watching a bandit run as it trains: the metrics' evaluation forwards, batched over blocks of
steps and optionally run by a worker thread (``EvalBuffer``), and the checks that stop a run whose
loss, gradient norm or final policy is not finite (``check_finite``, ``check_final_policy``).
"""

from __future__ import annotations

import copy
import queue
import threading
from typing import TYPE_CHECKING

import torch

from runio import NonFiniteError
from toy.config import BanditConfig
from toy.metrics import Recorder

if TYPE_CHECKING:
    from toy.problem import Rows


def check_finite(cfg: BanditConfig, rows: Rows, rec: Recorder, first: int, last: int) -> None:
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


def check_final_policy(rows: Rows, rec: Recorder, step: int) -> None:
    """The last update has no loss after it: check the policy it produced."""
    ok = torch.isfinite(rec.mean_p[step]).all(-1)
    if not bool(ok.all()):
        j = int((~ok).nonzero()[0])
        raise NonFiniteError(
            f"non-finite policy after the last update (step {step}), seed {rows.seeds[j]}"
            f"{_row_note(rows, j)}; lower --lr or check --hp"
        )


class EvalBuffer:
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
