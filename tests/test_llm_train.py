"""Training behaviour on a tiny GPT-2: resume equals an uninterrupted run, gradient accumulation
and 2 processes equal one large batch, reference strategies (hand-checked DPO loss log 2 at the
first step, precomputed cache reuse), reference-free runs load no reference, and the CLI."""

import json
import math
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from conftest import tiny_train_config
from safetensors.torch import load_file

from llm.config import TrainConfig
from llm.train import main, run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# ``files`` (16 training + 6 held-out shipped pairs) is in conftest.py


def cfg(files, tmp_path, **kw) -> TrainConfig:
    data = dict(data=str(files / "train.jsonl"), eval_data=str(files / "test.jsonl"))
    return tiny_train_config(tmp_path, **{**data, "warmup_steps": 1, **kw})


def final_params(result) -> dict:
    return load_file(os.path.join(result["run_dir"], "final", "model.safetensors"))


def records(result) -> list[dict]:
    path = os.path.join(result["run_dir"], "metrics.jsonl")
    recs = [json.loads(ln) for ln in open(path)]
    return [{k: v for k, v in r.items() if k != "perf/tokens_per_s"} for r in recs]


def assert_params_close(a: dict, b: dict, **tol) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], **tol)


def test_resume_after_interruption_matches_uninterrupted(files, tmp_path):
    c = cfg(files, tmp_path, max_steps=4, save_every=2, eval_every=2, lr_scheduler="cosine")
    full = run(c.replace(name="full"))

    def interrupt(step, record):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(c.replace(name="cut"), on_step=interrupt)
    resumed = run(c.replace(name="cut", resume=True))
    assert_params_close(final_params(full), final_params(resumed), rtol=0, atol=0)
    assert [r["step"] for r in records(resumed)] == [0, 1, 2, 3, 4]
    assert records(full) == records(resumed)
    with pytest.raises(ValueError, match=r"resume: config differs .*\['lr'\]"):
        run(c.replace(name="cut", resume=True, lr=0.5))


def test_gradient_accumulation_equals_large_batch(files, tmp_path):
    big = run(cfg(files, tmp_path, name="big", batch_size=4, grad_accum=1, max_steps=2))
    acc = run(cfg(files, tmp_path, name="acc", batch_size=1, grad_accum=4, max_steps=2))
    assert_params_close(final_params(big), final_params(acc), rtol=1e-4, atol=2e-5)
    for rb, ra in zip(records(big), records(acc)):
        assert rb.keys() == ra.keys()
        for k in rb:
            assert rb[k] == pytest.approx(ra[k], rel=1e-4, abs=1e-6), k


TWO_PROCESS_SCRIPT = """
import json, sys
from accelerate import debug_launcher


def f():
    from llm.config import TrainConfig
    from llm.train import run

    run(TrainConfig(**json.loads(sys.argv[1])))


debug_launcher(f, num_processes=2)
"""


def test_two_processes_match_one(files, tmp_path):
    """2 CPU processes (gloo) × 2 pairs equal 1 process × 2 micro-batches × 2 pairs. The launcher
    runs in a fresh interpreter: forking this one after torch has run threads can deadlock."""
    import dataclasses
    import subprocess

    one = run(cfg(files, tmp_path, name="one", batch_size=2, grad_accum=2, max_steps=2))
    two_cfg = cfg(files, tmp_path, name="two", batch_size=2, grad_accum=1, max_steps=2)
    args = json.dumps(dataclasses.asdict(two_cfg))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    log = tmp_path / "two.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", TWO_PROCESS_SCRIPT, args],
            env=env,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            proc.wait(timeout=150)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)  # the launcher and its workers
            pytest.fail(f"2-process run timed out: {log.read_text()[-3000:]}")
    assert proc.returncode == 0, log.read_text()[-3000:]
    two = {"run_dir": os.path.join(two_cfg.out_dir, "two")}
    assert_params_close(final_params(one), final_params(two), rtol=1e-4, atol=1e-5)
    meta = json.load(open(os.path.join(two["run_dir"], "config.json")))
    assert meta["processes"] == 2 and meta["pairs_per_step"] == 4
    for r1, r2 in zip(records(one), records(two)):
        assert r1["loss/train"] == pytest.approx(r2["loss/train"], rel=1e-4)
        assert r1.keys() == r2.keys()
        for k in (k for k in r1 if k.startswith("eval/")):
            assert r1[k] == pytest.approx(r2[k], rel=1e-4, abs=1e-5), k
    assert "eval/pairs/accuracy" in records(two)[-1]


