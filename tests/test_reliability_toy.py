"""The bandit's entry points under contention, bad kinds of values, disk and permission faults,
and retries (``toy.train``, ``toy.run``, ``toy.sweep``, ``toy.gradients --out``). Every case
asserts the exit code, exactly one ``error:`` line, nothing left behind (no run directory for a
refused config, no ``.lock``) and nothing lost (an existing run's files untouched)."""

import dataclasses
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest

from runio import LOCK, UserError, deferred_validation, is_complete
from toy import gradients, outputs
from toy import sweep as toy_sweep
from toy import train as toy_train
from toy.config import BanditConfig, preset
from toy.gradient_config import MassConfig, PointConfig
from toy.sweep import SweepConfig

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
ENV.pop("MODESEEK_DEBUG", None)
TRAIN = ["--preset", "onpolicy_bon", "--rounds", "2", "--steps-per-round", "2", "--seeds", "0",
         "--init-steps", "2", "--no-progress"]  # fmt: skip
SWEEP = ["--grid", "objective=bon,dpo,ipo", "lr=1e-3,1e-2", "--seeds", "0", "1", "--set",
         "rounds=2", "steps_per_round=2", "prompts_per_round=4", "init_steps=2",
         "n_eval_contexts=5", "--no-progress"]  # fmt: skip
RUN_FILES = ["COMPLETE", "config.json", "dist.npz", "metrics.jsonl", "summary.png"]


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    monkeypatch.delenv("MODESEEK_DEBUG", raising=False)


def one_error(err: str) -> str:
    """The single ``error:`` line of ``err`` (stderr), asserting there is exactly one line."""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def train(capsys, out: Path, *args: str) -> tuple[int, str]:
    code = toy_train.main([*TRAIN, "--out-dir", str(out), *args])
    return code, capsys.readouterr().err


def sweep(capsys, out: Path, *args: str) -> tuple[int, str]:
    code = toy_sweep.main([*SWEEP, "--out", str(out), *args])
    return code, capsys.readouterr().err


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}  # fmt: skip


def no_lock(root: Path) -> None:
    assert not list(Path(root).rglob(LOCK)), f"a {LOCK} was left behind in {root}"


def names(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


# ---------------------------------------------------------------------------------------------
# 3. Every entry point refuses the same wrong kinds of values, naming the field


@pytest.mark.parametrize(
    "field, value",
    [("mode", "sideways"), ("policy", "cnn"), ("baseline", "mean"), ("rounds", 2.5),
     ("init_steps", 3.0), ("seeds", 3), ("hp", "beta=0.1"), ("reward_vector", 1.0),
     ("minibatch_size", 2.5), ("name", "../elsewhere")],
)  # fmt: skip
def test_config_refuses_wrong_kinds_naming_the_field(field, value, tmp_path):
    with pytest.raises(UserError, match=rf"^BanditConfig\.{field}: "):
        BanditConfig(**{field: value, "out_dir": str(tmp_path / "runs")})
    with deferred_validation():  # built past validation, run() still refuses before writing
        cfg = BanditConfig(**{field: value, "out_dir": str(tmp_path / "runs")})
    with pytest.raises(UserError, match=rf"^BanditConfig\.{field}: "):
        toy_train.run(cfg)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "args, text",
    [(["--mode", "sideways"], "--mode"), (["--policy", "cnn"], "--policy"),
     (["--rounds", "2.5"], "--rounds"), (["--baseline", "x"], "--baseline"),
     (["--name", "."], "BanditConfig.name"), (["--minibatch-size", "2.5"], "--minibatch-size"),
     (["--no-such-flag", "1"], "--no-such-flag")],
)  # fmt: skip
def test_train_cli_refuses_wrong_kinds_in_one_line(args, text, tmp_path, capsys):
    code, err = train(capsys, tmp_path / "runs", *args)
    assert code == 2 and text in one_error(err)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "args, text",
    [(["--grid", "rounds=2,2.5"], "BanditConfig.rounds: must be an integer, got 2.5"),
     (["--grid", "policy=mlp,cnn"], "BanditConfig.policy: must be one of"),
     (["--set", "mode=sideways"], "BanditConfig.mode: must be one of"),
     (["--grid", "reward_vector=1"], "--grid reward_vector: a sequence cannot be swept"),
     (["--seeds", "0.5"], "--seeds"), (["--set", "minibatch_size=abc"], "--set minibatch_size"),
     (["--resume", "--overwrite"], "exclude each other")],
)  # fmt: skip
def test_sweep_cli_refuses_wrong_kinds_in_one_line(args, text, tmp_path, capsys):
    code = toy_sweep.main(["--grid", "lr=1e-3", "--out", str(tmp_path / "sw"), *args])
    assert code == 2 and text in one_error(capsys.readouterr().err)
    assert not (tmp_path / "sw").exists()


