"""LLM run directories under contention, tampering and faults: two commands racing for one name,
a live run or diagnosis never touched, resume refusing what it did not write (changed inputs, no
config.json, malformed records) and passing over an unreadable checkpoint, unwritable places
found before any model loads, a write failing mid-run (file size limit, disk full) leaving a
resumable run, and a run without results retried. Each case asserts the exit code, the one
stderr line, nothing left behind (no .lock) and nothing lost (a refused run's files as they
were)."""

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
from conftest import tiny_train_config

import llm.diagnose as dg
from llm import runs as llm_runs
from llm import setup
from llm.train import main, parse, run
from runio import LOCK, UserError

REPO = Path(__file__).resolve().parent.parent
PAIRS = REPO / "data" / "shakespeare_prefs" / "train.jsonl"
TINY = ["--model", "tiny-gpt2", "--max-len", "140", "--max-prompt-len", "110", "--lr", "1e-2",
        "--gen-examples", "0", "--no-progress", "--eval-data", "None"]  # fmt: skip
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Data, the argv of a 4-step run checkpointed every step, its uninterrupted metrics, and a
    copy of it stopped after step 3 (checkpoints 1-3) to resume, tamper with, or retry."""
    d = tmp_path_factory.mktemp("env")
    lines = PAIRS.read_text(encoding="utf-8").splitlines()
    (d / "train.jsonl").write_text("\n".join(lines[:16]) + "\n")
    argv = [*TINY, "--data", str(d / "train.jsonl"), "--max-steps", "4", "--save-every", "1",
            "--cache-dir", str(d / "cache"), "--name", "r"]  # fmt: skip
    full = run(parse([*argv, "--out-dir", str(d / "full")]))

    def stop(step, record):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(parse([*argv, "--out-dir", str(d / "cut")]), on_step=stop)
    return {"dir": d, "argv": argv, "full": metrics(full["run_dir"]), "cut": d / "cut" / "r"}


def metrics(run_dir) -> list[dict]:
    recs = [json.loads(ln) for ln in open(Path(run_dir) / "metrics.jsonl")]
    return [{k: v for k, v in r.items() if k != "perf/tokens_per_s"} for r in recs]


def snapshot(d: Path) -> dict[str, str]:
    """Every file under ``d`` (hidden ones too) by its sha256: a refusal must change nothing."""
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file()
            else "dir" for p in sorted(d.rglob("*"))}  # fmt: skip


def cli(tool, argv, capsys) -> tuple[int, list[str]]:
    capsys.readouterr()
    code = tool(list(map(str, argv)))
    return code, [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]


def one_line(code, err, pattern, expected=2):
    assert code == expected, err
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert re.search(pattern, err[0]), err[0]


def copy_cut(env, tmp_path) -> tuple[Path, list[str]]:
    """A copy of the stopped run and the argv that addresses it."""
    run_dir = tmp_path / "runs" / "r"
    shutil.copytree(env["cut"], run_dir)
    return run_dir, [*env["argv"], "--out-dir", tmp_path / "runs"]


HOLD = textwrap.dedent(
    """
    import signal, sys, time
    from runio import claim_run_dir, release_run_dir
    for d in sys.argv[1:]:
        claim_run_dir(d, resume=True)
    signal.signal(signal.SIGTERM, lambda *a: [release_run_dir(d) for d in sys.argv[1:]]
                  and sys.exit(0))
    print("held", flush=True)
    time.sleep(120)
    """
)


@contextlib.contextmanager
def held(*dirs):
    """Another live process holding ``dirs``' claims (released when the block ends)."""
    p = subprocess.Popen([sys.executable, "-c", HOLD, *map(str, dirs)], stdout=subprocess.PIPE,
                         text=True, cwd=REPO, env=ENV)  # fmt: skip
    try:
        assert p.stdout.readline().strip() == "held"
        yield
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=30)


# ---- 1. claims: one live run per directory, every process agreeing ---------------------------


