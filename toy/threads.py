"""Intra-op thread policy for the bandit's small tensors.

    from toy.threads import small_problem_threads
    with small_problem_threads(rows=S):  # S: independent runs batched in one computation
        ...  # training loop

The bandit's tensors are tiny (a 110k-parameter MLP on 10 contexts per row), so a step is bound
by per-operation overhead, not arithmetic: a second intra-op thread buys little on an idle
machine and, when other processes keep the cores busy, each parallel region waits for a
descheduled worker thread and the run collapses (seen here: 5 min 8 s instead of 4.9 s).

Rule: one intra-op thread for every batch size (``MULTI_THREAD_ROWS`` is the switch for larger
problems), and, when a CPU is left free, one worker thread that evaluates the metrics
(``background_eval``): the evaluation forward over 100 contexts after every step is the largest
single piece of arithmetic, and it needs nothing from the loop but a copy of the parameters, so
it runs beside the training step instead of after it, in blocks of steps taken from a queue.
Measured by ``python -m bench.toy_speed --load 2`` (docs/speed.md): with two busy processes beside
it the 1-seed preset stays within 2× of idle, where two intra-op threads had collapsed to minutes.

Precedence: ``n_threads`` given explicitly, then the ``MODESEEK_THREADS`` environment variable,
then ``OMP_NUM_THREADS`` (the user's explicit choice wins over the rule), then the rule. The
previous ``torch.get_num_threads()`` is restored on exit, also on exceptions.
``torch.set_num_interop_threads`` is left alone: it can be set only once per process, before
any inter-op work, and the bandit uses no inter-op parallelism.

``torch.set_num_threads`` is process-wide: do not nest this around code running in other
Python threads that expects its own setting.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

ENV_VARS = ("MODESEEK_THREADS", "OMP_NUM_THREADS")
EVAL_THREAD_VAR = "MODESEEK_EVAL_THREAD"
"""0: evaluate the metrics in the training loop's thread; 1: in a worker thread even on one
CPU; unset: decided by ``background_eval``."""
"""Explicit user settings, checked in this order; the first set to a positive integer wins."""

MULTI_THREAD_ROWS = 10**9
"""Batches with at least this many rows may use more than one thread (see the module doc)."""


def _from_env() -> int | None:
    for name in ENV_VARS:
        value = os.environ.get(name, "").strip()
        if value:
            try:
                n = int(value)
            except ValueError:
                continue
            if n >= 1:
                return n
    return None


def thread_policy(rows: int) -> int:
    """Intra-op threads for a batch of ``rows`` independent bandit runs, ignoring the
    environment (see the module docstring for the measurements behind it)."""
    if rows >= MULTI_THREAD_ROWS:
        return min(2, os.cpu_count() or 1)
    return 1


def resolve_threads(rows: int | None = None, n_threads: int | None = None) -> int:
    """The thread count ``small_problem_threads`` would use: ``n_threads``, else the
    environment (``MODESEEK_THREADS``, ``OMP_NUM_THREADS``), else ``thread_policy(rows)``
    (``rows`` None counts as 1)."""
    if n_threads is not None:
        if n_threads < 1:
            raise ValueError(f"n_threads must be >= 1, got {n_threads}")
        return int(n_threads)
    env = _from_env()
    if env is not None:
        return env
    return thread_policy(1 if rows is None else rows)


@contextlib.contextmanager
def small_problem_threads(rows: int | None = None, n_threads: int | None = None) -> Iterator[int]:
    """Set torch's intra-op threads for a small problem of ``rows`` batched runs; restore the
    previous count on exit. Yields the count used. See ``resolve_threads`` for precedence."""
    previous = torch.get_num_threads()
    wanted = resolve_threads(rows, n_threads)
    if wanted != previous:
        torch.set_num_threads(wanted)
    try:
        yield wanted
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def background_eval(n_threads: int) -> bool:
    """Whether the training loop hands its evaluation forwards to one worker thread
    (``toy.train._EvalBuffer``): when the loop's ``n_threads`` intra-op threads leave a CPU
    free, unless ``MODESEEK_EVAL_THREAD=0``. Unlike a second intra-op thread, the worker never
    makes the loop wait at a per-op barrier: it takes whole blocks of steps from a queue, and
    the loop waits only when the worker is two blocks behind (and once at the end), so a busy
    machine slows it by its share of the CPU rather than by a descheduled thread's time slice.
    The metrics are identical either way."""
    value = os.environ.get(EVAL_THREAD_VAR, "").strip()
    if value in ("0", "1"):
        return value == "1"
    return usable_cpus() > n_threads
