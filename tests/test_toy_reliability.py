"""Reliability of the bandit runs: bad values refused up front, divergence stopped and named,
runs never silently replaced, resume of complete and killed runs, and the CLI's error contract
(one ``error:`` line, exit code 2, no traceback, nothing left on disk)."""

import dataclasses
import functools
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import objectives
from analysis import cache
from runio import NonFiniteError, UserError, is_complete
from toy import train as toy_train
from toy.config import BanditConfig
from toy.outputs import load_metrics, load_run
from toy.train import run

REPO = Path(__file__).resolve().parent.parent
TINY = dict(
    prompts_per_round=3,
    samples_per_prompt=4,
    rounds=2,
    steps_per_round=2,
    init_steps=3,
    n_train_contexts=20,
    init_contexts=10,
    n_eval_contexts=7,
    progress=False,
    dist_every=2,
)
OUTPUTS = ("metrics.jsonl", "dist.npz", "COMPLETE")


def tiny(tmp_path: Path, **kw) -> BanditConfig:
    return BanditConfig(**{**TINY, "out_dir": str(tmp_path), **kw})


def snapshot(run_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run_dir.iterdir())}


# ---------------------------------------------------------------------------------------------
# Up front


@pytest.mark.parametrize(
    "field, value",
    [
        ("lr", float("inf")),
        ("lr", float("nan")),
        ("lr", 0.0),
        ("init_lr", -1.0),
        ("init_lr", float("inf")),
        ("offline_fraction", float("nan")),
        ("pair_threshold", float("inf")),
        ("kl_penalty", float("nan")),
        ("baseline_decay", float("nan")),
        ("seeds", (-1,)),
        ("init_contexts", 0),
    ],
)
def test_bad_values_refused_up_front(field, value):
    with pytest.raises(UserError, match=rf"^BanditConfig\.{field}: .*got") as e:
        BanditConfig(**{field: value})
    if isinstance(value, float):
        assert f"got {value}" in str(e.value)


def test_bad_reward_vector_and_hparams_refused_up_front():
    vec = (0.0, float("nan"), 1.0)
    with pytest.raises(UserError, match=r"BanditConfig\.reward_vector: .*finite"):
        BanditConfig(policy="tabular", n_arms=3, reward_vector=vec)
    with pytest.raises(UserError, match=r"BanditConfig\.hp: .*beta.*nan"):
        BanditConfig(objective="dpo", hp=("beta=nan",))
    with pytest.raises(UserError, match=r"BanditConfig\.resume: "):
        BanditConfig(resume=True, overwrite=True)


# ---------------------------------------------------------------------------------------------
# Divergence


def test_divergent_lr_stops_naming_step_and_seed(tmp_path):
    """A real config that goes non-finite: Adam with lr 1e10 blows the MLP up at step 2."""
    cfg = tiny(tmp_path, lr=1e10, name="div", seeds=(3, 5))
    with pytest.raises(NonFiniteError, match=r"step 2 \(round 0, step 2 of the round\), seed 3"):
        run(cfg)
    assert not any((tmp_path / "div" / f).exists() for f in OUTPUTS)
    assert not is_complete(tmp_path / "div")


def test_nan_mid_training_names_the_first_bad_step_and_seed(tmp_path, monkeypatch):
    """The objective returns NaN for the second seed from its third call (step 3 = round 1, step 1
    of the round): the run stops at the end of that round, before round 2."""
    orig = objectives.get("bon")
    calls = []

    @functools.wraps(orig.fn)
    def poisoned(**kw):
        out = orig.fn(**kw)
        calls.append(1)
        if len(calls) >= 3:
            out = out.clone()
            out[1] = float("nan")
        return out

    monkeypatch.setitem(objectives.OBJECTIVES, "bon", dataclasses.replace(orig, fn=poisoned))
    cfg = tiny(tmp_path, rounds=3, seeds=(4, 7), name="nan")
    with pytest.raises(NonFiniteError) as e:
        run(cfg)
    assert "non-finite loss at step 3 (round 1, step 1 of the round), seed 7" in str(e.value)
    assert len(calls) == 4  # stopped after round 1 of 3
    assert not any((tmp_path / "nan" / f).exists() for f in OUTPUTS)
    with pytest.raises(UserError, match="not a complete run"):
        load_metrics(tmp_path / "nan")


