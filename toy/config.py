"""The bandit run's typed configuration, its validation, and the shipped presets.

Every invalid value raises ``runio.UserError`` naming the field (``BanditConfig.lr: must be
positive and finite, got inf``) when the config is built, before any directory is created or
any training starts. The objective's hyperparameter ranges are the registry's
(``Objective.parse_hparams``), reached through ``BanditConfig.hparams``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

import objectives
from rounds.options import RoundOptions
from runio import UserError, validation_deferred
from runio.options import RunOptions
from runio.validate import check_types
from toy.bandit import REWARDS


@dataclass(frozen=True)
class BanditConfig(RunOptions, RoundOptions):
    """One bandit experiment (paper A, Algorithm 1). Every seed in ``seeds`` runs in one batch.
    The round and run knobs (``rounds.RoundOptions``, ``runio.RunOptions``) are shared with
    ``llm.TrainConfig``: same names, types, meanings and help."""

    objective: str = "bon"
    """Registry name of the loss (see ``objectives.OBJECTIVES``)."""
    reward: str = "R2"
    """R1 (peak at arm 70, low π_ref), R2 (peak at arm 20, near π_ref's mode), R1_w20, R1_w30."""
    reward_vector: tuple[float, ...] | None = None
    """A user-supplied reward per arm (overrides ``reward``); length n_arms."""
    minibatch_size: int | None = None
    """M: prompts per gradient step (paper A's Algorithm 1 fixes it). None: full batch, one step
    per pass. With M, each of the T passes shuffles the round's P prompts and takes P/M steps of
    M prompts each (P must be a multiple of M), so the number of gradient steps at a fixed query
    budget no longer grows as P shrinks."""
    policy: Literal["mlp", "tabular"] = "mlp"
    """Paper A's context MLP, or one logits vector shared by all contexts."""
    init_steps: int = 100
    """Adam steps fitting the policy to π_ref before training (paper A's SFT initialisation)."""
    init_lr: float = 0.01
    """Learning rate of that initialisation."""
    n_train_contexts: int = 1000
    """Size of the fixed pool of training prompts; each round draws P of them (with replacement).
    The presets set it to their P, as the official code does (its ``num_train_states``: one fixed
    set of 5, 10 or 100 prompts, on which the π_ref initialisation is also fitted, since that uses
    the first ``init_contexts`` of the pool). The default pool of 1,000 is the option where a
    round's prompts are almost always fresh; it slows on-policy BoN on R1 (see docs/bandit.md). When
    overriding a preset's ``prompts_per_round``, set this too: a pool smaller than P repeats
    prompts within a round."""
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

    def __post_init__(self) -> None:
        if not validation_deferred():
            validate(self)

    @property
    def steps_in_round(self) -> int:
        """Gradient steps per round: T passes × P/M minibatches."""
        return self.steps_per_round * (
            self.prompts_per_round // (self.minibatch_size or self.prompts_per_round)
        )

    @property
    def total_steps(self) -> int:
        return self.rounds * self.steps_in_round

    def hparams(self) -> dict[str, object]:
        """``hp`` parsed into typed values (types taken from the registry defaults)."""
        return parse_hparams(self.objective, self.hp)

    def run_name(self) -> str:
        """``name``, or a readable name plus a short hash of every field that changes the
        results (``toy.outputs.result_config``): two configs differing in anything (lr, steps, a
        hyperparameter) never share an automatic name."""
        if self.name:
            return self.name
        from runio import config_hash
        from toy.outputs import result_config

        seeds = f"s{self.seeds[0]}-{self.seeds[-1]}" if len(self.seeds) > 1 else f"s{self.seeds[0]}"
        hp = "".join(f"_{h.replace('=', '')}" for h in self.hp)
        readable = f"{self.objective}{hp}_{self.mode}_{self.reward}_P{self.prompts_per_round}"
        return f"{readable}_{seeds}_{config_hash(result_config(self))}"

    def replace(self, **changes) -> BanditConfig:
        return dataclasses.replace(self, **changes)


def parse_hparams(objective: str, pairs: tuple[str, ...]) -> dict[str, object]:
    """``key=value`` strings → typed hyperparameters of ``objective`` (see the registry)."""
    return objectives.get(objective).parse_hparams(pairs)


def _require(ok: bool, field_name: str, message: str) -> None:
    if not ok:
        raise UserError(f"BanditConfig.{field_name}: {message}")


_FLOATS = ("lr", "init_lr", "offline_fraction", "pair_threshold", "kl_penalty", "kl_reward")
_FLOATS += ("baseline_decay",)
_SIZES = (
    "prompts_per_round",
    "rounds",
    "steps_per_round",
    "n_train_contexts",
    "init_contexts",
    "n_eval_contexts",
    "dist_every",
    "eval_every",
)


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def validate(c: BanditConfig) -> None:
    """Raise a ``runio.UserError`` naming the first invalid field: first every field's kind
    against its annotation (``runio.validate.check_types``: no unknown mode, policy or baseline,
    no 2.5 rounds, no single seed where a tuple is expected), then the values' ranges."""
    check_types(c)
    _require(
        c.objective in objectives.OBJECTIVES,
        "objective",
        f"unknown {c.objective!r}; choose from {sorted(objectives.OBJECTIVES)}",
    )
    try:
        c.hparams()  # the registry's names, types and ranges
    except ValueError as e:
        raise UserError(f"BanditConfig.hp: {e}") from None
    for name in _FLOATS:
        value = getattr(c, name)
        finite = _is_number(value) and math.isfinite(value)
        if name in ("lr", "init_lr"):
            _require(finite and value > 0, name, f"must be positive and finite, got {value!r}")
        _require(finite, name, f"must be finite, got {value!r}")
    _require(
        c.reward_vector is not None or c.reward in REWARDS,
        "reward",
        f"unknown {c.reward!r}; choose from {sorted(REWARDS)} or set reward_vector",
    )
    if c.reward_vector is not None:
        _require(
            len(c.reward_vector) == c.n_arms,
            "reward_vector",
            f"needs {c.n_arms} values (n_arms), got {len(c.reward_vector)}",
        )
        bad = [x for x in c.reward_vector if not (_is_number(x) and math.isfinite(x))]
        _require(not bad, "reward_vector", f"every value must be finite, got {bad[:1]}")
    for name in _SIZES:
        _require(getattr(c, name) >= 1, name, f"must be at least 1, got {getattr(c, name)}")
    _require(
        c.samples_per_prompt >= 2,
        "samples_per_prompt",
        f"must be at least 2, got {c.samples_per_prompt}",
    )
    _require(c.n_arms >= 2, "n_arms", f"must be at least 2, got {c.n_arms}")
    _require(c.init_steps >= 0, "init_steps", f"must be non-negative, got {c.init_steps}")
    _require(
        0.0 <= c.offline_fraction <= 1.0,
        "offline_fraction",
        f"must be in [0, 1], got {c.offline_fraction}",
    )
    if c.minibatch_size is not None:
        m = c.minibatch_size
        _require(
            isinstance(m, int) and not isinstance(m, bool) and 1 <= m <= c.prompts_per_round,
            "minibatch_size",
            f"must be an integer in [1, prompts_per_round={c.prompts_per_round}], got {m!r}",
        )
        _require(
            c.prompts_per_round % m == 0,
            "minibatch_size",
            f"must divide prompts_per_round={c.prompts_per_round}, got {m}",
        )
    _require(
        c.pair_threshold >= 0, "pair_threshold", f"must be non-negative, got {c.pair_threshold}"
    )
    _require(
        c.pair_ties in ("drop", "first"), "pair_ties", f"must be drop or first, got {c.pair_ties!r}"
    )
    for name in ("kl_penalty", "kl_reward"):
        value = getattr(c, name)
        _require(value >= 0, name, f"must be non-negative, got {value}")
    _require(
        0.0 <= c.baseline_decay < 1.0,
        "baseline_decay",
        f"must be in [0, 1), got {c.baseline_decay}",
    )
    _require(
        len(c.seeds) >= 1 and len(set(c.seeds)) == len(c.seeds),
        "seeds",
        "needs at least one seed, without repeats",
    )
    bad_seeds = [
        s for s in c.seeds if not (isinstance(s, int) and not isinstance(s, bool) and s >= 0)
    ]
    _require(
        not bad_seeds and max(c.seeds) < 2**63,
        "seeds",
        f"must be integers in [0, 2**63), got {(bad_seeds or [max(c.seeds)])[0]!r}",
    )
    _require(
        c.policy != "mlp" or c.n_arms == 100,
        "n_arms",
        "the MLP policy has 100 outputs; use policy=tabular for other K",
    )
    _require(
        not (c.resume and c.overwrite), "resume", "--resume and --overwrite exclude each other"
    )
    _require(
        c.name is None or (c.name not in (".", "..") and "/" not in c.name and "\0" not in c.name),
        "name",
        f"must be one directory name (no '/', not '.' or '..'), got {c.name!r}",
    )
    if c.report_to != "none":  # runio.tracking (and what it checks) only when asked for
        from runio.tracking import problem

        untrackable = problem(c.report_to)
        _require(untrackable is None, "report_to", str(untrackable))
        _require(
            bool(c.out_dir), "report_to", "needs an out_dir (its files go in the run directory)"
        )


# ----------------------------------------------------------------------------------------------
# Presets: the four shipped configurations of docs/science.md §2 and on-policy counterparts.

# n_train_contexts = P: the official scripts train on one fixed set of P prompts.
_ON = dict(
    mode="on_policy", prompts_per_round=10, n_train_contexts=10, rounds=100, steps_per_round=15
)
PRESETS: dict[str, BanditConfig] = {
    "offline_bon": BanditConfig(
        objective="bon",
        reward="R2",
        mode="offline",
        prompts_per_round=5,
        n_train_contexts=5,
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
        n_train_contexts=100,
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
queries and 1,500 gradient steps. Every preset trains on a fixed pool of exactly its P prompts
(``n_train_contexts``), like the official scripts; pass a larger pool to draw from many."""


def preset(name: str, **overrides) -> BanditConfig:
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    return PRESETS[name].replace(**overrides)
