"""Check the papers' gradient claims from the command line (docs/science.md §4).

    python -m toy.gradients point --objective dpo --x-w 0.3 --x-l 0.1 --hp beta=0.1
    python -m toy.gradients field --objective asft --hp lam=0.1 --out field.csv
    python -m toy.gradients mass --objective dpo --policy mlp
    python -m toy.gradients lemma
    python -m toy.gradients displacement
    python -m toy.gradients kl
    python -m toy.gradients steps --seeds 0 1 2

Each prints a table; ``--out FILE.csv`` also writes it (atomically; the figures read these
tables). Bad input (a point off the probability simplex, an unknown objective, a bad ``--hp``,
an arm outside the bandit, ...) is reported as one ``error: ...`` line with exit code 2 before
anything is computed; ``--debug`` shows the traceback instead.

From Python: ``run(parse(["point", ...]))`` or ``run(PointConfig(...))`` returns the table
(and writes ``out``); ``main(argv)`` is the command line (prints it, returns the exit code).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import pandas as pd
import torch

import objectives
from runio import UserError, atomic_write, cli_entry, deferred_validation, validation_deferred
from toy import displacement, kl_modes, mass, prob_space
from toy.bandit import N_ARMS, reference_probs
from toy.config import parse_hparams, preset
from toy.policy import MLPPolicy, TabularPolicy

# bandit hyperparameters that differ from the registry defaults (paper A's IPO margin of 10)
BANDIT_HP: dict[str, tuple[str, ...]] = {"ipo": ("tau=0.05",)}
# the objectives ``mass`` compares when none is named
MASS_DEFAULT = ("sft", "dpo", "ipo", "simpo", "asft", "orpo", "slic")
# the tuned learning rates and hyperparameters ``steps --tuned`` reads (``analysis.tune``)
TUNED_JSON = Path(__file__).resolve().parent.parent / "figures" / "data" / "tuned.json"


def steps_to_mass(
    names: Sequence[str],
    thresholds: Sequence[float] = (0.5, 0.9),
    reward: str = "R1",
    seeds: tuple[int, ...] = (0, 1, 2),
    hp: Sequence[str] = (),
    tuned: Mapping[str, Mapping] | None = None,
    progress: bool = False,
    **overrides,
) -> pd.DataFrame:
    """Gradient steps until the policy puts each threshold of mass on the optimal arm
    (on-policy, 10 prompts × 10 samples, 1,500 steps): the mean over the seeds that get there,
    and how many do (NaN when none). ``hp`` (``key=value``) is added to each objective's bandit
    hyperparameters (``BANDIT_HP``), overriding them. ``tuned`` (objective → {"lr": ...,
    "hp": [...]}, e.g. ``figures/data/tuned.json``'s ``on_policy``; see ``analysis.tune``)
    replaces the shared lr and ``BANDIT_HP`` per objective (``hp`` and ``overrides`` still win).
    Every config is built, and so checked, before anything runs; then all objectives run
    through ``toy.sweep`` (one batch each) under one progress bar."""
    from toy import sweep as toy_sweep

    points = []
    for name in names:
        own_hp, own = BANDIT_HP.get(name, ()), {}
        if tuned is not None:
            if name not in tuned:
                raise UserError(f"steps: no tuned values for {name!r} (tuned: {sorted(tuned)})")
            own_hp, own = tuple(tuned[name].get("hp", ())), {"lr": float(tuned[name]["lr"])}
        cfg = preset(
            "onpolicy_bon",
            objective=name,
            hp=(*own_hp, *hp),
            reward=reward,
            seeds=seeds,
            out_dir="",
            progress=False,
            **own,
        ).replace(**overrides)
        cfg.hparams()  # parses and range-checks hp now, not after the previous runs
        points += toy_sweep.expand(cfg, {"objective": [name]}, seeds)
    m, _ = toy_sweep.run_points(points, seeds, progress=progress, desc="steps")
    rows = []
    for name, cfg in zip(names, (p.config for p in points)):
        own = m[m.objective == name]
        row = {"objective": name}
        for th in thresholds:
            hit = own[own["mass/optimal"] >= th].groupby("seed").step.min()
            reached = hit.reindex(list(seeds))
            row[f"steps to {th:.0%}"] = reached.mean()
            row[f"seeds reaching {th:.0%}"] = int(reached.notna().sum())
        if tuned is not None:
            row["lr"], row["hp"] = cfg.lr, " ".join(cfg.hp)
        rows.append(row)
    return pd.DataFrame(rows)


def load_tuned(path: str | Path = TUNED_JSON, setting: str = "on_policy") -> dict:
    """objective → {"lr", "hp"} from ``analysis.tune``'s JSON (its ``setting`` section)."""
    import json

    path = Path(path)
    if not path.is_file():
        raise UserError(f"--tuned {path}: no such file; run `python -m analysis.tune` first")
    try:
        return json.loads(path.read_text())[setting]
    except (ValueError, KeyError):
        raise UserError(f"--tuned {path}: not analysis.tune's JSON (no {setting!r})") from None


def _policy(kind: str, seed: int = 0):
    """(θ, logp_fn) of a fresh single-seed bandit policy fitted to π_ref, one context."""
    from toy.policy import fit_to_reference

    gen = torch.Generator().manual_seed(seed)
    module = MLPPolicy([gen]) if kind == "mlp" else TabularPolicy([gen])
    ctx = torch.rand(1, 1, 100, generator=gen)
    fit_to_reference(module, ctx, reference_probs(dtype=torch.float32).log(), steps=100)
    return mass.flat_policy(module, ctx)


# ----------------------------------------------------------------------------------------------
# The command line: one frozen config per sub-command (tyro sub-commands).


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
    cmd = cfg.command
    if cfg.out is not None:
        out = Path(cfg.out)
        if out.is_dir():
            raise UserError(f"--out {cfg.out}: is a directory; give a CSV file name")
        if not out.resolve().parent.is_dir():
            raise UserError(f"--out {cfg.out}: directory {out.parent} does not exist")
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


def _mass_table(cfg: MassConfig) -> pd.DataFrame:
    theta, logp_fn = _policy(cfg.policy)
    ref = reference_probs(dtype=torch.float32).log()
    chosen, rejected = torch.tensor(cfg.chosen), torch.tensor(cfg.rejected)
    rows = []
    for name in cfg.objective or MASS_DEFAULT:
        hp = parse_hparams(name, cfg.hp if cfg.objective else BANDIT_HP.get(name, ()))
        pairs = objectives.get(name).data == "pairs"
        acc = mass.one_step_mass(
            name, theta, logp_fn, ref, cfg.lr, chosen, rejected if pairs else None, hp
        )
        top = acc.delta_p.topk(3).indices.tolist()
        rows.append(
            {
                "objective": name,
                "chosen_gain": acc.chosen_gain,
                "rejected_loss": acc.rejected_loss,
                "others_change": acc.others_change,
                "top_gaining_arms": top,
            }
        )
    return pd.DataFrame(rows)


def _lemma_table(cfg: LemmaConfig) -> pd.DataFrame:
    rows = []
    for kind in ("tabular", "mlp"):
        theta, logp_fn = _policy(kind)
        g = torch.Generator().manual_seed(1)
        chosen = torch.randint(0, 100, (64,), generator=g)
        rejected = (chosen + torch.randint(1, 100, (64,), generator=g)) % 100
        rows.append(
            {
                "policy": kind,
                **mass.lemma_6_2(theta, logp_fn, chosen, rejected, c1=1.0, c2=cfg.c2, lr=cfg.lr),
            }
        )
    return pd.DataFrame(rows)


def _table(cfg: CommandConfig) -> pd.DataFrame:
    if isinstance(cfg, (PointConfig, FieldConfig)):
        hp = parse_hparams(cfg.objective, cfg.hp)
        if isinstance(cfg, PointConfig):
            row = prob_space.point_table(
                cfg.objective, cfg.x_w, cfg.x_l, cfg.ref_w, cfg.ref_l, **hp
            )
            return pd.DataFrame([row])
        x_w, x_l = prob_space.triangle_grid(cfg.grid)
        return prob_space.descent_field(cfg.objective, x_w, x_l, cfg.ref_w, cfg.ref_l, **hp)
    if isinstance(cfg, MassConfig):
        return _mass_table(cfg)
    if isinstance(cfg, LemmaConfig):
        return _lemma_table(cfg)
    if isinstance(cfg, DisplacementConfig):
        return displacement.displacement_table()
    if isinstance(cfg, KLConfig):
        return kl_modes.annotation_table()
    if isinstance(cfg, StepsConfig):
        return steps_to_mass(
            cfg.objective or sorted(objectives.OBJECTIVES),
            reward=cfg.reward,
            seeds=cfg.seeds,
            hp=cfg.hp,
            tuned=load_tuned(cfg.tuned) if cfg.tuned else None,
            progress=cfg.progress,
        )
    raise TypeError(f"not a toy.gradients config: {cfg!r}")


def run(cfg: GradientsConfig) -> pd.DataFrame:
    """Compute the sub-command's table (and write it to ``cfg.out``); returns it."""
    table = _table(cfg)
    if cfg.out:
        atomic_write(Path(cfg.out), lambda tmp: table.to_csv(tmp, index=False))
    return table


def _bare_tuned(argv: list[str]) -> list[str]:
    """``--tuned`` without a value (last, or before another flag) → ``--tuned TUNED_JSON``."""
    out = []
    for i, arg in enumerate(argv):
        out.append(arg)
        if arg == "--tuned" and (i + 1 == len(argv) or argv[i + 1].startswith("--")):
            out.append(str(TUNED_JSON))
    return out


def parse(argv: list[str]) -> GradientsConfig:
    """The command line → a validated sub-command config (``runio.UserError`` naming the flag)."""
    import tyro

    with deferred_validation():  # validated below: one error line, not tyro's panel
        cfg = tyro.extras.subcommand_cli_from_dict(
            {c.command: c for c in COMMANDS},
            prog="python -m toy.gradients",
            description=__doc__,
            args=_bare_tuned(list(argv)),
        )
    validate(cfg)
    return cfg


def _main(argv: list[str]) -> None:
    table = run(parse(argv))
    with pd.option_context("display.width", 200, "display.max_columns", 40):
        print(table.to_string(index=False))


def main(argv: list[str] | None = None) -> int:
    """The command line (``python -m toy.gradients``, ``modeseek-gradients``): prints the table
    and returns the exit code under the error contract (``runio.cli_entry``)."""
    return cli_entry(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
