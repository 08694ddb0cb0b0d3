"""N-token bandit experiments through the LLM harness (``experiments.token_bandit``).

For each reward (R1, R2), seed and objective (BoN, DPO β 0.1, IPO τ 0.05, REINFORCE, ASFT λ 0.1):

- on-policy: ``llm.train.run`` with ``--mode on_policy``, 10 prompts × 10 samples per round,
  T = 15 steps per round, 30 rounds (450 steps, 3,000 reward queries);
- offline: ``--mode offline`` on one fixed dataset of 10 prompts × 10 π_ref samples
  (``experiments.token_bandit.FixedSampler``; every round takes all 10 prompts of
  ``offline.jsonl``), the same 450 full-batch steps (a record every 15).

AdamW lr 1e-3, no weight decay, constant schedule, no clipping (the toy's Adam settings). After
every round ``experiments.token_bandit.exact_metrics`` (20 held-out prompts × 8 own prefixes) is
added to the round's record; step 0 is the fitted reference. Runs are kept under
``runs/token_bandit/`` (a complete run is reused), and the compact table the figure reads is
written to ``figures/data/token_bandit.csv`` with the fit report beside it.

    python -m analysis.run_token_bandit            # ~18 min on one CPU core (1,072 s)
    python -m analysis.run_token_bandit --quick    # seconds, into a temporary directory
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from experiments import token_bandit as tb

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "figures" / "data"
METHODS: dict[str, tuple[str, ...]] = {
    "bon": (),
    "dpo": ("beta=0.1",),
    "ipo": ("tau=0.05",),
    "reinforce": (),
    "asft": ("lam=0.1",),
}
MODES = ("on_policy", "offline")
REWARD_FN = {"R1": "experiments.token_bandit:reward_r1", "R2": "experiments.token_bandit:reward_r2"}


@dataclass(frozen=True)
class Budget:
    """The experiment grid and its per-run budget."""

    rounds: int = 30
    steps_per_round: int = 15
    prompts_per_round: int = 10
    samples_per_prompt: int = 10
    lr: float = 1e-3
    seeds: tuple[int, ...] = (0, 1, 2)
    rewards: tuple[str, ...] = ("R1", "R2")
    metric_samples: int = 8
    """Own prefixes per held-out prompt in ``exact_metrics``."""
    generations: int = 0
    """Samples per round written to each run's generations.jsonl."""
    fit: tb.FitConfig = field(default_factory=tb.FitConfig)
    """The reference LM's fit (cached by its hash)."""


QUICK = Budget(
    rounds=2, steps_per_round=2, prompts_per_round=4, samples_per_prompt=4, seeds=(0,),
    rewards=("R1",), metric_samples=2, fit=tb.FitConfig(steps=20),
)  # fmt: skip


def train_config(ref: Path, b: Budget, reward: str, mode: str, objective: str, seed: int, out):
    from llm.config import TrainConfig

    prompts = ref / ("train.jsonl" if mode == "on_policy" else "offline.jsonl")
    # offline: every prompt of offline.jsonl each round, so FixedSampler's data is one dataset
    p = b.prompts_per_round if mode == "on_policy" else tb.N_OFFLINE_PROMPTS
    return TrainConfig(
        model=str(ref), mode=mode, prompts=str(prompts), reward=REWARD_FN[reward],
        objective=objective, hp=METHODS[objective], rounds=b.rounds, prompts_per_round=p,
        samples_per_prompt=b.samples_per_prompt, steps_per_round=b.steps_per_round,
        max_new_tokens=tb.N_RESPONSE, max_prompt_len=1, max_len=1 + tb.N_RESPONSE,
        chat_template="off", lr=b.lr, lr_scheduler="constant_with_warmup", max_grad_norm=0.0,
        seed=seed, out_dir=str(out), progress=False, save_final=False, resume=True,
        generations_per_round=b.generations,
    )  # fmt: skip


def one_run(ref: Path, b: Budget, reward: str, mode: str, objective: str, seed: int, out):
    """The run's rows: step, queries, the exact metrics and the harness's batch metrics."""
    from llm.sampling import HFSampler
    from llm.train import run

    cfg = train_config(ref, b, reward, mode, objective, seed, out)
    held = tb.load_prompt_ids(ref / "heldout.jsonl")
    sampler = None
    if mode == "offline":
        sampler = tb.FixedSampler(HFSampler(tb.N_ARMS, (tb.N_ARMS,), tb.N_RESPONSE))
    res = run(
        cfg,
        sampler=sampler,
        extra_metrics=lambda lm, r: tb.exact_metrics(lm, held, reward, b.metric_samples),
    )
    rows = [json.loads(line) for line in open(Path(res["run_dir"]) / "metrics.jsonl")]
    batch = cfg.prompts_per_round * cfg.samples_per_prompt
    out_rows = []
    for rec in rows:
        r = rec["round"]
        keep = {k: v for k, v in rec.items() if k.startswith(("reward/", "mass/", "token/"))}
        out_rows.append({
            "step": (r + 1) * b.steps_per_round,
            "queries": (r + 1) * batch if mode == "on_policy" else batch,
            "loss/train": rec["loss/train"], **keep,
        })  # fmt: skip
    return out_rows


def experiment(b: Budget, data_dir: Path, runs_dir: Path, log=print) -> pd.DataFrame:
    """Every run of the grid (seed-major, so a partial table covers every method); writes
    ``token_bandit.csv`` and ``token_bandit_fit.json`` into ``data_dir``; returns the table."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()
    ref = tb.prepare(b.fit)
    data_dir.mkdir(parents=True, exist_ok=True)
    report = json.loads((ref / "fit_report.json").read_text())
    (data_dir / "token_bandit_fit.json").write_text(json.dumps(report, indent=1) + "\n")
    held = tb.load_prompt_ids(ref / "heldout.jsonl")
    lm = AutoModelForCausalLM.from_pretrained(ref)
    rows = []
    for seed in b.seeds:
        for reward in b.rewards:
            start = tb.exact_metrics(lm, held, reward, b.metric_samples)
            for objective in METHODS:
                for mode in MODES:
                    t0 = time.perf_counter()
                    key = {"reward": reward, "mode": mode, "objective": objective, "seed": seed}
                    rows.append({**key, "step": 0, "queries": 0, **start})
                    run_rows = one_run(ref, b, reward, mode, objective, seed, runs_dir)
                    rows += [{**key, **r} for r in run_rows]
                    final = run_rows[-1]["reward/expected"]
                    log(
                        f"{reward} {mode:9s} {objective:9s} s{seed}: reward/expected {final:.3f}"
                        f" ({time.perf_counter() - t0:.1f}s)"
                    )
            table = pd.DataFrame(rows)
            table.to_csv(data_dir / "token_bandit.csv", index=False, float_format="%.6g")
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny grid into a temporary dir")
    parser.add_argument("--seeds", type=int, nargs="*", default=None)
    parser.add_argument("--rewards", nargs="*", default=None)
    args = parser.parse_args(argv)
    b = QUICK if args.quick else Budget()
    if args.seeds is not None:
        b = replace(b, seeds=tuple(args.seeds))
    if args.rewards is not None:
        b = replace(b, rewards=tuple(args.rewards))
    if args.quick:
        import tempfile

        tmp = Path(tempfile.mkdtemp(prefix="token_bandit_"))
        experiment(b, tmp / "data", tmp / "runs")
        print(f"quick table: {tmp / 'data' / 'token_bandit.csv'}")
        return
    t0 = time.perf_counter()
    experiment(b, DATA, ROOT / "runs" / "token_bandit")
    print(f"all runs: {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
