"""The command line of ``toy.gradients``: one frozen config per sub-command (tyro sub-commands)
and their validation (one ``UserError`` line naming the option, before anything runs)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import objectives
from runio import UserError, check_writable, validation_deferred
from runio.validate import check_types
from toy.bandit import N_ARMS
from toy.config import parse_hparams

# bandit hyperparameters that differ from the registry defaults (paper A's IPO margin of 10)
BANDIT_HP: dict[str, tuple[str, ...]] = {"ipo": ("tau=0.05",)}
# the objectives ``mass`` compares when none is named
MASS_DEFAULT = ("sft", "dpo", "ipo", "simpo", "asft", "orpo", "slic")


@dataclass(frozen=True, kw_only=True)
class CommandConfig:
    """The options every sub-command takes."""

    command: ClassVar[str] = ""

    hp: tuple[str, ...] = ()
    """Hyperparameters key=value of --objective (e.g. beta=0.1); others keep registry defaults."""
    out: str | None = None
    """Also write the table to this CSV file (atomically)."""

    def __post_init__(self) -> None:
        if not validation_deferred():
            validate(self)


@dataclass(frozen=True, kw_only=True)
class PointConfig(CommandConfig):
    """Partials and push-down ratio at one (x_w, x_l)."""

    command: ClassVar[str] = "point"

    objective: str
    """Registry name of the loss (an objective on pairs or on chosen responses)."""
    x_w: float
    """π(y_w): probability of the chosen response, in (0, 1)."""
    x_l: float
    """π(y_l): probability of the rejected response, in (0, 1); x_w + x_l ≤ 1."""
    ref_w: float = 0.5
    """π_ref(y_w), in (0, 1)."""
    ref_l: float = 0.5
    """π_ref(y_l), in (0, 1); ref_w + ref_l ≤ 1."""


@dataclass(frozen=True, kw_only=True)
class FieldConfig(CommandConfig):
    """Descent field on the triangle x_w + x_l <= 1."""

    command: ClassVar[str] = "field"

    objective: str
    """Registry name of the loss (an objective on pairs or on chosen responses)."""
    grid: int = 25
    """Grid points along each side of the triangle (at least 2)."""
    ref_w: float = 0.5
    """π_ref(y_w), in (0, 1)."""
    ref_l: float = 0.5
    """π_ref(y_l), in (0, 1); ref_w + ref_l ≤ 1."""


@dataclass(frozen=True, kw_only=True)
class MassConfig(CommandConfig):
    """One-step mass accounting on a bandit policy."""

    command: ClassVar[str] = "mass"

    objective: tuple[str, ...] = ()
    """Objectives to compare (with --hp applied to each); none: sft dpo ipo simpo asft orpo slic
    at their bandit hyperparameters."""
    policy: Literal["tabular", "mlp"] = "tabular"
    """One logits vector, or paper A's context MLP (fitted to π_ref, seed 0)."""
    chosen: tuple[int, ...] = (70,)
    """Chosen arms, one per pair, in [0, 100)."""
    rejected: tuple[int, ...] = (16,)
    """Rejected arms, paired with --chosen (ignored by chosen-only objectives)."""
    lr: float = 0.1
    """Step size of the one gradient step."""


@dataclass(frozen=True, kw_only=True)
class LemmaConfig(CommandConfig):
    """Lemma 6.2 with c2 > 0 vs c2 = 0."""

    command: ClassVar[str] = "lemma"

    c2: float = 1.0
    """Weight of the negative (rejected) gradient; non-negative."""
    lr: float = 0.1
    """Step size of the one gradient step."""


@dataclass(frozen=True, kw_only=True)
class DisplacementConfig(CommandConfig):
    """Likelihood displacement vs embedding similarity."""

    command: ClassVar[str] = "displacement"


@dataclass(frozen=True, kw_only=True)
class KLConfig(CommandConfig):
    """Forward vs reverse KL on the 4-category example."""

    command: ClassVar[str] = "kl"


@dataclass(frozen=True, kw_only=True)
class StepsConfig(CommandConfig):
    """Steps to 50% / 90% mass on the optimal arm (on-policy bandit, 1,500 steps)."""

    command: ClassVar[str] = "steps"

    objective: tuple[str, ...] = ()
    """Objectives to run; none: every registry objective."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Seeds (non-negative); the table averages over those that reach each threshold."""
    reward: str = "R1"
    """Bandit reward (toy.bandit.REWARDS)."""
    tuned: str | None = None
    """Each objective's tuned lr and hyperparameters, from this JSON of analysis.tune, instead
    of the shared lr 1e-3 (--tuned alone: figures/data/tuned.json)."""
    progress: bool = True
    """Show a progress bar."""


