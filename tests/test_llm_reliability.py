"""The LLM harness under bad input and faults: a corpus of bad command lines and data files
(each one line on stderr, exit code 2, no run directory left), non-finite stops (exit 3, no
checkpoint or final model of bad weights), runs never overwritten, kill-and-resume with a torn
metrics line, checkpoints that never execute code, and a corrupt reference cache recomputed."""

import json
import os
import subprocess
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from conftest import tiny_train_config

import objectives
from llm import models as llm_models
from llm import train as llm_train
from llm.config import TrainConfig
from llm.train import main, run
from runio import NonFiniteError, UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(REPO, "data", "shakespeare_prefs", "train.jsonl")
ROW = {"prompt": "To be, or not to be", "chosen": "that is the question", "rejected": "not"}
TINY = ["--max-len", "140", "--max-prompt-len", "110", "--gen-examples", "0", "--no-progress"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Good 16-row pairs, and one file per kind of bad data."""
    d = tmp_path_factory.mktemp("data")
    lines = open(DATA, encoding="utf-8").read().splitlines()[:16]
    (d / "good.jsonl").write_text("\n".join(lines) + "\n")
    bad_lines = {
        "non_utf8.jsonl": b'{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "\xff"}\n',
        "bad_json.jsonl": (json.dumps(ROW) + "\n{not json\n").encode(),
        "columns.json": json.dumps({"prompt": ["a", "b"], "chosen": ["x"], "rejected": ["y", "z"]}),
        "single.json": json.dumps(ROW),
        "scalar.json": json.dumps("rows"),
        "null.jsonl": json.dumps({**ROW, "chosen": None}),
        "missing.jsonl": json.dumps({"prompt": "p", "chosen": "c"}),
        "empty_response.jsonl": json.dumps({**ROW, "chosen": "   "}),
        "wrong_type.jsonl": json.dumps({**ROW, "rejected": 3}),
        "bad_message.jsonl": json.dumps({"chosen": [{"role": "user"}], "rejected": []}),
        "long_prompt.jsonl": json.dumps({**ROW, "prompt": "word " * 400}),
        "rows.txt": "prompt,chosen,rejected\n",
        "few.jsonl": json.dumps(ROW),
    }
    for name, content in bad_lines.items():
        path = d / name
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    (d / "not_a_model").mkdir()
    return d


def cli(argv: list[str], tmp_path, capsys) -> tuple[int, list[str]]:
    """Run the CLI in-process (the same entry point as ``python -m llm.train``): exit code and
    stderr's non-empty lines."""
    argv = [*argv, "--out-dir", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache")]
    capsys.readouterr()
    code = main(argv)
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    return code, err


CASES = [
    # (id, argv (data files by name, resolved in the fixture dir), message pattern)
    ("seed", ["--seed", "-1"], r"TrainConfig.seed: must be a non-negative integer, got -1"),
    ("lr_inf", ["--lr", "inf"], r"TrainConfig.lr: must be a finite number, got inf"),
    ("lr_nan", ["--lr", "nan"], r"TrainConfig.lr: must be a finite number"),
    ("lr_zero", ["--lr", "0"], r"TrainConfig.lr: must be positive, got 0.0"),
    ("beta_nan", ["--hp", "beta=nan"], r"'dpo': beta must be .*finite, got nan"),
    ("beta_negative", ["--hp", "beta=-1"], r"'dpo': beta must be positive"),
    ("hp_unknown", ["--hp", "nosuch=1"], r"'dpo' has no hyperparameter.*nosuch"),
    ("hp_format", ["--hp", "beta"], r"expected key=value"),
    ("objective", ["--objective", "nosuch"], r"TrainConfig.objective: unknown 'nosuch'"),
    ("groups_objective", ["--objective", "bon"], r"consumes on-policy scored groups"),
    ("eval_batch", ["--eval-batch-size", "0"], r"TrainConfig.eval_batch_size: must be at least 1"),
    ("batch", ["--batch-size", "0"], r"TrainConfig.batch_size: must be at least 1"),
    ("lora_dropout", ["--lora-dropout", "1.0"], r"TrainConfig.lora_dropout: must be in \[0, 1\)"),
    ("weight_decay", ["--weight-decay", "-1"], r"TrainConfig.weight_decay: must be non-negative"),
    ("prompt_len", ["--max-prompt-len", "300"], r"TrainConfig.max_prompt_len: must be below"),
    ("adapter_ref", ["--ref", "adapter"], r"TrainConfig.ref: 'adapter' needs --lora"),
    ("resume_overwrite", ["--resume", "--overwrite"], r"exclude each other"),
    ("name", ["--name", "a/b"], r"TrainConfig.name: must be a plain directory name"),
    ("max_len", ["--max-len", "5000"], r"max_len: 5000 exceeds the model's 1024 positions"),
    ("model_missing", ["--model", "./no/such/model"], r"local model directory .* does not exist"),
    ("hub_offline", ["--model", "someorg/somemodel"], r"cannot load a tokenizer from 'someorg/"),
    ("model_no_config", ["--model", "@not_a_model"], r"has no config.json"),
    ("data_missing", ["--data", "@absent.jsonl"], r"data file .*absent.jsonl' does not exist"),
    ("non_utf8", ["--data", "@non_utf8.jsonl"], r"non_utf8.jsonl: line 2, column 13: byte 0xff"),
    ("bad_json", ["--data", "@bad_json.jsonl"], r"bad_json.jsonl: line 2: invalid JSON"),
    ("columns", ["--data", "@columns.json"], r"columns.json: columns have unequal lengths"),
    ("single", ["--data", "@single.json"], r"single.json: a single object"),
    ("scalar", ["--data", "@scalar.json"], r"scalar.json: top level is a str"),
    ("null", ["--data", "@null.jsonl"], r"null.jsonl: row 0: null value in column 'chosen'"),
    ("missing_column", ["--data", "@missing.jsonl"], r"row 0: missing column 'rejected'"),
    ("empty_response", ["--data", "@empty_response.jsonl"], r"row 0: empty 'chosen' response"),
    ("wrong_type", ["--data", "@wrong_type.jsonl"], r"row 0: 'rejected' must be a string, got"),
    ("bad_message", ["--data", "@bad_message.jsonl"], r"row 0: 'chosen' message 0 must be a dict"),
    ("long_prompt", ["--data", "@long_prompt.jsonl"], r"row 0: prompt longer than the limit"),
    ("format", ["--data", "@rows.txt"], r"rows.txt: unsupported format '.txt'"),
    ("too_few_rows", ["--data", "@few.jsonl"], r"batch_size: one step needs 4 pairs .* has 1"),
]


@pytest.mark.parametrize("argv", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(argv, data, tmp_path, capsys):
    pattern = dict((tuple(c[1]), c[2]) for c in CASES)[tuple(argv)]
    argv = [a.replace("@", str(data) + os.sep) for a in argv]
    if "--data" not in argv:
        argv += ["--data", str(data / "good.jsonl")]
    code, err = cli(["--eval-data", "None", "--max-steps", "1", *TINY, *argv], tmp_path, capsys)
    assert code == 2, err
    errors = [ln for ln in err if ln.startswith("error:")]
    assert len(errors) == 1 and err[-1] == errors[0], err
    import re

    assert re.search(pattern, errors[0]), errors[0]
    assert not any("Traceback" in ln for ln in err)
    runs = tmp_path / "runs"
    assert not runs.exists() or not any(runs.iterdir()), list(runs.rglob("*"))


def test_corpus_is_large_and_messages_distinct():
    assert len(CASES) >= 30
    assert len({c[2] for c in CASES}) == len(CASES)


def test_real_process_exit_codes_and_debug_traceback(data, tmp_path):
    """As a real process: exit code 2 and one line; --debug shows the traceback."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    base = [sys.executable, "-m", "llm.train", "--out-dir", str(tmp_path / "runs")]
    p = subprocess.run([*base, "--seed", "-1"], capture_output=True, text=True, env=env, cwd=REPO)
    assert p.returncode == 2 and p.stderr.strip() == (
        "error: TrainConfig.seed: must be a non-negative integer, got -1"
    )
    p = subprocess.run(
        [*base, "--data", str(data / "null.jsonl"), "--debug"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
    )
    assert p.returncode != 0 and "Traceback" in p.stderr and "null value" in p.stderr
    assert not (tmp_path / "runs").exists()


def test_dry_run_counts_problems_and_builds_nothing(data, tmp_path, capsys, monkeypatch):
    def no_model(*a, **k):
        raise AssertionError("dry run built the model")

    monkeypatch.setattr(llm_models, "load_model", no_model)
    mixed = tmp_path / "mixed.jsonl"
    good = (data / "good.jsonl").read_text()
    mixed.write_text(good + json.dumps({**ROW, "chosen": None}) + "\n" + json.dumps(ROW) + "\n")
    code, err = cli(["--dry-run", "--data", str(mixed), "--eval-data", "None", *TINY], tmp_path,
                    capsys)  # fmt: skip
    assert code == 2 and "dry run: train: 1 invalid rows {'null value in column 'chosen''" in (
        err[-1].replace('"', "'")
    ), err
    code, err = cli(["--dry-run", "--data", str(data / "good.jsonl"), "--eval-data", "None",
                     *TINY], tmp_path, capsys)  # fmt: skip
    assert code == 0, err
    assert not (tmp_path / "runs").exists()


def cfg(data, tmp_path, **kw) -> TrainConfig:
    return tiny_train_config(tmp_path, **{"data": str(data / "good.jsonl"), "eval_data": None,
                                          **kw})  # fmt: skip


def metrics(run_dir) -> list[dict]:
    recs = [json.loads(ln) for ln in open(os.path.join(run_dir, "metrics.jsonl"))]
    return [{k: v for k, v in r.items() if k != "perf/tokens_per_s"} for r in recs]


def test_non_finite_loss_stops_before_the_update_and_saves_nothing_bad(data, tmp_path, monkeypatch):
    """A NaN loss at step 3: stops naming step and rows, the step-2 checkpoint stays (finite),
    no final model, no COMPLETE; FAILED says why."""
    dpo = objectives.OBJECTIVES["dpo"]
    calls = {"n": 0}

    def nan_from_step_3(**kw):
        calls["n"] += 1
        loss = dpo.fn(**kw)
        return loss * float("nan") if calls["n"] >= 3 else loss

    patched = objectives.Objective(dpo.name, nan_from_step_3, dpo.partials, dpo.data, dpo.inputs,
                                   needs_ref=True)  # fmt: skip
    monkeypatch.setitem(objectives.OBJECTIVES, "dpo", patched)
    c = cfg(data, tmp_path, name="nan", max_steps=4, save_every=1)
    with pytest.raises(NonFiniteError, match=r"^step 3: non-finite loss/train = nan .* rows \["):
        run(c)
    run_dir = tmp_path / "runs" / "nan"
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
        "step_0000001",
        "step_0000002",
    ]
    assert not (run_dir / "final").exists() and not (run_dir / "COMPLETE").exists()
    assert "step 3" in (run_dir / "FAILED").read_text()
    from safetensors.torch import load_file

    weights = load_file(run_dir / "checkpoints" / "step_0000002" / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in weights.values())
    assert [r["step"] for r in metrics(run_dir)] == [1, 2]


def test_non_finite_lr_from_the_command_line_exits_3(data, tmp_path, capsys):
    code, err = cli(["--data", str(data / "good.jsonl"), "--eval-data", "None", "--lr", "1e30",
                     "--batch-size", "2", "--max-steps", "4", "--name", "big", *TINY], tmp_path,
                    capsys)  # fmt: skip
    assert code == 3 and err[-1].startswith("error: step 2: non-finite"), err
    assert not (tmp_path / "runs" / "big" / "final").exists()


def test_runs_are_never_overwritten_and_names_are_unique(data, tmp_path):
    a = cfg(data, tmp_path, max_steps=1)
    assert a.run_name() != a.replace(lr=2e-2).run_name() != a.replace(max_steps=2).run_name()
    assert a.run_name() == a.replace(progress=True, resume=True).run_name()
    first = run(a)
    before = (tmp_path / "runs" / a.run_name() / "metrics.jsonl").read_bytes()
    with pytest.raises(UserError, match=r"already holds a run; pass --resume .* --overwrite"):
        run(a)
    assert (tmp_path / "runs" / a.run_name() / "metrics.jsonl").read_bytes() == before
    second = run(a.replace(overwrite=True))
    assert second["run_dir"] == first["run_dir"] and metrics(second["run_dir"]) == metrics(
        first["run_dir"]
    )


def test_resume_with_torn_metrics_line_equals_uninterrupted_run(data, tmp_path, monkeypatch):
    c = cfg(data, tmp_path, max_steps=4, save_every=2)
    full = run(c.replace(name="full"))

    def interrupt(step, record):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(c.replace(name="cut"), on_step=interrupt)
    with open(tmp_path / "runs" / "cut" / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "loss/tra')  # a kill in the middle of a write
    resumed = run(c.replace(name="cut", resume=True))
    assert metrics(resumed["run_dir"]) == metrics(full["run_dir"])

    def no_training(*a, **k):
        raise AssertionError("a complete run was trained again")

    monkeypatch.setattr(llm_train, "train_step", no_training)
    again = run(c.replace(name="cut", resume=True))
    assert again["loss/train"] == metrics(full["run_dir"])[-1]["loss/train"]


class _Plant:
    """Unpickling this runs code: it creates the file ``path``."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize(
    "victim", ["optimizer.bin", "random_states_0.pkl", "custom_checkpoint_0.pkl"]
)
def test_resume_refuses_a_planted_pickle(data, tmp_path, victim):
    c = cfg(data, tmp_path, name="ckpt", max_steps=3, save_every=1)

    def interrupt(step, record):
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(c, on_step=interrupt)
    ckpt = tmp_path / "runs" / "ckpt" / "checkpoints" / "step_0000002"
    names = {p.name for p in ckpt.iterdir()}
    assert "model.safetensors" in names and "scheduler.json" in names
    assert not any(n.startswith(("custom_checkpoint", "pytorch_model")) for n in names), names
    marker = tmp_path / "code_ran"
    torch.save(_Plant(str(marker)), ckpt / victim)
    with pytest.raises(UserError, match=rf"refused to load .*{victim}: it is not plain tensor"):
        run(c.replace(resume=True))
    assert not marker.exists()


def test_corrupt_reference_cache_is_reported_and_recomputed(data, tmp_path, capsys):
    c = cfg(data, tmp_path, ref="precomputed", max_steps=1)
    first = run(c.replace(name="a"))
    meta = json.load(open(os.path.join(first["run_dir"], "config.json")))
    path = tmp_path / "cache" / "ref_logps" / f"{meta['ref_cache/train']['key']}.pt"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])  # truncated
    capsys.readouterr()
    second = run(c.replace(name="b"))
    assert f"reference cache {path} is corrupt" in capsys.readouterr().err
    meta = json.load(open(os.path.join(second["run_dir"], "config.json")))
    assert meta["ref_cache/train"]["reused"] is False
    assert metrics(first["run_dir"]) == metrics(second["run_dir"])
    third = run(c.replace(name="c"))  # the recomputed file is whole again
    assert json.load(open(os.path.join(third["run_dir"], "config.json")))["ref_cache/train"][
        "reused"
    ]


def test_identical_pairs_are_counted_and_kept(data, tmp_path, capsys):
    same = tmp_path / "same.jsonl"
    same.write_text(
        (data / "good.jsonl").read_text() + json.dumps({**ROW, "rejected": ROW["chosen"]})
    )
    res = run(cfg(data, tmp_path, max_steps=1).replace(data=str(same)))
    assert "1 of 17 pairs have identical chosen and rejected" in capsys.readouterr().err
    meta = json.load(open(os.path.join(res["run_dir"], "config.json")))
    assert meta["data"]["train"]["identical"] == 1 and meta["data"]["train"]["kept"] == 17