@pytest.mark.parametrize("lora", [False, True])
def test_dpo_starts_at_log2_and_precomputed_reference_is_cached(files, tmp_path, lora):
    """At step 1 the policy is the reference, so h = 0 and DPO's loss is log 2 exactly."""
    c = cfg(files, tmp_path, objective="dpo", lora=lora, max_steps=2, eval_every=1)
    live = run(c.replace(name="live"))
    first = records(live)[1]
    assert first["loss/train"] == pytest.approx(math.log(2), abs=1e-6)
    assert records(live)[0]["eval/margin/implicit"] == pytest.approx(0, abs=1e-6)
    meta = json.load(open(os.path.join(live["run_dir"], "config.json")))
    assert meta["reference"] == ("adapter" if lora else "copy")
    pre1 = run(c.replace(name="pre1", ref="precomputed"))
    pre2 = run(c.replace(name="pre2", ref="precomputed"))
    m1 = json.load(open(os.path.join(pre1["run_dir"], "config.json")))
    m2 = json.load(open(os.path.join(pre2["run_dir"], "config.json")))
    assert not m1["ref_cache/train"]["reused"] and m2["ref_cache/train"]["reused"]
    assert m1["ref_cache/eval"]["key"] == m2["ref_cache/eval"]["key"]
    for r_live, r_pre in zip(records(live), records(pre2)):
        for k in r_live:  # ρ = ℓ - ℓ_ref: float32 sums of ~100 token log-probs, scored in
            # batches of another shape for the cache, agree to a few ulps of |ℓ| (~1e-5)
            margin = r_live.get(k.replace("pairs/accuracy", "margin/implicit"), 1.0)
            if k.endswith("pairs/accuracy") and abs(margin) < 5e-5:
                continue  # h = 0 up to rounding (policy = reference): the sign of h is noise
            assert r_live[k] == pytest.approx(r_pre[k], rel=1e-4, abs=5e-5), k


def test_reference_free_objective_loads_no_reference(files, tmp_path, monkeypatch):
    import llm.setup

    def no_copy(model):
        raise AssertionError("a reference copy was made")

    monkeypatch.setattr(llm.setup, "frozen_copy", no_copy)
    with pytest.raises(AssertionError, match=r"reference copy"):  # the patch is effective
        run(cfg(files, tmp_path, objective="dpo", max_steps=1))
    res = run(cfg(files, tmp_path, objective="simpo", hp=("gamma=0.5",), max_steps=1))
    meta = json.load(open(os.path.join(res["run_dir"], "config.json")))
    assert meta["reference"] == "none"
    assert meta["config"]["resolved_hparams"] == {"beta": 2.0, "gamma": 0.5}
    rec = records(res)[-1]
    # SimPO's logged margin is the mean-log-prob margin (no reference)
    assert rec["margin/implicit"] == pytest.approx(
        rec["logps/chosen_mean"] - rec["logps/rejected_mean"], abs=1e-5
    )