def test_two_commands_racing_for_one_name_never_both_run(env, tmp_path):
    out = tmp_path / "runs"
    for rep in range(2):
        argv = [*TINY, "--data", env["dir"] / "train.jsonl", "--max-steps", "2", "--out-dir", out,
                "--cache-dir", env["dir"] / "cache", "--name", f"race{rep}"]  # fmt: skip
        cmd = [sys.executable, "-m", "llm.train", *map(str, argv)]
        procs = [subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]  # fmt: skip
        done = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
        assert sorted(code for code, _ in done) == [0, 2], done
        err = [ln for ln in next(e for c, e in done if c == 2).splitlines() if ln.strip()]
        one_line(2, err, r"being written by another process|already holds a run")
        run_dir = out / f"race{rep}"
        assert sorted(p.name for p in run_dir.iterdir()) == [
            "COMPLETE", "config.json", "final", "metrics.jsonl", "summary.png"]  # fmt: skip
        assert [r["step"] for r in metrics(run_dir)] == [1, 2]


@pytest.mark.parametrize(
    "flag", [[], ["--resume"], ["--overwrite"]], ids=["plain", "resume", "overwrite"]
)
def test_a_live_run_is_never_touched(env, tmp_path, capsys, flag):
    run_dir, argv = copy_cut(env, tmp_path)
    before = snapshot(run_dir)
    with held(run_dir):
        code, err = cli(main, [*argv, *flag], capsys)
    one_line(code, err, r"run directory .*r is being written by another process")
    assert snapshot(run_dir) == before  # no lock of ours left, nothing removed


def test_a_live_diagnosis_of_the_same_dir_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    out = tmp_path / "diag"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with held(out):
        code, err = cli(dg.main, ["--n-pairs", "2", "--objective", "dpo", "--out-dir", out,
                                  "--no-progress"], capsys)  # fmt: skip
    one_line(code, err, r"DiagnoseConfig.out_dir: .*diag is being written by another llm.diagnose")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


class Proc:
    """An accelerator of one process of a two-process launch (no process group)."""

    num_processes = 2

    def __init__(self, main):
        self.is_main_process = main


def test_every_process_raises_what_the_main_process_found(env, tmp_path, monkeypatch):
    import accelerate.utils

    sent = []

    def broadcast(box, from_process=0):  # the main process sends, the other receives
        if sent:
            box[:] = sent.pop()
        else:
            sent.append(list(box))
        return box

    monkeypatch.setattr(accelerate.utils, "broadcast_object_list", broadcast)
    run_dir, argv = copy_cut(env, tmp_path)
    cfg = parse(list(map(str, argv)))
    errors = []
    for proc in (Proc(True), Proc(False)):
        with pytest.raises(UserError, match="already holds a run") as e:
            llm_runs.claim(cfg, run_dir, proc)
        errors.append(str(e.value))
    assert errors[0] == errors[1] and not (run_dir / LOCK).exists()
    fresh = tmp_path / "runs" / "fresh"
    assert [llm_runs.claim(cfg, fresh, p) for p in (Proc(True), Proc(False))] == [False, False]
    assert llm_runs.holds(fresh) and (fresh / LOCK).exists()
    llm_runs.release(fresh)
    assert not (fresh / LOCK).exists()


# ---- 2. resume trusts nothing it did not write ------------------------------------------------


@pytest.mark.parametrize("field", ["data", "eval_data"])
def test_resume_refuses_an_input_file_changed_since_the_run_started(env, tmp_path, capsys, field):
    for name in ("train.jsonl", "eval.jsonl"):
        shutil.copy(env["dir"] / "train.jsonl", tmp_path / name)
    argv = [*TINY[:-2], "--data", tmp_path / "train.jsonl", "--eval-data", tmp_path / "eval.jsonl",
            "--max-steps", "1", "--out-dir", tmp_path / "runs", "--name", "d"]  # fmt: skip
    assert cli(main, argv, capsys)[0] == 0
    changed = tmp_path / ("train.jsonl" if field == "data" else "eval.jsonl")
    changed.write_text(changed.read_text().replace("e", "E", 1))  # same size, other bytes
    before = snapshot(tmp_path / "runs")
    code, err = cli(main, [*argv, "--resume"], capsys)
    flag = "--" + field.replace("_", "-")
    one_line(code, err, rf"resume: {flag} .*{changed.name} changed since the run started")
    assert snapshot(tmp_path / "runs") == before


