"""What a run evaluates on when --eval-data is not given (``llm.eval_source``), the shipped data
found from any working directory (``llm.shipped``), warm-up as a ratio, and the evaluation's
progress bars. Real tiny runs (``tests/conftest.py``), no mocks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_train_config

from llm import shipped
from llm.config import TrainConfig
from llm.train import run
from runio import UserError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parent.parent


def _config_json(result) -> dict:
    return json.loads((Path(result.final["run_dir"]) / "config.json").read_text())["config"]


def test_shipped_data_keeps_the_shipped_test_set():
    source = TrainConfig().eval_source()
    assert source.path == shipped.PAIRS_TEST and Path(source.path).is_file()
    assert "shipped Shakespeare test set" in source.why
    assert TrainConfig(eval_data="").eval_source().path is None
    assert TrainConfig(eval_data=None).eval_source().path is None
    own = TrainConfig(data="mine.jsonl", eval_data="held.jsonl", eval_data_split="dev")
    assert (own.eval_source().path, own.eval_source().split) == ("held.jsonl", "dev")


def test_run_names_do_not_depend_on_the_clone_or_the_word_auto(monkeypatch):
    """The defaults are absolute paths now; a run's name hashes them as data/... and hashes what
    is evaluated, so the name equals the one of the same run spelled out from the repo root."""
    monkeypatch.chdir(REPO)
    spelled = TrainConfig(
        data="data/shakespeare_prefs/train.jsonl", eval_data="data/shakespeare_prefs/test.jsonl"
    )
    assert TrainConfig().run_name() == spelled.run_name()
    assert TrainConfig().run_name() != TrainConfig(eval_data="").run_name()


def test_own_file_is_not_evaluated_on_the_shakespeare_set(files, tmp_path, capsys):
    cfg = tiny_train_config(tmp_path, data=str(files / "train.jsonl"), max_steps=1)
    assert cfg.eval_data == "auto" and cfg.eval_source().path is None
    result = run(cfg)
    assert not [k for k in result.final if k.startswith("eval/")]
    err = capsys.readouterr().err
    assert f"[llm] evaluation: no evaluation: --data {files / 'train.jsonl'} is one file" in err
    resolved = _config_json(result)["resolved_eval"]
    assert resolved["data"] is None and "is one file, without splits" in resolved["why"]


def test_dataset_with_a_test_split_is_evaluated_on_it(files, tmp_path, capsys):
    """A directory of train.jsonl and test.jsonl (``datasets.load_dataset`` names the splits):
    auto evaluates on its test split, the same numbers as --eval-data test.jsonl."""
    auto = run(tiny_train_config(tmp_path / "a", data=str(files), max_steps=2))
    assert f"[llm] evaluation: the 'test' split of {files}" in capsys.readouterr().err
    resolved = _config_json(auto)["resolved_eval"]
    assert (resolved["data"], resolved["split"]) == (str(files), "test")
    explicit = run(tiny_train_config(tmp_path / "e", data=str(files),
                                     eval_data=str(files / "test.jsonl"), max_steps=2))  # fmt: skip
    assert auto.final["eval/loss"] == pytest.approx(explicit.final["eval/loss"], rel=1e-6)
    assert auto.final["eval/pairs/accuracy"] == explicit.final["eval/pairs/accuracy"]


def test_a_missing_test_split_is_an_error_naming_the_flag(files, tmp_path, capsys):
    from llm.train import main

    argv = ["--dataset_name", str(files), "--dataset_test_split", "dev", "--dry-run",
            "--out-dir", str(tmp_path)]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert (
        err == f"error: --dataset_test_split: {files} has no split 'dev'; it has ['train', 'test']"
    )
    with pytest.raises(UserError, match=r"TrainConfig\.eval_data_split"):  # the API's own name
        TrainConfig(data=str(files), eval_data_split="dev").run_name()


def test_shipped_defaults_resolve_from_the_package():
    assert Path(TrainConfig().data) == shipped.DATA / "shakespeare_prefs" / "train.jsonl"
    assert Path(TrainConfig().prompts).is_file() and Path(TrainConfig().data).is_file()
    from llm.diagnose.config import DiagnoseConfig

    assert DiagnoseConfig().data == shipped.PAIRS_TRAIN


def _from(cwd: Path, *argv: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "llm.train", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def test_defaults_read_from_another_working_directory(tmp_path):
    """From a directory without data/, the shipped data are found (checked by --dry-run: every
    row read and tokenised); a relative path given is still the working directory's."""
    out = _from(tmp_path, "--dry-run", "--out-dir", "runs")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout[: out.stdout.rindex("}") + 1])["data"]["train"]["kept"] > 0
    assert "the shipped Shakespeare test set" in out.stderr
    out = _from(tmp_path, "--dry-run", "--data", "data/shakespeare_prefs/train.jsonl")
    assert out.returncode == 2
    assert "error: data file 'data/shakespeare_prefs/train.jsonl' does not exist" in out.stderr


@pytest.mark.slow
def test_the_default_run_works_from_another_working_directory(tmp_path):
    out = _from(tmp_path, "--max-steps", "1", "--out-dir", "")
    assert out.returncode == 0, out.stderr
    final = json.loads(out.stdout[out.stdout.index("{") :])
    assert final["run_dir"] is None and 0 < final["eval/loss"] < 5
    assert list(tmp_path.iterdir()) == []  # nothing written there


def test_warmup_ratio_is_warmup_steps_of_the_total(files, tmp_path):
    kw = dict(data=str(files / "train.jsonl"), eval_data="", max_steps=4, save_final=False)
    lrs = {}
    for name, extra in {"ratio": {"warmup_ratio": 0.5}, "steps": {"warmup_steps": 2},
                        "none": {}}.items():  # fmt: skip
        result = run(tiny_train_config(tmp_path / name, **kw, **extra))
        lrs[name] = result.metrics["lr"].tolist()
    assert lrs["ratio"] == lrs["steps"] != lrs["none"]
    with pytest.raises(UserError, match="warmup_ratio: excludes --warmup-steps"):
        TrainConfig(warmup_ratio=0.5, warmup_steps=2)


def test_final_evaluation_shows_progress(files, tmp_path, capsys):
    kw = dict(data=str(files / "train.jsonl"), eval_data=str(files / "test.jsonl"), max_steps=1,
              gen_examples=2, gen_max_new_tokens=4, eval_batch_size=2,
              save_final=False)  # fmt: skip
    run(tiny_train_config(tmp_path / "on", **kw, progress=True))
    err = capsys.readouterr().err
    # the bar opens at 0/3 (6 held-out pairs in batches of 2); later refreshes depend on timing
    assert "eval: " in err and "0/3" in err
    assert "generate: " in err
    run(tiny_train_config(tmp_path / "off", **kw))  # progress=False (--no-progress)
    err = capsys.readouterr().err
    assert "eval: " not in err and "generate: " not in err