# ---------------------------------------------------------------------------------------------
# Run directories


def test_existing_run_refused_and_intact_then_overwrite_replaces(tmp_path):
    first = run(tiny(tmp_path, name="r"))
    before = snapshot(tmp_path / "r")
    with pytest.raises(UserError, match="already holds a run"):
        run(tiny(tmp_path, name="r", lr=0.05))
    assert snapshot(tmp_path / "r") == before
    second = run(tiny(tmp_path, name="r", lr=0.05, overwrite=True))
    meta = json.loads((tmp_path / "r" / "config.json").read_text())
    assert meta["config"]["lr"] == 0.05 and is_complete(tmp_path / "r")
    back = load_metrics(tmp_path / "r")
    pd.testing.assert_frame_equal(back, second.metrics, check_dtype=False)
    assert not np.allclose(back["reward/expected"], first.metrics["reward/expected"])


def test_automatic_names_hash_what_changes_results(tmp_path):
    base = tiny(tmp_path)
    assert re.fullmatch(r"bon_on_policy_R2_P3_s0_[0-9a-f]{8}", base.run_name())
    assert tiny(tmp_path, lr=0.01).run_name() != base.run_name()
    assert tiny(tmp_path, steps_per_round=3).run_name() != base.run_name()
    same = tiny(tmp_path / "elsewhere", progress=True, overwrite=True)
    assert same.run_name() == base.run_name()


def test_resume_of_a_complete_run_loads_it_without_training(tmp_path, monkeypatch):
    first = run(tiny(tmp_path, name="c"))

    def no_training(cfg):
        raise AssertionError("a complete run was retrained")

    monkeypatch.setattr(toy_train, "train", no_training)
    again = run(tiny(tmp_path, name="c", resume=True))
    assert again.loaded
    pd.testing.assert_frame_equal(again.metrics, first.metrics, check_dtype=False)
    assert np.array_equal(again.dist, first.dist)
    assert np.array_equal(again.dist_steps, first.dist_steps)


def test_resume_after_a_kill_reproduces_the_uninterrupted_run(tmp_path):
    run(tiny(tmp_path, name="k", seeds=(0, 1)))
    run_dir = tmp_path / "k"
    metrics_bytes = (run_dir / "metrics.jsonl").read_bytes()
    _, steps, dist = load_run(run_dir)
    for f in OUTPUTS:  # a kill during training leaves config.json only
        (run_dir / f).unlink()
    assert not is_complete(run_dir)
    with pytest.raises(UserError, match="already holds a run"):
        run(tiny(tmp_path, name="k", seeds=(0, 1)))
    resumed = run(tiny(tmp_path, name="k", seeds=(0, 1), resume=True))
    assert not resumed.loaded and is_complete(run_dir)
    assert (run_dir / "metrics.jsonl").read_bytes() == metrics_bytes
    _, steps2, dist2 = load_run(run_dir)
    assert np.array_equal(steps, steps2) and np.array_equal(dist, dist2)


@pytest.mark.parametrize("complete", [True, False])
def test_resume_with_another_config_is_refused(tmp_path, complete):
    run(tiny(tmp_path, name="m"))
    if not complete:
        (tmp_path / "m" / "COMPLETE").unlink()
    before = snapshot(tmp_path / "m")
    with pytest.raises(UserError, match=r"differs in lr \(0.001 in the run, 0.02 now\)"):
        run(tiny(tmp_path, name="m", lr=0.02, resume=True))
    assert snapshot(tmp_path / "m") == before


def test_figure_cache_reruns_an_incomplete_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "RUNS", tmp_path)
    cfg = BanditConfig(**TINY, out_dir="")
    killed = tmp_path / cache.config_key(cfg)
    killed.mkdir()
    (killed / "config.json").write_text("{}")
    (killed / "metrics.jsonl").write_text('{"step": 0}\n')  # looks like output, is not complete
    metrics, steps, dist = cache.cached_run(cfg)
    assert is_complete(killed) and len(metrics) == 2 * 2 + 1
    assert dist.shape == (len(steps), 1, 100)