@pytest.mark.parametrize(
    "make, text",
    [(lambda: SweepConfig(grid="lr=1,2"), "SweepConfig.grid: must be a sequence of strings"),
     (lambda: SweepConfig(grid=("lr=1",), seeds=3), "SweepConfig.seeds: must be a sequence"),
     (lambda: MassConfig(chosen=5), "MassConfig.chosen: must be a sequence of integers"),
     (lambda: MassConfig(policy="cnn"), "MassConfig.policy: must be one of"),
     (lambda: PointConfig(objective="dpo", x_w="0.3", x_l=0.1), "PointConfig.x_w: must be")],
)  # fmt: skip
def test_sweep_and_gradient_configs_refuse_wrong_kinds(make, text):
    with pytest.raises(UserError, match=rf"^{text}"):
        make()


# ---------------------------------------------------------------------------------------------
# 1. One live run per directory


def test_two_same_name_runs_never_both_succeed(tmp_path):
    """Pairs of same-name processes (with different learning rates, so a mix would show) started
    together: exactly one exits 0 per pair; the directory holds that one's config and metrics."""
    lrs = ("0.001", "0.01")
    base = preset("onpolicy_bon", rounds=2, steps_per_round=2, seeds=(0,), init_steps=2,
                  out_dir="", progress=False)  # fmt: skip
    want = {lr: toy_train.run(base.replace(lr=float(lr))).metrics for lr in lrs}
    cmd = [sys.executable, "-m", "toy.train", *TRAIN, "--name", "same"]
    for i in range(8):
        out = tmp_path / f"round{i}"
        procs = [subprocess.Popen([*cmd, "--out-dir", str(out), "--lr", lr], cwd=REPO, env=ENV,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for lr in lrs]  # fmt: skip
        done = [p.communicate(timeout=120) for p in procs]
        codes = [p.returncode for p in procs]
        assert sorted(codes) == [0, 2], done
        winner, loser = codes.index(0), codes.index(2)
        line = one_error(done[loser][1])
        assert "being written by another process" in line or "already holds a run" in line
        run_dir = out / "same"
        assert names(run_dir) == RUN_FILES  # COMPLETE once, no .lock, no temporary file
        config = json.loads((run_dir / "config.json").read_text())["config"]
        assert config["lr"] == float(lrs[winner])
        back = pd.read_json(run_dir / "metrics.jsonl", lines=True)
        pd.testing.assert_frame_equal(back, want[lrs[winner]], check_dtype=False)


HOLD = textwrap.dedent(
    """
    import sys, time
    from runio import claim_run_dir
    for d in sys.argv[1:]:
        claim_run_dir(d, resume=True)
    print("claimed", flush=True)
    time.sleep(60)
    """
)


def test_a_live_run_or_sweep_is_never_touched(tmp_path, capsys):
    runs = tmp_path / "runs"
    assert train(capsys, runs, "--name", "r")[0] == 0
    assert sweep(capsys, tmp_path / "sw")[0] == 0
    before = snapshot(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(runs / "r"), str(tmp_path / "sw")],
                              cwd=REPO, env=ENV, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "claimed"
        code, err = train(capsys, runs, "--name", "r", "--overwrite")
        assert code == 2 and "being written by another process" in one_error(err)
        code, err = sweep(capsys, tmp_path / "sw", "--overwrite")
        assert code == 2 and "being written by another process" in one_error(err)
    finally:
        holder.kill()
        holder.wait()
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if not k.endswith(LOCK)} == before


# ---------------------------------------------------------------------------------------------
# 2. Sweeps never overwrite, and resume what they have not finished


@pytest.fixture(scope="module")
def full_sweep(tmp_path_factory) -> dict[str, bytes]:
    """The tables of an uninterrupted sweep."""
    out = tmp_path_factory.mktemp("full") / "sw"
    assert toy_sweep.main([*SWEEP, "--out", str(out)]) == 0
    assert names(out) == ["COMPLETE", "metrics.csv", "summary.csv", "sweep.json"]
    return {n: (out / n).read_bytes() for n in ("metrics.csv", "summary.csv")}


