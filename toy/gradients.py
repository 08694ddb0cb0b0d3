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

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
import torch

import objectives
from errors import one_line_cli
from runio import UserError, atomic_write, cli_entry, deferred_validation
from toy import displacement, kl_modes, mass, prob_space
from toy.bandit import reference_probs
from toy.config import parse_hparams, preset
from toy.gradient_config import (
    BANDIT_HP,
    COMMANDS,
    MASS_DEFAULT,
    CommandConfig,
    DisplacementConfig,
    FieldConfig,
    GradientsConfig,
    KLConfig,
    LemmaConfig,
    MassConfig,
    PointConfig,
    StepsConfig,
    validate,
)
from toy.policy import MLPPolicy, TabularPolicy

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
        atomic_write(Path(cfg.out), lambda tmp: table.to_csv(tmp, index=False))  # names a fault
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
        cfg = one_line_cli(
            lambda: tyro.extras.subcommand_cli_from_dict(
                {c.command: c for c in COMMANDS},
                prog="python -m toy.gradients",
                description=__doc__,
                args=_bare_tuned(list(argv)),
            )
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
