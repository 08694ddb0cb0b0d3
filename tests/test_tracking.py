"""Experiment tracking (``--report-to``, ``runio.tracking``): what TensorBoard reads back from a
run's tracking/ directory is exactly metrics.jsonl (names, steps, float32 values), for llm.train
(also across a kill and --resume) and toy.train (one seed, several seeds); wandb logs offline
into the run directory without an API key; invalid values are one-line errors."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pandas as pd
import pytest
from conftest import tiny_train_config

from llm.config import TrainConfig
from llm.flags import translate
from runio import UserError
from toy import train as toy_train
from toy.config import BanditConfig

REPO = Path(__file__).resolve().parent.parent
TOY = [
    "--prompts-per-round", "3", "--samples-per-prompt", "4", "--rounds", "2",
    "--steps-per-round", "2", "--init-steps", "3", "--n-train-contexts", "20",
    "--init-contexts", "10", "--n-eval-contexts", "7", "--eval-every", "2", "--no-progress",
]  # fmt: skip


# ``files``: conftest.py


def llm_cfg(files, tmp_path, **kw) -> TrainConfig:
    data = dict(data=str(files / "train.jsonl"), eval_data=str(files / "test.jsonl"))
    return tiny_train_config(tmp_path, **{**data, "batch_size": 2, "max_steps": 4,
                                          "save_final": False, **kw})  # fmt: skip


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def tensorboard_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar TensorBoard shows for the run: tag -> [(step, value)] in step order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tracking" / "modeseek"), size_guidance={"scalars": 0})
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


def expected_scalars(records: list[dict], skip=("step",)) -> dict[str, list[tuple[int, float]]]:
    """metrics.jsonl's numbers by name, as TensorBoard stores them (float32)."""
    out: dict[str, list[tuple[int, float]]] = {}
    for rec in records:
        for key, value in rec.items():
            if key in skip or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            out.setdefault(key, []).append((rec["step"], float(np.float32(value))))
    return out


def test_llm_tensorboard_equals_metrics_across_resume(files, tmp_path):
    from llm.train import run

    cfg = llm_cfg(files, tmp_path, name="cut", report_to="tensorboard", max_steps=3,
                  save_every=2, eval_every=2)  # fmt: skip

    def interrupt(step, record):  # killed after logging step 3, before COMPLETE
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(cfg, on_step=interrupt)
    # TensorBoard reads event files in name order, and names start with the time in seconds
    events = (tmp_path / "runs" / "cut" / "tracking" / "modeseek").glob("events.out.tfevents.*")
    first = max(int(p.name.split(".")[3]) for p in events)
    while time.time() < first + 1:
        time.sleep(0.05)
    result = run(cfg.replace(resume=True))  # from the checkpoint of step 2
    run_dir = Path(result["run_dir"])
    records = read_jsonl(run_dir / "metrics.jsonl")
    assert [r["step"] for r in records] == [0, 1, 2, 3]
    # one value per logged step (the killed session's step 3 is purged), equal to metrics.jsonl
    assert tensorboard_scalars(run_dir) == expected_scalars(records)
    hparams = list((run_dir / "tracking" / "modeseek").glob("*/hparams.yml"))
    assert hparams and "report_to: tensorboard" in hparams[-1].read_text()
    assert (run_dir / "COMPLETE").exists()


def test_llm_rounds_mode_tensorboard_equals_metrics(files, tmp_path):
    from llm.train import run

    cfg = llm_cfg(files, tmp_path, mode="on_policy", prompts=str(files / "train.jsonl"),
                  reward="length_min", rounds=2, prompts_per_round=2, samples_per_prompt=3,
                  steps_per_round=1, max_new_tokens=4, report_to="tensorboard")  # fmt: skip
    run_dir = Path(run(cfg)["run_dir"])
    records = read_jsonl(run_dir / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2]
    assert tensorboard_scalars(run_dir) == expected_scalars(records)


