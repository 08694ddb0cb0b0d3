"""The bandit run's typed configuration, its validation, and the shipped presets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import objectives
from toy.bandit import REWARDS


@dataclass(frozen=True)
class BanditConfig:
    """One bandit experiment (paper A, Algorithm 1). Every seed in ``seeds`` runs in one batch."""

    objective: str = "bon"
    """Registry name of the loss (see ``objectives.OBJECTIVES``)."""
    hp: tuple[str, ...] = ()
    """Objective hyperparameters as key=value (e.g. beta=0.1 tau=0.05); unset ones keep the
    registry defaults."""
    reward: str = "R2"
    """R1 (peak at arm 70, low π_ref), R2 (peak at arm 20, near π_ref's mode), R1_w20, R1_w30."""
    reward_vector: tuple[float, ...] | None = None
    """A user-supplied reward per arm (overrides ``reward``); length n_arms."""
    mode: Literal["on_policy", "offline", "hybrid"] = "on_policy"
    """Where samples after round 0 come from: the current policy, π_ref, or a mixture."""
    offline_fraction: float = 0.5
    """Hybrid only: fraction of each prompt's N samples drawn from π_ref (the offline data)."""
    prompts_per_round: int = 10
    """P: training prompts per round."""
    samples_per_prompt: int = 10
    """N: responses sampled per prompt (N(N-1)/2 candidate pairs)."""
    rounds: int = 100
    """R: data-collection rounds (round 0 samples from π_ref)."""
    steps_per_round: int = 15
    """T: gradient steps on each round's data (sample reuse)."""
    lr: float = 1e-3
    """Adam learning rate (no weight decay, no schedule)."""
    policy: Literal["mlp", "tabular"] = "mlp"
    """Paper A's context MLP, or one logits vector shared by all contexts."""
    pair_threshold: float = 0.0
    """Pairs whose reward gap is not above this are dropped."""
    kl_penalty: float = 0.0
    """Coefficient of an exact KL(π‖π_ref) penalty added to any objective's loss."""
    baseline: Literal["group", "running"] = "group"
    """Advantages for objectives that take a baseline (REINFORCE, PPO): z-scored per prompt, or
    reward minus a running mean of past rounds' rewards."""
    baseline_decay: float = 0.9
    """Decay of the running reward mean (``baseline=running``)."""
    init_steps: int = 100
    """Adam steps fitting the policy to π_ref before training (paper A's SFT initialisation)."""
    init_lr: float = 0.01
    """Learning rate of that initialisation."""
    n_train_contexts: int = 1000
    """Size of the fixed pool of training prompts; each round draws P of them."""
    init_contexts: int = 100
    """The initialisation averages the KL over the first this-many training contexts. π_ref does
    not depend on the context, so more contexts change little but the cost (our choice)."""
    n_eval_contexts: int = 100
    """Fixed evaluation contexts on which the exact metrics are computed."""
    n_arms: int = 100
    """K."""
    seeds: tuple[int, ...] = (0,)
    """Seeds run together as one batched computation; each seed's run is independent."""
    dist_every: int = 15
    """Store the full K-arm distribution every this many steps (and at the last step)."""
    name: str | None = None
    """Run name (directory under out_dir); derived from the config when None."""
    out_dir: str = "runs"
    """Where runs/<name>/ is written; empty string to write nothing."""
    progress: bool = True
    """Show a progress bar for runs longer than a few seconds."""

    def __post_init__(self) -> None:
        validate(self)

    @property
    def total_steps(self) -> int:
        return self.rounds * self.steps_per_round

    def hparams(self) -> dict[str, object]:
        """``hp`` parsed into typed values (types taken from the registry defaults)."""
        return parse_hparams(self.objective, self.hp)

    def run_name(self) -> str:
        if self.name:
            return self.name
        seeds = f"s{self.seeds[0]}-{self.seeds[-1]}" if len(self.seeds) > 1 else f"s{self.seeds[0]}"
        hp = "".join(f"_{h.replace('=', '')}" for h in self.hp)
        return f"{self.objective}{hp}_{self.mode}_{self.reward}_P{self.prompts_per_round}_{seeds}"

    def replace(self, **changes) -> BanditConfig:
        return dataclasses.replace(self, **changes)


def parse_hparams(objective: str, pairs: tuple[str, ...]) -> dict[str, object]:
    """``key=value`` strings → typed hyperparameters of ``objective`` (see the registry)."""
    return objectives.get(objective).parse_hparams(pairs)


def _require(ok: bool, field_name: str, message: str) -> None:
    if not ok:
        raise ValueError(f"BanditConfig.{field_name}: {message}")


def validate(c: BanditConfig) -> None:
    """Raise a ValueError naming the first invalid field."""
    _require(
        c.objective in objectives.OBJECTIVES,
        "objective",
        f"unknown {c.objective!r}; choose from {sorted(objectives.OBJECTIVES)}",
    )
    c.hparams()
    _require(
        c.reward_vector is not None or c.reward in REWARDS,
        "reward",
        f"unknown {c.reward!r}; choose from {sorted(REWARDS)} or set reward_vector",
    )
    _require(
        c.reward_vector is None or len(c.reward_vector) == c.n_arms,
        "reward_vector",
        f"needs {c.n_arms} values",
    )
    for name in (
        "prompts_per_round",
        "rounds",
        "steps_per_round",
        "n_train_contexts",
        "n_eval_contexts",
        "dist_every",
    ):
        _require(getattr(c, name) >= 1, name, "must be at least 1")
    _require(c.samples_per_prompt >= 2, "samples_per_prompt", "must be at least 2")
    _require(c.n_arms >= 2, "n_arms", "must be at least 2")
    _require(c.init_steps >= 0, "init_steps", "must be non-negative")
    _require(c.lr > 0 and c.init_lr > 0, "lr", "learning rates must be positive")
    _require(0.0 <= c.offline_fraction <= 1.0, "offline_fraction", "must be in [0, 1]")
    _require(c.pair_threshold >= 0, "pair_threshold", "must be non-negative")
    _require(c.kl_penalty >= 0, "kl_penalty", "must be non-negative")
    _require(0.0 <= c.baseline_decay < 1.0, "baseline_decay", "must be in [0, 1)")
    _require(
        len(c.seeds) >= 1 and len(set(c.seeds)) == len(c.seeds),
        "seeds",
        "needs at least one seed, without repeats",
    )
    _require(
        c.policy != "mlp" or c.n_arms == 100,
        "n_arms",
        "the MLP policy has 100 outputs; use policy=tabular for other K",
    )


# ----------------------------------------------------------------------------------------------
# Presets: the four shipped configurations of science.md §2 and on-policy counterparts.

_ON = dict(mode="on_policy", prompts_per_round=10, rounds=100, steps_per_round=15)
PRESETS: dict[str, BanditConfig] = {
    "offline_bon": BanditConfig(
        objective="bon",
        reward="R2",
        mode="offline",
        prompts_per_round=5,
        rounds=1,
        steps_per_round=200,
        lr=1e-2,
    ),
    "offline_ipo": BanditConfig(
        objective="ipo",
        hp=("tau=0.05",),
        reward="R2",
        mode="offline",
        prompts_per_round=100,
        rounds=1,
        steps_per_round=200,
        lr=3e-3,
        pair_threshold=0.2,
    ),
    "onpolicy_bon": BanditConfig(objective="bon", reward="R1", lr=1e-3, **_ON),
    "onpolicy_ipo": BanditConfig(objective="ipo", hp=("tau=0.05",), reward="R2", lr=1e-2, **_ON),
    "onpolicy_dpo": BanditConfig(objective="dpo", hp=("beta=0.1",), reward="R1", lr=1e-3, **_ON),
    "onpolicy_reinforce": BanditConfig(objective="reinforce", reward="R1", lr=1e-3, **_ON),
    "onpolicy_ppo": BanditConfig(objective="ppo", reward="R1", lr=1e-3, **_ON),
    "onpolicy_rwr": BanditConfig(objective="rwr", reward="R1", lr=1e-3, **_ON),
    "onpolicy_asft": BanditConfig(objective="asft", reward="R1", lr=1e-3, **_ON),
}
"""Budget of the on-policy presets: 100 rounds × 10 prompts × 10 samples = 10,000 reward
queries and 1,500 gradient steps."""


def preset(name: str, **overrides) -> BanditConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    return PRESETS[name].replace(**overrides)