def test_cli_help_and_one_step(files, tmp_path, monkeypatch, capsys):
    import tyro

    with pytest.raises(SystemExit):
        tyro.cli(TrainConfig, args=["--help"])
    help_text = capsys.readouterr().out
    for flag in ("--model", "--data", "--objective", "--hp", "--lora", "--ref", "--grad-accum"):
        assert flag in help_text
    c = cfg(files, tmp_path)
    argv = ["llm.train", "--model", "tiny-llama", "--data", c.data, "--eval-data", c.eval_data]
    argv += ["--objective", "orpo", "--max-steps", "1", "--out-dir", c.out_dir, "--name", "cli"]
    argv += ["--max-len", "140", "--max-prompt-len", "110", "--gen-examples", "2"]
    argv += ["--gen-max-new-tokens", "4", "--no-progress"]
    assert main(argv[1:]) == 0
    out = json.loads(capsys.readouterr().out)
    assert 0 <= out["eval/pairs/accuracy"] <= 1 and out["eval/bleu4"] >= 0
    gens = [json.loads(x) for x in open(os.path.join(c.out_dir, "cli", "generations.jsonl"))]
    assert len(gens) == 2 and all(isinstance(g["generation"], str) for g in gens)


@pytest.mark.parametrize("layout", ["unpaired", "pairs"])
def test_cli_kto_mismatched_z0_runs(files, tmp_path, monkeypatch, capsys, layout):
    """``--objective kto --hp z0=mismatched form=unpaired`` (TRL's KTOTrainer conventions) runs
    on a KTO unpaired file (prompt/completion/label rows) and on the shipped pairs."""
    data = files / "train.jsonl"
    if layout == "unpaired":
        rows = [json.loads(x) for x in open(data, encoding="utf-8")]
        out = []
        for i, r in enumerate(rows):  # uneven sides: 16 desirable, 8 undesirable rows
            out.append({"prompt": r["prompt"], "completion": r["chosen"], "label": True})
            if i % 2:
                out.append({"prompt": r["prompt"], "completion": r["rejected"], "label": False})
        data = tmp_path / "kto.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in out))
    c = cfg(files, tmp_path)
    argv = ["llm.train", "--model", "tiny-llama", "--data", str(data), "--no-progress"]
    argv += ["--eval-data", c.eval_data, "--eval-every", "2", "--gen-examples", "0"]
    argv += ["--objective", "kto", "--hp", "z0=mismatched", "form=unpaired", "--max-steps", "3"]
    argv += ["--max-len", "140", "--max-prompt-len", "110", "--out-dir", c.out_dir]
    argv += ["--batch-size", "4", "--name", layout]
    assert main(argv[1:]) == 0
    out = json.loads(capsys.readouterr().out)
    recs = records({"run_dir": os.path.join(c.out_dir, layout)})
    assert [r["step"] for r in recs if "loss/train" in r] == [1, 2, 3]
    assert all(math.isfinite(r["loss/train"]) for r in recs if "loss/train" in r)
    assert math.isfinite(out["eval/loss"])
    meta = json.load(open(os.path.join(c.out_dir, layout, "config.json")))
    assert meta["config"]["resolved_hparams"]["z0"] == "mismatched"
    if layout == "unpaired":
        assert meta["data"]["train"]["unpaired"] == {"desirable": 16, "undesirable": 8, "pairs": 16}


def test_two_processes_kto_mismatched_z0(files, tmp_path):
    """KTO ``z0=mismatched`` with 2 CPU processes: the mismatched log-probs are gathered over
    the processes (a collective in every micro-batch and eval batch) and the run completes."""
    import dataclasses
    import subprocess

    c = cfg(files, tmp_path, name="kto2", objective="kto", batch_size=2, max_steps=2)
    c = c.replace(hp=("z0=mismatched", "form=unpaired"), eval_every=1)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(
        [sys.executable, "-c", TWO_PROCESS_SCRIPT, json.dumps(dataclasses.asdict(c))],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=150,
    )  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    run_dir = os.path.join(c.out_dir, "kto2")
    assert json.load(open(os.path.join(run_dir, "config.json")))["processes"] == 2
    recs = records({"run_dir": run_dir})
    assert [r["step"] for r in recs if "loss/train" in r] == [1, 2]
    assert all(math.isfinite(r["eval/loss"]) for r in recs if "eval/loss" in r)
