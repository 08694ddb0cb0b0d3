"""summary.png: written at the end of a bandit run and of an LLM run (pairs and rounds modes)
whenever a run directory exists; its curves are metrics.jsonl's (the bandit's: the mean over
seeds with a min-max band); none with --no-plot or out_dir=''; the plot knob changes no run name;
a figure that cannot be written is one warning line and the run is complete all the same."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pandas as pd
from conftest import tiny_train_config
from PIL import Image

from llm import setup as llm_setup
from llm import train as llm_train
from llm.config import TrainConfig
from runio import summary_plot
from toy import summary_plot as toy_plot
from toy import train as toy_train
from toy.config import BanditConfig
from toy.problem import Problem

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
TINY = dict(prompts_per_round=3, samples_per_prompt=4, rounds=3, steps_per_round=2, init_steps=3,
            n_train_contexts=20, init_contexts=10, n_eval_contexts=7, progress=False,
            dist_every=2)  # fmt: skip
TOY_ARGV = ["--rounds", "2", "--steps-per-round", "2", "--init-steps", "2", "--no-progress"]
TOY_FILES = ["COMPLETE", "config.json", "dist.npz", "metrics.jsonl"]


def names(d: Path) -> list[str]:
    return sorted(p.name for p in Path(d).iterdir())


def png(path: Path) -> tuple[str, tuple[int, int]]:
    """(format, (width, height)) of an image file that decodes in full."""
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        im.load()
        return im.format, im.size


def lines_of(fig) -> dict[str, np.ndarray]:
    """Every curve of the figure's panels by its label: (steps, values) as an (n, 2) array."""
    return {ln.get_label(): ln.get_xydata() for ax in fig.axes for ln in ax.lines}


# ---- the curves -----------------------------------------------------------------------------


def test_curves_are_the_finite_values_mean_over_seeds_with_a_min_max_band():
    nan = float("nan")
    table = {
        "seed": np.array([0, 0, 0, 0, 1, 1, 1, 1.0]),
        "step": np.array([0, 1, 2, 3, 0, 1, 2, 3.0]),
        "x": np.array([1, nan, 3, 10, 2, nan, 7, nan]),
        "never": np.full(8, nan),
    }
    c = summary_plot.curve(table, "x")
    assert c.steps.tolist() == [0, 2, 3] and c.mean.tolist() == [1.5, 5.0, 10.0]
    assert c.low.tolist() == [1, 3, 10] and c.high.tolist() == [2, 7, 10]
    one = summary_plot.curve({k: v[4:] for k, v in table.items()}, "x")  # seed 1 alone
    assert one.steps.tolist() == [0, 2] and one.mean.tolist() == [2, 7] and one.low is None
    assert summary_plot.curve(table, "never") is None and summary_plot.curve(table, "y") is None
    cols = summary_plot.columns([{"step": 1, "a": 0.5}, {"step": 2, "b": True, "a": "text"}])
    assert cols["step"].tolist() == [1, 2] and cols["a"][0] == 0.5
    assert np.isnan(cols["a"][1]) and np.isnan(cols["b"]).all()
    assert summary_plot.figure(table, [summary_plot.Panel("none", ("never", "y"))]) is None


def test_the_plot_knob_changes_no_run_name():
    assert BanditConfig(plot=False).run_name() == BanditConfig().run_name()
    assert TrainConfig(plot=False).run_name() == TrainConfig().run_name()


# ---- the bandit -----------------------------------------------------------------------------