def counting_batches(monkeypatch, stop_at: int | None = None, exc: BaseException | None = None):
    """Count toy.sweep's computed batches; raise ``exc`` at batch number ``stop_at``."""
    calls = []
    real = toy_sweep._run_batch

    def batch(group, bar):
        calls.append(len(group))
        if stop_at is not None and len(calls) == stop_at:
            raise exc
        return real(group, bar)

    monkeypatch.setattr(toy_sweep, "_run_batch", batch)
    return calls


def test_a_killed_sweep_resumes_only_what_it_had_not_finished(tmp_path, capsys, monkeypatch,
                                                              full_sweep):  # fmt: skip
    out = tmp_path / "sw"
    counting_batches(monkeypatch, stop_at=2, exc=KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):  # as if killed during the second batch
        sweep(capsys, out)
    assert names(out) == ["points", "sweep.json"] and names(out / "points") == ["batch_000.npz"]
    code, err = sweep(capsys, out)
    assert code == 2 and "unfinished sweep" in one_error(err) and "--resume" in err
    calls = counting_batches(monkeypatch)
    assert sweep(capsys, out, "--resume")[0] == 0
    assert len(calls) == 2  # batches 2 and 3 of 3
    assert {n: (out / n).read_bytes() for n in full_sweep} == full_sweep
    assert names(out) == ["COMPLETE", "metrics.csv", "summary.csv", "sweep.json"]