def _metrics_line_2(bad: str):
    def tamper(run_dir):
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        (run_dir / "metrics.jsonl").write_text("\n".join([lines[0], bad, *lines[2:]]) + "\n")

    return tamper


def _no_results(run_dir, failed: bool = True):
    """What a run stopped before its first record leaves: config.json (and FAILED)."""
    for p in run_dir.iterdir():
        shutil.rmtree(p) if p.is_dir() else p.unlink() if p.name != "config.json" else None
    if failed:
        (run_dir / "FAILED").write_text("cannot write x: No space left on device\n")


NAN = "step 4: non-finite loss/train = nan\n"
REFUSALS = {  # case: (what is done to the stopped run, the command's flags, its one line)
    "no_config_json": (lambda d: (d / "config.json").unlink(), ["--resume"],
                       r"resume: .*r has no config.json, so what it holds \(checkpoints, metri"),
    "unreadable_config_json": (lambda d: (d / "config.json").write_text('{"config": '),
                               ["--resume"], r"config.json is unreadable \(JSONDecodeError"),
    "other_config": (None, ["--resume", "--lr", "2e-2"],
                     r"resume: config differs from the checkpointed run in \['lr'\]"),
    "metrics_no_step": (_metrics_line_2('{"loss/train": 0.5}'), ["--resume"],
                        r"resume: .*metrics.jsonl: record 2 has no integer 'step'"),
    "metrics_not_an_object": (_metrics_line_2("[1, 2]"), ["--resume"],
                              r"resume: .*metrics.jsonl: record 2 has no integer 'step'"),
    "metrics_step_a_string": (_metrics_line_2('{"step": "2"}'), ["--resume"],
                              r"resume: .*metrics.jsonl: record 2 has no integer 'step'"),
    "metrics_torn_in_the_middle": (_metrics_line_2('{"step": 2, "lo'), ["--resume"],
                                   r"metrics.jsonl: line 2 is not valid JSON"),
    "tracking_a_file": (lambda d: (d / "tracking").write_text("x"), ["--resume", "--report-to",
                        "tensorboard"], r"TrainConfig.report_to: .*r/tracking exists and is not a"),
    "a_run_without_flags": (None, [], r"already holds a run; pass --resume to continue it, --ov"),
    "failed_with_checkpoints": (lambda d: (d / "FAILED").write_text(NAN), [],
                                r"stopped with an error \(FAILED: step 4: non-finite .*\); pass "
                                r"--resume to retry it from its checkpoint of step 3, --overwrite"),
    "no_results_other_config": (_no_results, ["--lr", "2e-2"], r"holds a run of another config "
                                r"\(it differs in \['lr'\]\) that left no results; pass --overw"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_refusal_is_one_line_and_changes_nothing(env, tmp_path, capsys, case):
    tamper, flags, pattern = REFUSALS[case]
    run_dir, argv = copy_cut(env, tmp_path)
    if tamper is not None:
        tamper(run_dir)
    before = snapshot(run_dir)
    code, err = cli(main, [*argv, *flags], capsys)
    one_line(code, err, pattern)
    assert snapshot(run_dir) == before  # nothing lost, no .lock left


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


LAST = "checkpoints/step_0000003"
DAMAGE = {  # case: (what is damaged, the stderr note of the resume that passes over it)
    "model": (lambda d: _truncate(d / LAST / "model.safetensors"), "trying step 2's"),
    "optimizer": (lambda d: _truncate(d / LAST / "optimizer.bin"), "trying step 2's"),
    "trainer_state": (lambda d: (d / LAST / "trainer_state.json").write_text("{"), "trying step"),
    "every_checkpoint": (lambda d: [_truncate(c / "model.safetensors")
                                    for c in (d / "checkpoints").iterdir()], "starting over"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(DAMAGE))
def test_resume_passes_over_an_unreadable_checkpoint(env, tmp_path, capsys, case):
    run_dir, argv = copy_cut(env, tmp_path)
    damage, note = DAMAGE[case]
    damage(run_dir)
    code, err = cli(main, [*argv, "--resume"], capsys)
    assert code == 0 and not any("Traceback" in ln or ln.startswith("error") for ln in err), err
    notes = [ln for ln in err if ln.startswith("[llm]")]  # (and save_pretrained's progress bar)
    assert re.search(r"^\[llm\] resume: .*step_0000003 is unreadable \(.*", notes[0]), err
    assert note in notes[-1] and len(notes) == 1 + (case == "every_checkpoint") * 3, err
    assert metrics(run_dir) == env["full"]
    assert (run_dir / "COMPLETE").exists() and not (run_dir / LOCK).exists()


def test_input_fingerprints_cover_every_local_input(env, tmp_path, monkeypatch):
    data = env["dir"] / "train.jsonl"
    cfg = tiny_train_config(tmp_path, data=str(data), eval_data=str(data))
    sha = hashlib.sha256(data.read_bytes()).hexdigest()
    fps = setup.input_fingerprints(cfg)
    assert fps["data"] == fps["eval_data"] == {"bytes": data.stat().st_size, "sha256": sha}
    source = "def score(**kw):\n    return [0.0]\n"
    (tmp_path / "my_reward.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    rounds = dict(mode="on_policy", objective="reinforce", prompts=str(data), max_new_tokens=16)
    fps = setup.input_fingerprints(tiny_train_config(tmp_path, **rounds, reward="my_reward:score"))
    assert set(fps) == {"prompts", "reward"} and fps["reward"]["bytes"] == len(source)
    (tmp_path / "rm").mkdir()
    (tmp_path / "rm" / "config.json").write_text("{}")
    fps = setup.input_fingerprints(
        tiny_train_config(tmp_path, **rounds, reward=str(tmp_path / "rm"))
    )
    assert fps["reward"]["files"] == 1
    monkeypatch.setattr(setup, "WHOLE_FILE", 100)  # a large file: size, mtime, first/last MiB
    assert set(setup.fingerprint(data)) == {"bytes", "mtime_ns", "sha256_ends"}


# ---- 3. disk and permission faults ------------------------------------------------------------


def tree(base: Path) -> dict[str, str]:
    return {k: v for k, v in snapshot(base).items() if not k.startswith("home")}


CHILD = textwrap.dedent(
    """
    import contextlib, io, json, sys
    import llm.models, llm.onpolicy
    def loaded(*a, **k):
        raise AssertionError("a model was loaded")
    llm.models.load_model = llm.onpolicy.build_reward = loaded
    from llm import diagnose, train
    out = []
    for tool, argv in json.loads(sys.argv[1]):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = (train if tool == "train" else diagnose).main(argv)
        out.append([code, err.getvalue()])
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def unprivileged(env):
    """Command lines run as nobody against directories it may not write (root ignores
    permissions), their (exit code, stderr) by case, and the tree before and after."""
    # as root, permissions bind only without capabilities (setpriv drops them; the user stays
    # root, so the clone stays readable wherever it is, a 0700 temporary directory included)
    prefix = [] if os.geteuid() else ["setpriv", "--inh-caps=-all", "--bounding-set=-all"]
    if prefix and shutil.which("setpriv") is None:
        pytest.skip("running as root and setpriv (util-linux) is missing: permissions cannot bind")
    base = Path(tempfile.mkdtemp(prefix="modeseek-ro-"))
    os.chmod(base, 0o755)
    try:
        shutil.copy(env["dir"] / "train.jsonl", base / "train.jsonl")
        for d in ("ro", "w", "w/run", "w/trk", "w/trk/tracking", "home"):
            (base / d).mkdir()
        for d in ("w", "w/trk", "home"):
            os.chmod(base / d, 0o777)
        (base / "w/trk/config.json").write_text("{}")
        for d in ("ro", "w/run", "w/trk/tracking"):
            os.chmod(base / d, 0o555)
        common = [*TINY, "--data", base / "train.jsonl", "--cache-dir", base / "home"]
        w = base / "w"
        cases = {
            "out_dir": ("train", ["--out-dir", base / "ro"]),
            "out_dir_below": ("train", ["--out-dir", base / "ro" / "runs"]),
            "rounds": ("train", ["--mode", "on_policy", "--objective", "reinforce",
                                 "--max-new-tokens", "16", "--out-dir", base / "ro"]),
            "run_dir": ("train", ["--out-dir", w, "--name", "run", "--resume"]),
            "tracking": ("train", ["--out-dir", w, "--name", "trk", "--resume", "--report-to",
                                   "tensorboard"]),
            "diagnose": ("diagnose", ["--out-dir", base / "ro", "--no-progress"]),
            "diagnose_below": ("diagnose", ["--out-dir", base / "ro" / "d", "--no-progress"]),
        }  # fmt: skip
        before = tree(base)
        home = str(base / "home")
        child_env = {**ENV, "HOME": home, "HF_HOME": home, "XDG_CACHE_HOME": home,
                     "MPLCONFIGDIR": home}  # fmt: skip
        lines = [[t, [*common, *a] if t == "train" else a] for t, a in cases.values()]
        arg = json.dumps([[tool, [str(a) for a in argv]] for tool, argv in lines])
        probe = subprocess.run([*prefix, "touch", str(base / "ro" / "probe")])
        if probe.returncode == 0:
            pytest.skip("permissions are not enforced here (the probe could write)")
        p = subprocess.run([*prefix, sys.executable, "-c", CHILD, arg], cwd=REPO, env=child_env,
                           capture_output=True, text=True, timeout=300)  # fmt: skip
        assert p.returncode == 0, p.stderr[-3000:]
        results = dict(zip(cases, json.loads(p.stdout.splitlines()[-1])))
        yield results, before, tree(base)
    finally:
        for d in ("ro", "w/run", "w/trk/tracking"):
            if (base / d).exists():
                os.chmod(base / d, 0o755)
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize(
    "case, pattern",
    [
        ("out_dir", r"TrainConfig.out_dir: cannot create .*/ro/\S+ \(cannot write in .*/ro: no"),
        ("out_dir_below", r"TrainConfig.out_dir: cannot create .*/ro/runs/\S+ \(cannot write in"),
        ("rounds", r"TrainConfig.out_dir: cannot create .*/ro/\S+ \(cannot write in .*/ro: no"),
        ("run_dir", r"TrainConfig.out_dir: cannot write in .*/w/run \(no write permission"),
        ("tracking", r"TrainConfig.report_to: cannot write in .*/w/trk/tracking \(no write"),
        ("diagnose", r"DiagnoseConfig.out_dir: cannot write in .*/ro \(no write permission"),
        ("diagnose_below", r"DiagnoseConfig.out_dir: cannot create .*/ro/d \(cannot write"),
    ],
)
def test_an_unwritable_place_is_found_before_any_model_loads(unprivileged, case, pattern):
    results, before, after = unprivileged
    code, err = results[case]
    one_line(code, [ln for ln in err.splitlines() if ln.strip()], pattern)
    assert after == before  # nothing created, nothing removed


def test_file_size_limit_mid_run_leaves_a_resumable_failed_run(env, tmp_path, capsys):
    """ulimit -f: the first checkpoint's optimizer.bin (1.6 MB) passes the limit (1000 KiB);
    Python ignores SIGXFSZ, so the write fails with EFBIG."""
    out = tmp_path / "runs"
    argv = [*env["argv"], "--out-dir", out]
    cmd = ["bash", "-c", 'ulimit -f 1000; exec "$0" -m llm.train "$@"', sys.executable,
           *map(str, argv)]  # fmt: skip
    p = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    err = [ln for ln in p.stderr.splitlines() if ln.strip()]
    one_line(p.returncode, err, r"cannot write .*step_0000001/optimizer.bin: File too large "
             r"\(run stopped, not complete; .*FAILED written; --resume continues it from the "
             r"start\)")  # fmt: skip
    run_dir = out / "r"
    assert not (run_dir / "COMPLETE").exists() and not (run_dir / LOCK).exists()
    assert "File too large" in (run_dir / "FAILED").read_text()
    before = snapshot(run_dir)
    code, err = cli(main, argv, capsys)  # 4. the same command says which flag retries it
    one_line(code, err, r"stopped with an error \(FAILED: cannot write .*\); pass --resume to "
             r"retry it from the start \(no checkpoint\)")  # fmt: skip
    assert snapshot(run_dir) == before
    assert cli(main, [*argv, "--resume"], capsys)[0] == 0
    assert metrics(run_dir) == env["full"] and not (run_dir / "FAILED").exists()


def test_disk_full_mid_run_keeps_the_last_complete_checkpoint(env, tmp_path, capsys, monkeypatch):
    import accelerate.utils.other as acc_other
    from safetensors import SafetensorError

    real, calls = acc_other.safe_save_file, []

    def full_at_step_3(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise SafetensorError("Error while serializing: I/O error: No space left on device "
                                  "(os error 28)")  # fmt: skip
        return real(*a, **k)

    monkeypatch.setattr(acc_other, "safe_save_file", full_at_step_3)
    out = tmp_path / "runs"
    argv = [*env["argv"], "--out-dir", out]
    code, err = cli(main, argv, capsys)
    one_line(code, err, r"cannot write .*step_0000003: No space left on device \(run stopped, "
             r"not complete; .*FAILED written; --resume continues it from its checkpoint of "
             r"step 2\)")  # fmt: skip
    run_dir = out / "r"
    assert not (run_dir / "COMPLETE").exists() and not (run_dir / LOCK).exists()
    for step in (1, 2):  # whole, as the uninterrupted run wrote them
        name = f"checkpoints/step_{step:07d}/model.safetensors"
        assert (run_dir / name).read_bytes() == (env["cut"] / name).read_bytes()
    monkeypatch.setattr(acc_other, "safe_save_file", real)
    code, err = cli(main, [*argv, "--resume"], capsys)
    assert code == 0 and not any("unreadable" in ln for ln in err), err
    assert metrics(run_dir) == env["full"]


def test_no_room_even_for_failed(env, tmp_path, capsys, monkeypatch):
    def no_space(path, *a):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    real = llm_runs.atomic_write
    monkeypatch.setattr(setup, "append_jsonl", lambda path, record: no_space(path))
    monkeypatch.setattr(llm_runs, "atomic_write",
                        lambda p, w: no_space(p) if p.name == "FAILED" else real(p, w))  # fmt: skip
    out = tmp_path / "runs"
    code, err = cli(main, [*env["argv"], "--out-dir", out], capsys)
    one_line(code, err, r"cannot write .*r/metrics.jsonl: No space left on device \(run stopped, "
             r"not complete; --resume continues it from the start\)")  # fmt: skip
    assert sorted(p.name for p in (out / "r").iterdir()) == ["config.json"]


def test_diagnose_write_fault_is_one_line_and_leaves_no_lock(tmp_path, capsys, monkeypatch):
    from llm.diagnose import cli as dg_cli

    def too_large(path, write):
        raise OSError(errno.EFBIG, os.strerror(errno.EFBIG), str(path))

    monkeypatch.chdir(REPO)
    monkeypatch.setattr(dg_cli, "atomic_write", too_large)
    out = tmp_path / "diag"
    code, err = cli(dg.main, ["--n-pairs", "2", "--objective", "dpo", "--out-dir", out,
                              "--no-progress"], capsys)  # fmt: skip
    one_line(code, err, r"cannot write .*diag/pairs.csv: File too large")
    assert not out.exists()  # created by the diagnosis, left empty: removed


# ---- 4. retries -------------------------------------------------------------------------------


@pytest.mark.parametrize("failed", [True, False], ids=["failed", "killed"])
def test_a_run_without_results_is_retried_by_the_same_command(env, tmp_path, capsys, failed):
    run_dir, argv = copy_cut(env, tmp_path)
    _no_results(run_dir, failed)
    code, err = cli(main, argv, capsys)
    assert code == 0 and re.search(r"holds no results \(.*\); retrying it", err[0]), err
    assert metrics(run_dir) == env["full"] and not (run_dir / "FAILED").exists()
