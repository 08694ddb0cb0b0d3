"""Paper A's synthetic length tasks (docs/science.md §5) on the reference LM of
``experiments.length_ref``.

- **min**:  r = -len                       (``--reward length_min``)
- **mode**: r = -|len - m|, m = the mode of the preference data's lengths (``length_mode``)
- **skew**: r = -len, but every response of the preference data is truncated to its first
  ⌈keep·len⌉ tokens and then EOS (``skew_length``), so the data's lengths pile up at the short
  end while π_ref's are broad, and each response ends where π_ref rarely stops.

``len`` counts response tokens without EOS (``llm.sampling``). The offline preference data is N
samples of π_ref per prompt, ranked by the task's reward (all pairs with a strictly higher
reward first; ties never pair), written as one jsonl row per prompt (``write_preferences``); the
row's ``prompt`` makes the file a prompts file too. ``DatasetSampler`` serves those stored token
ids to the rounds loop (``--mode offline``), so offline methods train on exactly the file's
responses while every method keeps the same loop, log-probs and objective code.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from llm.rewards import LENGTH_REWARDS
from llm.sampling import Samples, response_mask

TASKS = {"min": "length_min", "mode": "length_mode", "skew": "length_skew"}
"""task → the ``--reward`` of ``llm.rewards``."""
SKEW_KEEP = 0.25
"""Fraction of each response kept by the Skew truncation."""


def task_rewards(task: str, len_B: Tensor, m: float | None = None) -> Tensor:
    """The task's reward of response lengths (B,), as ``llm.rewards`` computes it."""
    fn = LENGTH_REWARDS[TASKS[task]][1]
    return fn(len_B.float(), m=float(m)) if task == "mode" else fn(len_B.float())


def reward_args(task: str, m: float | None) -> tuple[str, ...]:
    """``--reward-args`` of the task (m for mode)."""
    return (f"m={m:g}",) if task == "mode" else ()


def length_mode(lengths: Sequence[int]) -> int:
    """The most common length (the smallest of equally common ones)."""
    counts = Counter(int(x) for x in lengths)
    top = max(counts.values())
    return min(k for k, c in counts.items() if c == top)


def skew_length(length: int, keep: float = SKEW_KEEP) -> int:
    """Length after the Skew truncation: ⌈keep·len⌉ (0 stays 0, every other length ≥ 1)."""
    return math.ceil(keep * length)


def response_ids(tokens: Sequence[int], eos_id: int, length: int | None = None) -> list[int]:
    """The first ``length`` response tokens (all non-EOS ones when None), then EOS."""
    body = [t for t in tokens if t != eos_id]
    return [*body[: len(body) if length is None else length], eos_id]


def ranked_pairs(rewards: Sequence[float]) -> list[list[int]]:
    """All (winner, loser) index pairs with r_w > r_l, by decreasing gap then index."""
    n = len(rewards)
    pairs = [[i, j] for i in range(n) for j in range(n) if rewards[i] > rewards[j]]
    return sorted(pairs, key=lambda p: (-(rewards[p[0]] - rewards[p[1]]), p))


def build_preferences(
    prompts: Sequence[str],
    samples: Sequence[Sequence[Sequence[int]]],
    task: str,
    eos_id: int,
    *,
    m: float | None = None,
    keep: float = SKEW_KEEP,
) -> list[dict]:
    """One row per prompt from π_ref's samples ``samples[p][k]`` (token ids, EOS or not): the
    responses (Skew: truncated, ``skew_length``; every response ends in EOS), their lengths,
    the task's rewards and the reward-ranked pairs."""
    rows = []
    for prompt, group in zip(prompts, samples):
        ids = [response_ids(s, eos_id) for s in group]
        if task == "skew":
            ids = [response_ids(s, eos_id, skew_length(len(s) - 1, keep)) for s in ids]
        lengths = [len(s) - 1 for s in ids]
        rewards = task_rewards(task, torch.tensor(lengths), m).tolist()
        rows.append({"prompt": prompt, "token_ids": ids, "lengths": lengths,
                     "rewards": rewards, "pairs": ranked_pairs(rewards)})  # fmt: skip
    return rows


def write_preferences(path: Path, rows: list[dict], tokenizer=None) -> Path:
    """The rows as jsonl (with decoded ``responses`` when a tokenizer is given)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for row in rows:
            if tokenizer is not None:
                texts = tokenizer.batch_decode(row["token_ids"], skip_special_tokens=True)
                row = {**row, "responses": texts}
            f.write(json.dumps(row) + "\n")
    return path


@dataclass
class DatasetSampler:
    """A ``llm.sampling.Sampler`` that returns the stored responses of each prompt (its first n),
    whatever the model: the offline methods' data source. ``by_prompt`` maps a prompt's token
    ids to its responses' token ids."""

    by_prompt: dict[tuple[int, ...], list[list[int]]]
    pad_id: int
    eos_id: int

    def sample(self, model, prompts: Sequence[Sequence[int]], n: int, seed: int) -> Samples:
        rows = []
        for p in prompts:
            stored = self.by_prompt[tuple(p)]
            if len(stored) < n:
                raise ValueError(f"{len(stored)} stored responses for a prompt, {n} asked")
            rows += stored[:n]
        width = max(map(len, rows))
        tokens = torch.tensor([r + [self.pad_id] * (width - len(r)) for r in rows])
        mask, lengths, ended = response_mask(tokens, [self.eos_id])
        return Samples(torch.where(mask.bool(), tokens, self.pad_id), mask, lengths, ended)