def test_a_sweep_killed_by_a_signal_resumes_to_the_same_tables(tmp_path, capsys, full_sweep):
    out = tmp_path / "sw"
    cmd = [sys.executable, "-m", "toy.sweep", *SWEEP, "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (out / "points" / "batch_000.npz").exists() and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    if is_complete(out):
        pytest.skip("the sweep finished before the kill reached it")
    assert sweep(capsys, out, "--resume")[0] == 0
    assert {n: (out / n).read_bytes() for n in full_sweep} == full_sweep
    no_lock(out)


def test_a_sweep_that_fails_on_a_full_disk_says_so_and_resumes(tmp_path, capsys, monkeypatch,
                                                               full_sweep):  # fmt: skip
    out = tmp_path / "sw"
    real = toy_sweep._store_batch

    def store(store_dir, index, key, frame):
        if index == 1:
            path = store_dir / f"batch_{index:03d}.npz"
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(store_dir, index, key, frame)

    monkeypatch.setattr(toy_sweep, "_store_batch", store)
    code, err = sweep(capsys, out)
    line = one_error(err)
    assert code == 2 and line.endswith("batch_001.npz: No space left on device")
    assert names(out) == ["FAILED", "points", "sweep.json"] and not is_complete(out)
    no_lock(out)
    before = snapshot(out)
    monkeypatch.setattr(toy_sweep, "_store_batch", real)
    code, err = sweep(capsys, out)
    assert code == 2 and "stopped with an error" in one_error(err) and "--resume" in err
    assert snapshot(out) == before
    calls = counting_batches(monkeypatch)
    assert sweep(capsys, out, "--resume")[0] == 0 and len(calls) == 2
    assert {n: (out / n).read_bytes() for n in full_sweep} == full_sweep
    assert "FAILED" not in names(out)


def test_an_existing_sweep_is_never_overwritten_without_a_flag(tmp_path, capsys, monkeypatch):
    out = tmp_path / "sw"
    assert sweep(capsys, out)[0] == 0
    before = snapshot(out)
    calls = counting_batches(monkeypatch)
    code, err = sweep(capsys, out)
    assert code == 2 and "holds a complete sweep" in one_error(err) and "--overwrite" in err
    code = toy_sweep.main([*SWEEP[:6], "--out", str(out), "--resume"])  # another base config
    assert code == 2 and "differs in" in one_error(capsys.readouterr().err)
    assert toy_sweep.main([*SWEEP, "--out", str(out), "--resume"]) == 0  # loaded, not rerun
    assert "loaded (complete sweep)" in capsys.readouterr().out
    assert calls == [] and snapshot(out) == before
    assert sweep(capsys, out, "--overwrite")[0] == 0 and len(calls) == 3
    no_lock(out)


@pytest.mark.parametrize("flag", [[], ["--overwrite"], ["--resume"]])
def test_files_that_are_not_a_sweep_are_never_deleted(flag, tmp_path, capsys, monkeypatch):
    (tmp_path / "notes.txt").write_text("mine")
    calls = counting_batches(monkeypatch)
    code, err = sweep(capsys, tmp_path, *flag)
    assert code == 2 and "not a sweep's (notes.txt)" in one_error(err)
    assert names(tmp_path) == ["notes.txt"] and calls == []


def test_sweep_out_on_a_file_is_refused_before_computing(tmp_path, capsys, monkeypatch):
    (tmp_path / "file").write_text("x")
    calls = counting_batches(monkeypatch)
    code, err = sweep(capsys, tmp_path / "file")
    assert code == 2 and "SweepConfig.out" in one_error(err)
    code, err = sweep(capsys, tmp_path / "file" / "sub")
    assert code == 2 and "SweepConfig.out" in one_error(err) and "not a directory" in err
    assert calls == [] and names(tmp_path) == ["file"]


# ---------------------------------------------------------------------------------------------
# 4. Disk and permission faults


def _unprivileged() -> list[str]:
    """The command prefix under which permissions apply (root's capabilities dropped)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root and setpriv is missing: permissions cannot be enforced")
    return [setpriv, "--inh-caps=-all", "--bounding-set=-all"]


def test_unwritable_places_are_found_before_any_work(tmp_path, capsys):
    prefix = _unprivileged()
    ro = tmp_path / "ro"
    ro.mkdir()
    runs = tmp_path / "runs"  # a killed run (config.json only) whose tracking/ cannot be cleared
    assert train(capsys, runs, "--name", "t")[0] == 0
    for name in ("COMPLETE", "metrics.jsonl", "dist.npz"):
        (runs / "t" / name).unlink()
    (runs / "t" / "tracking").mkdir()
    (runs / "t" / "tracking" / "old").write_text("x")
    for d in (ro, runs / "t" / "tracking"):
        d.chmod(0o555)
    probe = subprocess.run([*prefix, "touch", str(ro / "probe")], capture_output=True)
    if probe.returncode == 0:
        pytest.skip("permissions are not enforced here (the probe could write)")
    train_cmd = [sys.executable, "-m", "toy.train", *TRAIN]
    cases = {
        "BanditConfig.out_dir: cannot create": [*train_cmd, "--out-dir", str(ro / "runs")],
        "SweepConfig.out: cannot create": [sys.executable, "-m", "toy.sweep", *SWEEP, "--out",
                                             str(ro / "sw")],
        f"--out {ro / 't.csv'}: cannot write in": [sys.executable, "-m", "toy.gradients", "point",
            "--objective", "dpo", "--x-w", "0.3", "--x-l", "0.1", "--out", str(ro / "t.csv")],
        "BanditConfig.report_to: cannot clear": [*train_cmd, "--out-dir", str(runs), "--name",
            "t", "--resume", "--report-to", "tensorboard"],
    }  # fmt: skip
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            done = list(
                pool.map(
                    lambda c: subprocess.run(
                        [*prefix, *c],
                        cwd=REPO,
                        env=ENV,
                        capture_output=True,
                        text=True,
                        timeout=120,
                    ),
                    cases.values(),
                )
            )
    finally:
        for d in (ro, runs / "t" / "tracking"):
            d.chmod(0o755)
    for text, proc in zip(cases, done):
        assert proc.returncode == 2 and text in one_error(proc.stderr), (text, proc.stderr)
    assert names(ro) == [] and names(runs / "t") == ["FAILED", "config.json", "tracking"]
    no_lock(tmp_path)


def test_a_file_size_limit_mid_run_leaves_failed_and_retries(tmp_path, capsys):
    runs = tmp_path / "runs"
    args = [*TRAIN, "--rounds", "8", "--out-dir", str(runs), "--name", "big"]
    limited = ["bash", "-c", 'ulimit -f 4 && exec "$@"', "bash", sys.executable, "-m", "toy.train"]
    proc = subprocess.run([*limited, *args], cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    line = one_error(proc.stderr)
    assert proc.returncode == 2 and line.endswith("metrics.jsonl: File too large"), proc.stderr
    assert names(runs / "big") == ["FAILED", "config.json"]
    assert "File too large" in (runs / "big" / "FAILED").read_text()
    before = snapshot(runs)
    assert toy_train.main(args) == 2  # the same command says which flag retries it
    assert "--resume retries it" in one_error(capsys.readouterr().err)
    assert snapshot(runs) == before
    assert toy_train.main([*args, "--resume"]) == 0
    assert names(runs / "big") == RUN_FILES
    want = toy_train.run(toy_train.parse([*args[:-4], "--out-dir", ""])).metrics
    back = pd.read_json(runs / "big" / "metrics.jsonl", lines=True)
    pd.testing.assert_frame_equal(back, want, check_dtype=False)


@pytest.mark.parametrize("where", ["config.json", "dist.npz", "COMPLETE"])
def test_a_full_disk_mid_run_is_one_line_and_retryable(where, tmp_path, capsys, monkeypatch):
    real = outputs.atomic_write

    def full(path, write):  # the writer fails as on a full disk, without naming its file
        def no_space(tmp):
            raise OSError(errno.ENOSPC, "No space left on device")

        real(path, no_space if Path(path).name == where else write)

    monkeypatch.setattr(outputs, "atomic_write", full)
    import runio.rundir

    monkeypatch.setattr(runio.rundir, "atomic_write", full)  # COMPLETE's writer
    code, err = train(capsys, tmp_path, "--name", "r")
    assert code == 2 and one_error(err).endswith(f"{where}: No space left on device")
    assert "FAILED" in names(tmp_path / "r") and not is_complete(tmp_path / "r")
    no_lock(tmp_path)
    monkeypatch.undo()
    assert train(capsys, tmp_path, "--name", "r", "--resume")[0] == 0
    assert names(tmp_path / "r") == RUN_FILES


def test_an_out_dir_under_a_file_is_refused_before_training(tmp_path, capsys, monkeypatch):
    (tmp_path / "file").write_text("x")
    monkeypatch.setattr(toy_train, "train", lambda *a, **k: pytest.fail("trained"))
    for out in (tmp_path / "file", tmp_path / "file" / "runs"):
        code, err = train(capsys, out)
        assert code == 2 and "BanditConfig.out_dir" in one_error(err)
    assert names(tmp_path) == ["file"]


# ---------------------------------------------------------------------------------------------
# 5. Retries that work


def test_a_failed_run_is_retried_by_the_flag_its_refusal_names(tmp_path, capsys):
    code, err = train(capsys, tmp_path, "--name", "d", "--lr", "1e10")  # diverges: exit 3
    assert code == 3 and "non-finite" in one_error(err)
    assert names(tmp_path / "d") == ["FAILED", "config.json"]
    before = snapshot(tmp_path)
    code, err = train(capsys, tmp_path, "--name", "d")
    line = one_error(err)
    assert code == 2 and "stopped with an error" in line and "--overwrite replaces it" in line
    code, err = train(capsys, tmp_path, "--name", "d", "--resume")  # another lr than the run's
    assert code == 2 and "differs in lr" in one_error(err) and "--overwrite" in err
    assert snapshot(tmp_path) == before
    assert train(capsys, tmp_path, "--name", "d", "--overwrite")[0] == 0
    assert names(tmp_path / "d") == RUN_FILES
    no_lock(tmp_path)


def test_a_run_that_failed_before_its_config_was_written_is_retried(tmp_path, capsys):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "FAILED").write_text("OSError: [Errno 28] No space left on device\n")
    code, err = train(capsys, tmp_path, "--name", "r")
    assert code == 2 and "--resume retries it" in one_error(err)
    assert train(capsys, tmp_path, "--name", "r", "--resume")[0] == 0
    assert names(tmp_path / "r") == RUN_FILES


def test_run_twice_in_one_process_without_out_dir_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = preset("onpolicy_bon", rounds=2, steps_per_round=2, init_steps=2, out_dir="",
                 progress=False)  # fmt: skip
    first, second = toy_train.run(cfg), toy_train.run(cfg)
    assert first.run_dir is None and second.run_dir is None
    pd.testing.assert_frame_equal(first.metrics, second.metrics)
    assert list(tmp_path.iterdir()) == []


def test_gradients_out_refusals_leave_nothing(tmp_path, capsys):
    (tmp_path / "t.csv").mkdir()
    code = gradients.main(["point", "--objective", "dpo", "--x-w", "0.3", "--x-l", "0.1",
                           "--out", str(tmp_path / "t.csv")])  # fmt: skip
    assert code == 2 and "is a directory" in one_error(capsys.readouterr().err)
    code = gradients.main(["mass", "--chosen", "x", "--out", str(tmp_path / "m.csv")])
    assert code == 2 and "--chosen" in one_error(capsys.readouterr().err)
    assert names(tmp_path) == ["t.csv"]


def test_dataclass_replace_cannot_smuggle_a_bad_kind_into_a_sweep():
    base = BanditConfig(rounds=2, out_dir="", progress=False)
    with pytest.raises(UserError, match=r"BanditConfig\.rounds: must be an integer"):
        dataclasses.replace(base, rounds=2.5)