def test_toy_tensorboard_equals_metrics_one_seed(tmp_path):
    args = [*TOY, "--out-dir", str(tmp_path), "--report-to", "tensorboard"]
    result = toy_train.run(toy_train.parse(args))
    records = read_jsonl(result.run_dir / "metrics.jsonl")
    got = tensorboard_scalars(result.run_dir)
    assert got == expected_scalars(records, skip=("step", "seed"))
    assert {r["step"] for r in records} == {s for series in got.values() for s, _ in series}
    assert [s for s, _ in got["reward/expected"]] == [0, 2, 4]  # eval_every 2: NaN skipped


def test_toy_tensorboard_several_seeds_mean_and_per_seed(tmp_path):
    args = [*TOY, "--seeds", "0", "1", "--out-dir", str(tmp_path), "--report-to", "tensorboard"]
    result = toy_train.run(toy_train.parse(args))
    records = read_jsonl(result.run_dir / "metrics.jsonl")
    frame = pd.DataFrame(records)
    names = [c for c in frame.columns if c not in ("seed", "step")]
    got = tensorboard_scalars(result.run_dir)
    assert set(got) == {*names, *(f"{n}/seed_{s}" for n in names for s in (0, 1))}
    for seed in (0, 1):
        rows = [r for r in records if r["seed"] == seed]
        per_seed = expected_scalars(rows, skip=("step", "seed"))
        assert {f"{n}/seed_{seed}": v for n, v in per_seed.items()} == {
            t: v for t, v in got.items() if t.endswith(f"/seed_{seed}")
        }
    mean = frame.groupby("step")[names].mean()
    for name in names:
        want = [(int(s), v) for s, v in mean[name].items() if v == v]
        assert [s for s, _ in got[name]] == [s for s, _ in want]
        assert [v for _, v in got[name]] == pytest.approx([v for _, v in want], rel=1e-6)


@pytest.mark.parametrize("cli", ["llm", "toy"])
def test_wandb_offline_without_api_key(cli, files, tmp_path, monkeypatch, capsys):
    pytest.importorskip("wandb", reason="wandb not installed (pip install 'modeseek[wandb]')")
    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_DIR", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))  # no `wandb login` either
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    if cli == "llm":
        from llm.train import run

        result = run(llm_cfg(files, tmp_path, max_steps=2, eval_data=None, report_to="wandb"))
        run_dir, err = Path(result["run_dir"]), capsys.readouterr().err
        assert os.environ["WANDB_MODE"] == "offline"
    else:  # a fresh process, as from the shell
        args = [*TOY, "--out-dir", str(tmp_path / "runs"), "--name", "t", "--report-to", "wandb"]
        proc = subprocess.run([sys.executable, "-m", "toy.train", *args], cwd=REPO,
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]
        run_dir, err = tmp_path / "runs" / "t", proc.stderr
    assert "WANDB_MODE=offline" in err
    tracking = run_dir / "tracking"
    run_id = (tracking / "wandb_id").read_text().strip()
    offline = list((tracking / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(offline) == 1 and (offline[0] / f"run-{run_id}.wandb").stat().st_size > 0
    assert (run_dir / "COMPLETE").exists()


def test_invalid_values_are_one_line_errors(tmp_path, monkeypatch, capsys):
    from llm.train import main

    assert translate(["--report_to", "wandb"]) == ["--report-to", "wandb"]  # HF's spelling
    assert main(["--report_to", "mlflow"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "report_to" in err and "'none', 'tensorboard', 'wandb'" in err and "mlflow" in err
    assert toy_train.main(["--report-to", "tensorbord"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "'none', 'tensorboard', 'wandb'" in err
    with pytest.raises(UserError, match="report_to: needs an out_dir"):
        BanditConfig(report_to="tensorboard", out_dir="")
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if wandb were not installed
    for make in (lambda: TrainConfig(report_to="wandb"), lambda: BanditConfig(report_to="wandb")):
        with pytest.raises(UserError, match=r"report_to: 'wandb' needs .*pip install wandb"):
            make()