# ---------------------------------------------------------------------------------------------
# The command line: one error line, exit code 2, no traceback, nothing on disk

CLI_TINY = [
    "--rounds",
    "1",
    "--steps-per-round",
    "2",
    "--init-steps",
    "2",
    "--prompts-per-round",
    "2",
    "--samples-per-prompt",
    "3",
    "--no-progress",
]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def cli(out_dir: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "toy.train", *CLI_TINY, "--out-dir", str(out_dir), *args]
    return subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)


BAD_INPUTS = [
    (["--lr", "inf"], "BanditConfig.lr"),
    (["--lr", "0"], "BanditConfig.lr"),
    (["--lr", "nan"], "BanditConfig.lr"),
    (["--objective", "dpo", "--hp", "beta=nan"], "beta"),
    (["--hp", "nosuch=1"], "nosuch"),
    (["--objective", "nosuch"], "BanditConfig.objective"),
    (["--seeds", "-1"], "BanditConfig.seeds"),
    (["--rounds", "0"], "BanditConfig.rounds"),
    (["--samples-per-prompt", "1"], "BanditConfig.samples_per_prompt"),
    (["--offline-fraction", "1.5"], "BanditConfig.offline_fraction"),
    (["--kl-penalty", "nan"], "BanditConfig.kl_penalty"),
    (["--reward", "R9"], "BanditConfig.reward"),
]
PARSE_ERRORS = [["--lr", "abc"], ["--no-such-flag", "1"]]
EXISTING = ["--name", "prev"]
DIVERGES = ["--lr", "1e10", "--name", "div"]


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory) -> dict[tuple[str, ...], tuple[Path, subprocess.CompletedProcess]]:
    """Every command-line case, run as its own process (a few at a time: each is mostly the
    interpreter's start-up), keyed by its arguments: (out_dir, completed process)."""
    cases = [a for a, _ in BAD_INPUTS] + [*PARSE_ERRORS, EXISTING, DIVERGES]
    outs = [tmp_path_factory.mktemp("cli") / "runs" for _ in cases]
    prev = outs[cases.index(EXISTING)] / "prev"
    prev.mkdir(parents=True)
    (prev / "config.json").write_text("{}")
    with ThreadPoolExecutor(max_workers=3) as pool:
        done = list(pool.map(lambda ca: cli(ca[1], *ca[0]), zip(cases, outs)))
    return {tuple(c): (o, r) for c, o, r in zip(cases, outs, done)}


def last_line(res: subprocess.CompletedProcess) -> str:
    return [line for line in res.stderr.splitlines() if line.strip()][-1]


@pytest.mark.parametrize("args, names", BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_cli_bad_input_is_one_error_line(cli_runs, args, names):
    out, res = cli_runs[tuple(args)]
    assert res.returncode == 2, res.stderr
    assert last_line(res).startswith("error:") and names in last_line(res), res.stderr
    assert "Traceback" not in res.stderr
    assert not out.exists()  # nothing created before the error


def test_cli_existing_run_dir_is_refused(cli_runs):
    out, res = cli_runs[tuple(EXISTING)]
    assert res.returncode == 2, res.stderr
    assert last_line(res).startswith("error:") and "--resume" in last_line(res)
    assert "prev" in last_line(res) and "Traceback" not in res.stderr
    assert [p.name for p in out.rglob("*")] == ["prev", "config.json"]
    assert (out / "prev" / "config.json").read_text() == "{}"


@pytest.mark.parametrize("args", PARSE_ERRORS, ids=" ".join)
def test_cli_parse_errors_exit_2_without_traceback(cli_runs, args):
    out, res = cli_runs[tuple(args)]
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert not out.exists()


def test_cli_divergence_is_one_line_exit_3(cli_runs):
    out, res = cli_runs[tuple(DIVERGES)]
    assert res.returncode == 3, res.stderr
    assert last_line(res).startswith("error: non-finite") and "seed 0" in last_line(res)
    assert "Traceback" not in res.stderr
    assert sorted(p.name for p in (out / "div").iterdir()) == ["FAILED", "config.json"]
    assert "non-finite" in (out / "div" / "FAILED").read_text()
