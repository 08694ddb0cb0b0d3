"""The round knobs of Algorithm 1, declared once for both worlds: ``toy.BanditConfig`` and
``llm.TrainConfig`` inherit them, so each has one name, type, meaning and help text (tyro reads
the docstrings below for both command lines). A config may give a knob its own default only
where the scale of the world sets it (``SCALE_DEFAULTS``); ``tests/test_house.py`` holds the
rest equal."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

SCALE_DEFAULTS = ("mode", "rounds", "prompts_per_round", "samples_per_prompt", "steps_per_round")
"""Knobs whose default differs between the worlds, and why: a bandit round costs microseconds
and a language model's seconds to minutes, so the bandit defaults to paper A's on-policy
budget (100 rounds × 10 prompts × 10 samples × 15 steps) and a language model to a small one
(10 × 8 × 4 × 1); ``mode``: a language model also trains on offline preference pairs
(``pairs``, its default), which the bandit has no data for."""


@dataclass(frozen=True)
class RoundOptions:
    """Algorithm 1 (paper A): each round, P prompts × N samples, scored and paired, then T
    optimiser steps on them."""

    mode: Literal["on_policy", "offline", "hybrid"] = "on_policy"
    """Where each round's samples come from after round 0 (which samples π_ref): the current
    policy (on_policy), π_ref (offline), or per prompt a mixture (hybrid)."""
    offline_fraction: float = 0.5
    """Hybrid only: the fraction of each prompt's N samples drawn from π_ref."""
    rounds: int = 100
    """R: data-collection rounds (round 0 samples π_ref)."""
    prompts_per_round: int = 10
    """P: prompts per round."""
    samples_per_prompt: int = 10
    """N: responses sampled per prompt (N(N-1)/2 candidate pairs)."""
    steps_per_round: int = 15
    """T: passes over each round's data (sample reuse); each pass is one full-batch optimiser
    step unless the config splits a pass into minibatches."""
    pair_threshold: float = 0.0
    """Pairs whose reward gap is not above this are dropped (ties never pair, unless
    pair_ties=first)."""
    pair_ties: Literal["drop", "first"] = "drop"
    """A pair of equal rewards: dropped (drop), or kept with its first sample chosen (first,
    TRL's OnlineDPOTrainer)."""
    baseline: Literal["group", "running"] = "group"
    """Advantages of objectives that take a baseline (REINFORCE, PPO): rewards z-scored per
    prompt (group), or minus a running mean of past rounds' rewards (running)."""
    baseline_decay: float = 0.9
    """Decay of the running reward mean (baseline=running)."""
    kl_penalty: float = 0.0
    """β of β·KL(π_θ‖π_ref) added to any objective's loss (paper A's bandit form). The bandit
    computes the KL exactly over the arms (mean over the step's contexts); a language model
    estimates it from the round's samples, importance-weighted to the current policy
    (``rounds.sampled_kl``)."""
    kl_reward: float = 0.0
    """β of the RLHF form: each sample's reward becomes r - β·(ℓ_old - ℓ_ref), the single-sample
    estimate of KL(π_old‖π_ref) of the sequence (ℓ summed over its tokens; ℓ_old under the
    policy that sampled it), before pairs and advantages are built (``rounds.kl_shaped``)."""
