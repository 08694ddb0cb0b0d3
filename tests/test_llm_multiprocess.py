"""Several processes: docs/llm/multiprocess.md's ``accelerate launch --config_file
configs/accelerate_cpu_2proc.yaml -m llm.train`` really starts 2 gloo processes on CPU and equals
one process with the same global batch (slow); a launch that starts fewer processes than it asked
for stops with a one-line error (fast, no processes started)."""

import json
import os
import subprocess
import sys
from typing import ClassVar

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from safetensors.torch import load_file

from errors import UserError
from llm import distributed
from llm.distributed import Requested, check_process_count, requested_processes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(REPO, "data", "shakespeare_prefs", "train.jsonl")
CONFIG = os.path.join("configs", "accelerate_cpu_2proc.yaml")
SIMPLE_LAUNCHER_ENV = {"ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}


@pytest.mark.parametrize(
    "env, expected",
    [
        ({}, None),
        ({"ACCELERATE_USE_CPU": "False"}, None),  # a 1-process accelerate launch
        ({"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"}, (2, True, "WORLD_SIZE=2")),
        ({"OMPI_COMM_WORLD_SIZE": "4"}, (4, True, "OMPI_COMM_WORLD_SIZE=4")),
        (SIMPLE_LAUNCHER_ENV, (2, False, "MASTER_ADDR/MASTER_PORT set by accelerate launch")),
        ({**SIMPLE_LAUNCHER_ENV, "WORLD_SIZE": "3"}, (3, True, "WORLD_SIZE=3")),
    ],
)
def test_requested_processes_from_launcher_environment(env, expected):
    assert requested_processes(env) == (expected and Requested(*expected))


def test_fewer_processes_than_requested_is_a_one_line_user_error():
    check_process_count(None, 1)
    check_process_count(Requested(2, True, "WORLD_SIZE=2"), 2)
    with pytest.raises(UserError, match=r"asked for 2 processes \(WORLD_SIZE=2\).* has 1:") as e:
        check_process_count(Requested(2, True, "WORLD_SIZE=2"), 1)
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match=r"at least 2 processes .* but 1 started: .*MULTI_CPU"):
        check_process_count(requested_processes(SIMPLE_LAUNCHER_ENV), 1)


def test_round_shards_per_process_and_their_errors():
    from llm.shards import Shards, plan, shard_seed

    s = plan(prompts=8, sample_shards=0, world=2, rank=1)  # default: one shard per process
    assert s == Shards(8, 2, 2, 1) and list(s.mine) == [1] and s.block == slice(4, 8)
    s = plan(prompts=8, sample_shards=4, world=2, rank=0)
    assert list(s.mine) == [0, 1] and s.block == slice(0, 4) and s.per_shard == 2
    assert list(plan(8, 0, 1, 0).mine) == [0] and plan(8, 0, 1, 0).block == slice(0, 8)
    assert shard_seed(7, 0) == 7 and len({shard_seed(7, k) for k in range(4)}) == 4
    with pytest.raises(UserError, match=r"--prompts-per-round 6 cannot be split over 4 processes"):
        plan(prompts=6, sample_shards=0, world=4, rank=0)
    with pytest.raises(UserError, match=r"--sample-shards 3 must divide .* multiple of the 2"):
        plan(prompts=6, sample_shards=3, world=2, rank=0)


class FakeAccelerator:
    """Records its arguments; joins no process group (``num_processes`` is set by the test)."""

    num_processes = 1
    calls: ClassVar[list[dict]] = []

    def __init__(self, **kw):
        FakeAccelerator.calls.append(kw)


