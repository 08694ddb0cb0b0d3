"""The bandit's thread policy: the evaluation worker (``toy.evaluation.EvalBuffer`` with
``background``) gives exactly the serial path's metrics, passes its exceptions to the caller
and never outlives a run; ``toy.threads`` resolves settings in the documented order."""

import threading

import pandas as pd
import pytest
import torch

from runio import NonFiniteError
from toy import threads
from toy.config import BanditConfig
from toy.evaluation import EvalBuffer
from toy.metrics import Recorder
from toy.train import run

# 2 seeds × 100 eval contexts → blocks of 10 steps: 8 blocks, so the 3 buffers are reused
CFG = BanditConfig(objective="dpo", prompts_per_round=4, samples_per_prompt=4, rounds=5,
                   steps_per_round=15, seeds=(0, 1), out_dir="", progress=False)  # fmt: skip


def _workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "toy-eval" and t.is_alive()]


def test_worker_metrics_equal_the_serial_path_exactly(monkeypatch):
    monkeypatch.setenv(threads.EVAL_THREAD_VAR, "0")
    serial = run(CFG)
    monkeypatch.setenv(threads.EVAL_THREAD_VAR, "1")
    seen = []
    original = EvalBuffer._evaluate

    def spy(self, first, hist, count):
        seen.append(threading.current_thread().name)
        return original(self, first, hist, count)

    monkeypatch.setattr(EvalBuffer, "_evaluate", spy)
    background = run(CFG)
    assert len(seen) >= 8 and set(seen) == {"toy-eval"}  # every block went to the worker
    assert not serial.metrics["reward/expected"].isna().any()
    pd.testing.assert_frame_equal(serial.metrics, background.metrics, check_exact=True)
    assert (serial.dist == background.dist).all()
    assert not _workers()


def test_worker_exception_reaches_the_caller(monkeypatch):
    monkeypatch.setenv(threads.EVAL_THREAD_VAR, "1")

    def broken(self, first, logp):
        raise RuntimeError(f"evaluation failed at step {first}")

    monkeypatch.setattr(Recorder, "record_eval_block", broken)
    with pytest.raises(RuntimeError, match="evaluation failed at step 0"):
        run(CFG)
    assert not _workers()


def test_worker_stops_when_the_loop_fails(monkeypatch):
    monkeypatch.setenv(threads.EVAL_THREAD_VAR, "1")
    with pytest.raises(NonFiniteError):
        run(CFG.replace(lr=1e30))
    assert not _workers()


def test_eval_buffer_close_is_idempotent(monkeypatch):
    flat = torch.zeros(1, 3)
    buf = EvalBuffer(torch.nn.Linear(1, 1), flat, torch.zeros(1, 4, 1), rec=None,
                      background=True)  # fmt: skip
    buf.close()
    buf.close(finish=False)
    assert not _workers()


@pytest.mark.parametrize(
    ("value", "cpus", "n_threads", "expected"),
    [("0", 8, 1, False), ("1", 1, 1, True), ("", 2, 1, True), ("", 1, 1, False),
     ("", 2, 2, False), ("yes", 4, 1, True)],
)  # fmt: skip
def test_background_eval_rule(monkeypatch, value, cpus, n_threads, expected):
    monkeypatch.setenv(threads.EVAL_THREAD_VAR, value)
    monkeypatch.setattr(threads, "usable_cpus", lambda: cpus)
    assert threads.background_eval(n_threads) is expected


def test_thread_settings_precedence(monkeypatch):
    monkeypatch.delenv("MODESEEK_THREADS", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.resolve_threads(rows=1) == 3
    monkeypatch.setenv("MODESEEK_THREADS", "2")
    assert threads.resolve_threads(rows=1) == 2
    assert threads.resolve_threads(rows=1, n_threads=5) == 5
    monkeypatch.setenv("MODESEEK_THREADS", "junk")
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert threads.resolve_threads(rows=1) == threads.thread_policy(1) == 1
    with pytest.raises(ValueError, match="n_threads must be >= 1"):
        threads.resolve_threads(n_threads=0)
    before = torch.get_num_threads()
    with threads.small_problem_threads(n_threads=1) as used:
        assert used == 1 == torch.get_num_threads()
    assert torch.get_num_threads() == before


def test_command_line_entry_freezes_the_heap_only_for_real_command_lines(monkeypatch):
    import errors

    frozen = []
    monkeypatch.setattr(errors.gc, "freeze", lambda: frozen.append(True))
    assert errors.cli_entry(lambda args: None, ["--x"]) == 0
    assert frozen == []  # in-process callers keep their collector
    monkeypatch.setattr("sys.argv", ["prog", "--x"])
    assert errors.cli_entry(lambda args: None) == 0
    assert frozen == [True]