COMMANDS: tuple[type[CommandConfig], ...] = (
    PointConfig,
    FieldConfig,
    MassConfig,
    LemmaConfig,
    DisplacementConfig,
    KLConfig,
    StepsConfig,
)
GradientsConfig = (
    PointConfig
    | FieldConfig
    | MassConfig
    | LemmaConfig
    | DisplacementConfig
    | KLConfig
    | StepsConfig
)
"""Any sub-command's config."""


def _check_simplex(names: str, a: float, b: float) -> None:
    """Both probabilities in (0, 1) and their sum at most 1 (the feasible triangle)."""
    if not (0 < a < 1 and 0 < b < 1 and a + b <= 1 + 1e-12):
        raise UserError(
            f"{names} must be probabilities in (0, 1) with a sum of at most 1 "
            f"(the probability simplex), got {a:g} and {b:g}"
        )


def _check_objectives(cfg, kinds: tuple[str, ...]) -> None:
    """Known objectives (``objectives.get`` names the valid ones) of a data kind the command
    handles, and ``--hp`` that parses and lies in range for each."""
    names = cfg.objective if isinstance(cfg.objective, tuple) else (cfg.objective,)
    for name in names:
        obj = objectives.get(name)
        if obj.data not in kinds:
            raise UserError(
                f"{cfg.command}: objective {name!r} consumes {obj.data!r} data; "
                f"this command takes objectives on {' or '.join(repr(k) for k in kinds)}"
            )
        parse_hparams(name, cfg.hp)


def _check_lr(lr: float) -> None:
    if not (math.isfinite(lr) and lr > 0):
        raise UserError(f"--lr must be positive and finite, got {lr:g}")


def validate(cfg: CommandConfig) -> None:
    """Raise ``runio.UserError`` (one line) for any bad input, before anything is computed."""
    check_types(cfg)  # every field's kind first: no string where a list of arms is expected
    cmd = cfg.command
    if cfg.out is not None:
        out = Path(cfg.out)
        if out.is_dir():
            raise UserError(f"--out {cfg.out}: is a directory; give a CSV file name")
        if not out.resolve().parent.is_dir():
            raise UserError(f"--out {cfg.out}: directory {out.parent} does not exist")
        check_writable(out.resolve().parent, f"--out {cfg.out}")  # before anything is computed
    if cfg.hp and not hasattr(cfg, "objective"):
        raise UserError(f"{cmd}: --hp is not used by this command")
    if cfg.hp and isinstance(cfg, (MassConfig, StepsConfig)) and not cfg.objective:
        raise UserError(f"{cmd}: --hp needs --objective (which objective's hyperparameters?)")
    if isinstance(cfg, (PointConfig, FieldConfig)):
        if isinstance(cfg, PointConfig):
            _check_simplex("--x-w and --x-l", cfg.x_w, cfg.x_l)
        elif cfg.grid < 2:
            raise UserError(f"field: --grid must be at least 2, got {cfg.grid}")
        _check_simplex("--ref-w and --ref-l", cfg.ref_w, cfg.ref_l)
        _check_objectives(cfg, ("pairs", "chosen"))
    elif isinstance(cfg, MassConfig):
        for flag, arms in (("--chosen", cfg.chosen), ("--rejected", cfg.rejected)):
            bad = [a for a in arms if not 0 <= a < N_ARMS]
            if not arms:
                raise UserError(f"mass: {flag} needs at least one arm")
            if bad:
                raise UserError(f"mass: {flag} arms must be in [0, {N_ARMS}), got {bad}")
        if len(cfg.chosen) != len(cfg.rejected):
            raise UserError(
                f"mass: --chosen and --rejected must pair up, got {len(cfg.chosen)} and "
                f"{len(cfg.rejected)} arms"
            )
        _check_lr(cfg.lr)
        if cfg.objective:
            _check_objectives(cfg, ("pairs", "chosen"))
    elif isinstance(cfg, LemmaConfig):
        _check_lr(cfg.lr)
        if not (math.isfinite(cfg.c2) and cfg.c2 >= 0):
            raise UserError(f"lemma: --c2 must be non-negative and finite, got {cfg.c2:g}")
    elif isinstance(cfg, StepsConfig):
        bad = [s for s in cfg.seeds if s < 0]
        if not cfg.seeds:
            raise UserError("steps: --seeds needs at least one seed")
        if bad:
            raise UserError(f"steps: --seeds must be non-negative integers, got {bad}")
        if cfg.objective:
            _check_objectives(cfg, ("pairs", "chosen", "groups"))
