"""What a round leaves on disk: its metrics.jsonl record (slash-namespaced keys, ``ROUND_KEYS``,
plus ``rounds/without_pairs`` for pairwise and chosen-only objectives and ``reward/<name>/mean``
per reward with several ``--reward``),
a sample of its generations for generations.jsonl, and the rounds state of a checkpoint
(``rounds_state.json``: the next round and the running baseline, plain JSON, written before
``llm.runs.save_checkpoint`` writes the checkpoint's trainer_state.json last)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

import rounds
from llm.collect import Collected, kl_estimate
from llm.config import TrainConfig
from llm.prompts import Prompt
from runio import UserError, atomic_write, read_jsonl

ROUND_KEYS = (
    "step", "round", "queries", "reward/mean", "reward/max", "reward/min", "reward/std",
    "response/length_mean", "response/ended", "policy/kl_ref", "pairs/valid", "loss/train",
    "grad/norm", "lr", "time/generate", "time/score", "time/update",
)  # fmt: skip
"""Keys of a metrics.jsonl record (one per round)."""

WITHOUT_PAIRS = "rounds/without_pairs"
"""Pairwise and chosen-only objectives: rounds so far (this one included) in which no pair
formed (every reward gap ≤ pair_threshold), so the objective's loss had no example."""


def rounds_without_pairs(run_dir: Path, first: int) -> int:
    """The rounds before ``first`` without pairs, from a resumed run's metrics.jsonl (its
    records of rounds after the checkpoint are already dropped)."""
    path = run_dir / "metrics.jsonl"
    if first == 0 or not path.exists():
        return 0
    recs = [r for r in read_jsonl(path) if r.get("round", first) < first]
    return sum(1 for r in recs if r.get("pairs/valid") == 0)


def warn_without_pairs(cfg: TrainConfig, r: int) -> bool:
    """Say once (stderr) that round r formed no pair; returns True."""
    print(
        f"[llm] warning: round {r}: no pair formed (every reward gap of a prompt's samples is ≤ "
        f"--pair-threshold {cfg.pair_threshold:g}), so {cfg.objective!r} had no pairs to train "
        f"on; such rounds are counted in metrics.jsonl as {WITHOUT_PAIRS} (warned once)",
        file=sys.stderr,
    )
    return True


def planned_updates(cfg: TrainConfig) -> int:
    """The optimiser updates of the run: rounds × steps_per_round, at most ``max_steps`` (TRL's
    --max_steps; 0: no bound)."""
    total = cfg.rounds * cfg.steps_per_round
    return min(total, cfg.max_steps) if cfg.max_steps else total


def planned_rounds(cfg: TrainConfig) -> int:
    """The rounds the run takes: ``rounds``, fewer when ``max_steps`` ends it earlier."""
    return -(-planned_updates(cfg) // cfg.steps_per_round)


def steps_of_round(cfg: TrainConfig, r: int) -> int:
    """The updates of round r: steps_per_round, fewer in a last round cut by ``max_steps``."""
    return min(cfg.steps_per_round, planned_updates(cfg) - r * cfg.steps_per_round)


def round_record(
    cfg: TrainConfig, r: int, col: Collected, rnd: rounds.Round, losses, norms, lr, t_upd
) -> dict:
    """The metrics.jsonl record of round r (keys ``ROUND_KEYS``; ``policy/kl_ref`` only when the
    run has a reference); rewards before the KL penalty."""
    rew = col.rewards_PN
    kl = kl_estimate(col)  # None without a reference (llm.round_passes): the key is left out
    return {
        "step": r * cfg.steps_per_round + steps_of_round(cfg, r), "round": r,
        "queries": (r + 1) * cfg.prompts_per_round * cfg.samples_per_prompt,
        "reward/mean": float(rew.mean()), "reward/max": float(rew.max()),
        "reward/min": float(rew.min()), "reward/std": float(rew.std(unbiased=False)),
        "response/length_mean": float(col.lengths_B.float().mean()),
        "response/ended": float(col.ended_B.float().mean()),
        **({} if kl is None else {"policy/kl_ref": kl}), "pairs/valid": int(rnd.n_valid_pairs),
        "loss/train": sum(losses) / len(losses), "grad/norm": sum(norms) / len(norms), "lr": lr,
        "time/generate": col.time_generate, "time/score": col.time_score, "time/update": t_upd,
        **reward_parts(col),
    }  # fmt: skip


def reward_parts(col: Collected) -> dict:
    """With several rewards: ``reward/<name>/mean`` each (the mean over the samples it scored,
    not None; None when it scored none), unweighted (``llm.reward_fns``)."""
    out = {}
    for name, v in col.reward_parts.items():
        ok = ~torch.isnan(v)
        out[f"reward/{name}/mean"] = float(v[ok].mean()) if bool(ok.any()) else None
    return out


def generation_records(
    cfg: TrainConfig, prompts: list[Prompt], r: int, col: Collected
) -> list[dict]:
    """generations.jsonl records: the first ``generations_per_round`` samples of round r."""
    n, out = cfg.samples_per_prompt, []
    for b in range(min(cfg.generations_per_round, len(col.texts))):
        p, k = divmod(b, n)
        prompt = prompts[col.prompt_idx[p]]
        out.append({
            "round": r, "prompt_row": prompt.idx, "sample": k,
            "source": "reference" if bool(col.offline_PN[p, k]) else "policy",
            "reward": float(col.rewards_PN[p, k]), "length": int(col.lengths_B[b]),
            "prompt": prompt.text, "response": col.texts[b],
        })  # fmt: skip
    return out


def _state_path(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"step_{step:07d}" / "rounds_state.json"


def save_round_state(run_dir: Path, step: int, next_round: int, baseline: torch.Tensor | None):
    path = _state_path(run_dir, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    b = None if baseline is None else float(baseline)
    text = json.dumps({"round": next_round, "baseline": b})
    atomic_write(path, lambda p: p.write_text(text))


def load_round_state(run_dir: Path, step: int) -> dict:
    """The rounds state of the checkpoint of ``step`` (a ``UserError`` when unreadable)."""
    path = _state_path(run_dir, step)
    try:
        state = json.loads(path.read_text())
        return {"round": int(state["round"]), "baseline": state["baseline"]}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"resume: {path} is unreadable ({type(e).__name__}: {e})") from None


def truncate_generations(run_dir: Path, next_round: int) -> None:
    """Drop generations.jsonl records of rounds from ``next_round`` on (a resumed run redoes
    them)."""
    path = run_dir / "generations.jsonl"
    if path.exists():
        text = "".join(json.dumps(r) + "\n" for r in read_jsonl(path) if r["round"] < next_round)
        atomic_write(path, lambda p: p.write_text(text))