def test_a_bandit_run_draws_its_metrics_and_final_distribution(tmp_path):
    cfg = BanditConfig(**TINY, seeds=(0, 1, 2), eval_every=2, out_dir=str(tmp_path), name="t")
    res = toy_train.run(cfg)
    run_dir = tmp_path / "t"
    assert names(run_dir) == [*TOY_FILES, "summary.png"]  # no temporary file left
    fmt, (width, height) = png(run_dir / "summary.png")
    assert fmt == "PNG" and 1100 <= width <= 1400 and 300 <= height <= 450, (width, height)

    back = pd.read_json(run_dir / "metrics.jsonl", lines=True)
    prob = Problem(cfg, cfg.seeds)
    ref, reward = prob.ref_logp_K.exp().numpy(), prob.reward_K.numpy()
    with np.load(run_dir / "dist.npz") as z:
        dist = z["dist"]
    fig = toy_plot.figure(cfg, back, dist, ref, reward)
    assert [ax.get_title() for ax in fig.axes[:3]] == [
        "expected reward", "KL(π ‖ π_ref)", "final distribution"]  # fmt: skip
    drawn = lines_of(fig)
    for name in ("reward/expected", "policy/kl_ref"):
        by_step = back.dropna(subset=[name]).groupby("step")[name]
        assert by_step.mean().index.tolist() == [0, 2, 4, 6]  # evaluated every 2nd step
        np.testing.assert_allclose(drawn[name][:, 0], [0, 2, 4, 6])
        np.testing.assert_allclose(drawn[name][:, 1], by_step.mean(), rtol=1e-12)
        band = summary_plot.curve(toy_plot.curve_table(back), name)
        np.testing.assert_allclose(band.low, by_step.min(), rtol=1e-12)
        np.testing.assert_allclose(band.high, by_step.max(), rtol=1e-12)
        assert (band.high > band.low).any()  # three seeds differ
    arms = np.arange(cfg.n_arms)
    final = res.dist[-1]  # (seeds, arms) at the last step
    np.testing.assert_allclose(drawn["π_ref"], np.c_[arms, ref])
    np.testing.assert_allclose(drawn[f"π at step {cfg.total_steps}"], np.c_[arms, final.mean(0)])
    np.testing.assert_allclose(drawn["reward"], np.c_[arms, reward])


def test_a_bandit_run_without_plot_or_without_out_dir_draws_nothing(tmp_path, monkeypatch):
    assert toy_train.main([*TOY_ARGV, "--out-dir", str(tmp_path), "--name", "n", "--no-plot"]) == 0
    assert names(tmp_path / "n") == TOY_FILES
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    result = toy_train.run(BanditConfig(**TINY, out_dir=""))  # plot stays on: nothing to write
    assert result.run_dir is None and names(empty) == []