@pytest.fixture
def fake_accelerator(monkeypatch):
    import accelerate

    for var in (*distributed.WORLD_SIZE_VARS, "ACCELERATE_USE_CPU", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(accelerate, "Accelerator", FakeAccelerator)
    monkeypatch.setattr(FakeAccelerator, "calls", [])
    return FakeAccelerator


def test_build_accelerator_checks_the_started_count(fake_accelerator, monkeypatch):
    monkeypatch.setattr(distributed, "groupable_device", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert isinstance(distributed.build_accelerator("auto"), FakeAccelerator)
    assert fake_accelerator.calls[-1] == {"mixed_precision": "no", "cpu": False}  # 1 process
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match=r"asked for 2 processes \(WORLD_SIZE=2\).* has 1:"):
        distributed.build_accelerator("bf16")
    # several processes and no CUDA: cpu=True, so they join one gloo group
    assert fake_accelerator.calls[-1] == {"mixed_precision": "bf16", "cpu": True}
    monkeypatch.setattr(fake_accelerator, "num_processes", 2)
    distributed.build_accelerator("fp32")
    monkeypatch.delenv("WORLD_SIZE")
    for var, value in SIMPLE_LAUNCHER_ENV.items():
        monkeypatch.setenv(var, value)
    monkeypatch.setattr(fake_accelerator, "num_processes", 1)
    with pytest.raises(UserError, match="simple launcher"):
        distributed.build_accelerator("auto")


def _launch_env() -> dict:
    """This environment without launcher variables; CPU only, so GPU machines run the same."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "MASTER_"))}
    for var in (*distributed.WORLD_SIZE_VARS, "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        env.pop(var, None)
    return {**env, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


@pytest.mark.slow
def test_readme_two_process_launch_matches_one_process(tmp_path):
    """The documented command on CPU: 2 processes × 2 pairs equal 1 process × 4 pairs."""
    lines = open(DATA, encoding="utf-8").read().splitlines()
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(lines[:16]) + "\n")
    out, cache = tmp_path / "runs", tmp_path / "cache"
    common = dict(max_len=140, max_prompt_len=110, lr=1e-2, warmup_steps=1, max_steps=3)
    args = ["--model", "tiny-gpt2", "--data", str(data), "--eval-data", "None"]
    for key, value in common.items():
        args += ["--" + key.replace("_", "-"), str(value)]
    args += [
        "--gen-examples",
        "0",
        "--no-progress",
        "--out-dir",
        str(out),
        "--cache-dir",
        str(cache),
    ]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", CONFIG]
    two = [*cmd, "-m", "llm.train", *args, "--batch-size", "2", "--name", "two"]
    proc = subprocess.run(
        two, cwd=REPO, env=_launch_env(), capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((out / "two" / "config.json").read_text())
    assert meta["processes"] == 2 and meta["pairs_per_step"] == 4

    one = [sys.executable, "-m", "llm.train", *args, "--batch-size", "4", "--name", "one"]
    proc = subprocess.run(
        one, cwd=REPO, env=_launch_env(), capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "one" / "config.json").read_text())["processes"] == 1

    def losses(name):
        recs = [json.loads(x) for x in open(out / name / "metrics.jsonl")]
        return [(r["step"], r["loss/train"]) for r in recs if "loss/train" in r]

    two_losses, one_losses = losses("two"), losses("one")
    assert [s for s, _ in two_losses] == [s for s, _ in one_losses] == [1, 2, 3]
    for (_, a), (_, b) in zip(two_losses, one_losses):
        assert a == pytest.approx(b, rel=1e-4, abs=1e-5)
    a = load_file(out / "two" / "final" / "model.safetensors")
    b = load_file(out / "one" / "final" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)


def rank_one_fails(prompts, responses, token_ids):
    """A reward that is NaN only in the second process (its rows of the round)."""
    bad = os.environ.get("RANK") == "1"
    return [float("nan") if bad else float(sum(t) % 7) for t in token_ids]


def _rounds_args(tmp_path, objective: str, extra=()) -> list[str]:
    out, cache = tmp_path / "runs", tmp_path / "cache"
    return [
        "--mode", "on_policy", "--model", "tiny-gpt2", "--objective", objective,
        "--reward", "test_llm_onpolicy:token_reward", "--rounds", "3",
        "--prompts-per-round", "4", "--samples-per-prompt", "3", "--max-new-tokens", "6",
        "--max-len", "140", "--max-prompt-len", "110", "--lr", "1e-2",
        "--generations-per-round", "100", "--no-progress", "--out-dir", str(out),
        "--cache-dir", str(cache), *extra,
    ]  # fmt: skip


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    env = {**_launch_env(), "PYTHONPATH": os.path.join(REPO, "tests")}
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


LAUNCH = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", CONFIG]


@pytest.mark.slow
@pytest.mark.parametrize(
    "objective, extra",
    [
        # per-token GRPO over 2 steps a round (old log-probs from a pass), micro-batches, the
        # batch std and token count that couple the processes, a sampled KL penalty
        (
            "grpo",
            (
                "--steps-per-round",
                "2",
                "--micro-prompts",
                "1",
                "--kl-penalty",
                "0.1",
                "--hp",
                "scale=batch",
                "--hp",
                "loss_type=bnpo",
            ),
        ),
        # pairs over the whole group, hybrid sampling from the reference, old log-probs taken
        # from the training forward (one step a round)
        ("dpo", ("--mode", "hybrid", "--offline-fraction", "0.34")),
        # LoRA, the adapters-off reference read per token (RLOO's KL in the reward)
        ("rloo", ("--lora", "--steps-per-round", "2", "--temperature", "0.8")),
    ],
)
def test_rounds_two_processes_equal_one_process_with_two_shards(tmp_path, objective, extra):
    """A rounds run under ``accelerate launch`` on 2 CPU processes equals one process with
    --sample-shards 2 (the same samples): the same generations every round, the same rewards and
    pairs, losses and gradient norms to float tolerance, the same final weights."""
    args = _rounds_args(tmp_path, objective, extra)
    proc = _run([*LAUNCH, "-m", "llm.train", *args, "--name", "two"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = _run([sys.executable, "-m", "llm.train", *args, "--name", "one", "--sample-shards", "2"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "runs"
    meta = json.loads((out / "two" / "config.json").read_text())
    assert meta["processes"] == 2 and meta["sample_shards"] == 2
    assert json.loads((out / "one" / "config.json").read_text())["processes"] == 1

    def lines(name, file):
        return [json.loads(x) for x in open(out / name / file)]

    gens = [lines(n, "generations.jsonl") for n in ("two", "one")]
    assert len(gens[0]) == 3 * 4 * 3 and gens[0] == gens[1]  # every sample, both processes'
    two, one = lines("two", "metrics.jsonl"), lines("one", "metrics.jsonl")
    assert [r["round"] for r in two] == [r["round"] for r in one] == [0, 1, 2]
    for a, b in zip(two, one):
        assert a["grad/norm"] > 0
        for key in ("reward/mean", "reward/std", "pairs/valid", "response/length_mean"):
            assert a[key] == b[key], key
        for key in ("loss/train", "grad/norm", "policy/kl_ref"):
            if key in a:
                assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5), key
    weights = "adapter_model.safetensors" if "--lora" in extra else "model.safetensors"
    a = load_file(out / "two" / "final" / weights)
    b = load_file(out / "one" / "final" / weights)
    assert a.keys() == b.keys()
    for k in a:  # Adam magnifies float noise on near-zero gradients; a wrong share is ~lr
        torch.testing.assert_close(a[k], b[k], rtol=1e-3, atol=2e-4)


@pytest.mark.slow
def test_rounds_reward_failing_in_one_process_stops_both_with_one_line(tmp_path):
    """A reward that is NaN only on the second process: both processes stop (none waits in a
    collective), each with the reward's one-line error, and FAILED names the round."""
    args = _rounds_args(tmp_path, "reinforce")
    args[args.index("--reward") + 1] = "test_llm_multiprocess:rank_one_fails"
    proc = _run([*LAUNCH, "-m", "llm.train", *args, "--name", "bad"])
    assert proc.returncode != 0
    err = proc.stderr  # torchrun adds its own traceback of the failed child; ours has none
    assert err.count("error: round 0: reward nan for sample") == 2, err[-3000:]  # each process
    assert os.path.join(REPO, "llm") not in err, err[-3000:]
    assert "round 0" in (tmp_path / "runs" / "bad" / "FAILED").read_text()
    assert not (tmp_path / "runs" / "bad" / "COMPLETE").exists()


_CALLS = [0]


def crashes_in_round_two(prompts, responses, token_ids):
    """token_reward, but the third call of each process (round 2) raises while the file named by
    $MODESEEK_TEST_ARMED exists: a run that stops mid-way."""
    _CALLS[0] += 1
    if _CALLS[0] == 3 and os.path.exists(os.environ.get("MODESEEK_TEST_ARMED", "")):
        raise RuntimeError("simulated crash")
    return [float(sum(t) % 7) for t in token_ids]


@pytest.mark.slow
def test_rounds_two_processes_resume_to_the_uninterrupted_result(tmp_path, monkeypatch):
    """A 2-process rounds run that stops in round 2 (FAILED; checkpoints after each round)
    resumes with --resume to exactly the uninterrupted 2-process run: metrics, generations and
    final weights."""
    armed = tmp_path / "armed"
    monkeypatch.setenv("MODESEEK_TEST_ARMED", str(armed))
    args = _rounds_args(tmp_path, "reinforce", ("--rounds", "4", "--save-every", "1",
                                                "--baseline", "running"))  # fmt: skip
    args[args.index("--reward") + 1] = "test_llm_multiprocess:crashes_in_round_two"
    launch = [*LAUNCH, "-m", "llm.train", *args]
    assert _run([*launch, "--name", "full"]).returncode == 0
    armed.touch()
    proc = _run([*launch, "--name", "cut"])
    assert proc.returncode != 0 and "simulated crash" in proc.stderr, proc.stderr[-3000:]
    out = tmp_path / "runs"
    assert "round 2" in (out / "cut" / "FAILED").read_text()
    armed.unlink()
    proc = _run([*launch, "--name", "cut", "--resume"])
    assert proc.returncode == 0, proc.stderr[-3000:]

    def clean(name, file):
        recs = [json.loads(x) for x in open(out / name / file)]
        return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in recs]

    for file in ("metrics.jsonl", "generations.jsonl"):
        assert clean("cut", file) == clean("full", file), file
    a = load_file(out / "full" / "final" / "model.safetensors")
    b = load_file(out / "cut" / "final" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