def test_a_summary_that_cannot_be_written_is_one_warning_and_the_run_completes(tmp_path):
    """ulimit -f: config.json, metrics.jsonl and dist.npz fit in 24 KiB, summary.png does not
    (Python ignores SIGXFSZ, so its write fails with EFBIG)."""
    limited = ["bash", "-c", 'ulimit -f 24 && exec "$@"', "bash", sys.executable, "-m", "toy.train"]
    args = [*TOY_ARGV, "--out-dir", str(tmp_path), "--name", "r"]
    proc = subprocess.run([*limited, *args], cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "expected reward after 4 steps" in proc.stdout
    warned = [ln for ln in proc.stderr.splitlines() if "summary.png" in ln]
    assert len(warned) == 1 and re.fullmatch(
        r"\[toy\] warning: summary\.png not written \(OSError: \[Errno 27\] File too large: "
        r"'.*/r/summary\.png'\)", warned[0]), proc.stderr  # fmt: skip
    assert names(tmp_path / "r") == TOY_FILES  # complete; no partial or temporary file


def test_a_failed_write_leaves_no_file_and_returns_none(tmp_path, capsys):
    (tmp_path / "summary.png").mkdir()  # the name is taken by a directory: the rename fails
    table = {"step": np.arange(3.0), "loss/train": np.array([3.0, 2.0, 1.0])}
    panels = [summary_plot.Panel("loss", ("loss/train",))]
    draw = lambda: summary_plot.figure(table, panels)  # noqa: E731
    assert summary_plot.write(tmp_path, draw, tag="[x]") is None
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("[x] warning: summary.png not written (")
    assert names(tmp_path) == ["summary.png"] and names(tmp_path / "summary.png") == []
    assert summary_plot.write(tmp_path / "elsewhere", draw) is None  # no such directory
    assert capsys.readouterr().err.startswith("warning: summary.png not written (")


# ---- language models ------------------------------------------------------------------------


def check_llm_summary(run_dir: Path, titles: list[str], size: tuple[range, range]) -> None:
    """summary.png decodes, has the size of its panel grid, and every curve of its figure is
    the metric of the same name over the steps metrics.jsonl holds it at."""
    fmt, (width, height) = png(run_dir / "summary.png")
    assert fmt == "PNG" and width in size[0] and height in size[1], (width, height)
    records = [json.loads(x) for x in open(run_dir / "metrics.jsonl")]
    fig = summary_plot.figure(summary_plot.columns(records), llm_setup.SUMMARY_PANELS)
    assert [ax.get_title() for ax in fig.axes] == titles
    drawn = lines_of(fig)
    assert len(drawn) >= len(titles)
    for name, xy in drawn.items():
        want = [(r["step"], r[name]) for r in records if name in r]
        np.testing.assert_allclose(xy, want, rtol=1e-12)


def test_an_llm_pairs_run_draws_loss_rewards_margin_and_accuracy(files, tmp_path):
    data = dict(data=str(files / "train.jsonl"), eval_data=str(files / "test.jsonl"))
    cfg = tiny_train_config(tmp_path, **data, eval_every=1, save_final=False, name="p")
    run_dir = Path(llm_train.run(cfg).run_dir)
    assert names(run_dir) == ["COMPLETE", "config.json", "metrics.jsonl", "summary.png"]
    titles = ["loss", "implicit rewards", "implicit margin", "pair accuracy"]  # two by two
    check_llm_summary(run_dir, titles, (range(700, 1000), range(550, 800)))
    records = [json.loads(x) for x in open(run_dir / "metrics.jsonl")]
    assert [r["step"] for r in records if "eval/loss" in r] == [0, 1, 2, 3]


def test_an_llm_rounds_run_draws_reward_kl_and_loss(tmp_path):
    cfg = TrainConfig(
        mode="on_policy", objective="reinforce", kl_penalty=0.1, reward="length_min", rounds=2,
        prompts_per_round=2, samples_per_prompt=2, steps_per_round=1, max_new_tokens=4,
        max_len=140, max_prompt_len=110, lr=1e-2, eval_prompts=2, eval_every=1,
        out_dir=str(tmp_path / "runs"), cache_dir=str(tmp_path / "cache"), progress=False,
        save_final=False, name="o",
    )  # fmt: skip
    run_dir = Path(llm_train.run(cfg).run_dir)
    assert "summary.png" in names(run_dir) and "COMPLETE" in names(run_dir)
    titles = ["reward", "KL(π ‖ π_ref)", "loss"]
    check_llm_summary(run_dir, titles, (range(1100, 1400), range(300, 450)))
    records = [json.loads(x) for x in open(run_dir / "metrics.jsonl")]
    # KL is logged when π_ref is scored (here for the KL penalty)
    assert [r["step"] for r in records] == [1, 2] and all("policy/kl_ref" in r for r in records)


def test_an_llm_run_with_no_plot_draws_nothing(files, tmp_path, capsys):
    argv = ["--model", "tiny-gpt2", "--data", str(files / "train.jsonl"), "--eval-data",
            str(files / "test.jsonl"), "--max-steps", "1", "--max-len", "140",
            "--max-prompt-len", "110", "--gen-examples", "0", "--out-dir", str(tmp_path / "runs"),
            "--cache-dir", str(tmp_path / "cache"), "--name", "n", "--no-save-final",
            "--no-progress", "--no-plot"]  # fmt: skip
    assert llm_train.main(argv) == 0, capsys.readouterr().err
    assert names(tmp_path / "runs" / "n") == ["COMPLETE", "config.json", "metrics.jsonl"]
