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
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
import torch

import objectives
from runio import UserError, atomic_write, cli_entry
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


def _mass_table(args) -> pd.DataFrame:
    theta, logp_fn = _policy(args.policy)
    ref = reference_probs(dtype=torch.float32).log()
    chosen, rejected = torch.tensor(args.chosen), torch.tensor(args.rejected)
    rows = []
    for name in args.objective or MASS_DEFAULT:
        hp = parse_hparams(name, tuple(args.hp) if args.objective else BANDIT_HP.get(name, ()))
        pairs = objectives.get(name).data == "pairs"
        acc = mass.one_step_mass(
            name, theta, logp_fn, ref, args.lr, chosen, rejected if pairs else None, hp
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


def _lemma_table(args) -> pd.DataFrame:
    rows = []
    for kind in ("tabular", "mlp"):
        theta, logp_fn = _policy(kind)
        g = torch.Generator().manual_seed(1)
        chosen = torch.randint(0, 100, (64,), generator=g)
        rejected = (chosen + torch.randint(1, 100, (64,), generator=g)) % 100
        rows.append(
            {
                "policy": kind,
                **mass.lemma_6_2(theta, logp_fn, chosen, rejected, c1=1.0, c2=args.c2, lr=args.lr),
            }
        )
    return pd.DataFrame(rows)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m toy.gradients",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    point = sub.add_parser("point", help="partials and push-down ratio at one (x_w, x_l)")
    point.add_argument("--x-w", type=float, required=True)
    point.add_argument("--x-l", type=float, required=True)
    field = sub.add_parser("field", help="descent field on the triangle x_w + x_l <= 1")
    field.add_argument("--grid", type=int, default=25)
    for p in (point, field):
        p.add_argument("--objective", required=True)
        p.add_argument("--ref-w", type=float, default=0.5)
        p.add_argument("--ref-l", type=float, default=0.5)
    m = sub.add_parser("mass", help="one-step mass accounting on a bandit policy")
    m.add_argument("--objective", nargs="*", default=None)
    m.add_argument("--policy", choices=("tabular", "mlp"), default="tabular")
    m.add_argument("--chosen", type=int, nargs="+", default=[70])
    m.add_argument("--rejected", type=int, nargs="+", default=[16])
    m.add_argument("--lr", type=float, default=0.1)
    lemma = sub.add_parser("lemma", help="Lemma 6.2 with c2 > 0 vs c2 = 0")
    lemma.add_argument("--c2", type=float, default=1.0)
    lemma.add_argument("--lr", type=float, default=0.1)
    sub.add_parser("displacement", help="likelihood displacement vs embedding similarity")
    sub.add_parser("kl", help="forward vs reverse KL on the 4-category example")
    steps = sub.add_parser("steps", help="steps to 50%% / 90%% mass on the optimal arm")
    steps.add_argument("--objective", nargs="*", default=None)
    steps.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    steps.add_argument("--reward", default="R1")
    steps.add_argument("--tuned", nargs="?", const=TUNED_JSON, default=None, metavar="JSON",
                       help="each objective's tuned lr and hyperparameters (analysis.tune; "
                       f"default file {TUNED_JSON}) instead of the shared lr 1e-3")  # fmt: skip
    steps.add_argument("--no-progress", action="store_true")
    for p in sub.choices.values():
        p.add_argument("--hp", nargs="*", default=[], help="objective hyperparameters k=v")
        p.add_argument("--out", default=None, help="also write the table to this CSV file")
        p.add_argument("--debug", action="store_true", help="tracebacks for input errors")
    return parser


def _check_simplex(names: str, a: float, b: float) -> None:
    """Both probabilities in (0, 1) and their sum at most 1 (the feasible triangle)."""
    if not (0 < a < 1 and 0 < b < 1 and a + b <= 1 + 1e-12):
        raise UserError(
            f"{names} must be probabilities in (0, 1) with a sum of at most 1 "
            f"(the probability simplex), got {a:g} and {b:g}"
        )


def _check_objectives(args, kinds: tuple[str, ...]) -> None:
    """Known objectives (``objectives.get`` names the valid ones) of a data kind the command
    handles, and ``--hp`` that parses and lies in range for each."""
    names = args.objective if isinstance(args.objective, list) else [args.objective]
    for name in names:
        obj = objectives.get(name)
        if obj.data not in kinds:
            raise UserError(
                f"{args.command}: objective {name!r} consumes {obj.data!r} data; "
                f"this command takes objectives on {' or '.join(repr(k) for k in kinds)}"
            )
        parse_hparams(name, tuple(args.hp))


def _check_lr(lr: float) -> None:
    if not (math.isfinite(lr) and lr > 0):
        raise UserError(f"--lr must be positive and finite, got {lr:g}")


def check_args(args) -> None:
    """Raise ``runio.UserError`` (one line) for any bad input, before anything is computed."""
    cmd = args.command
    if args.out is not None:
        out = Path(args.out)
        if out.is_dir():
            raise UserError(f"--out {args.out}: is a directory; give a CSV file name")
        if not out.resolve().parent.is_dir():
            raise UserError(f"--out {args.out}: directory {out.parent} does not exist")
    if args.hp and cmd in ("lemma", "displacement", "kl"):
        raise UserError(f"{cmd}: --hp is not used by this command")
    if args.hp and cmd in ("mass", "steps") and not args.objective:
        raise UserError(f"{cmd}: --hp needs --objective (which objective's hyperparameters?)")
    if cmd in ("point", "field"):
        if cmd == "point":
            _check_simplex("--x-w and --x-l", args.x_w, args.x_l)
        elif args.grid < 2:
            raise UserError(f"field: --grid must be at least 2, got {args.grid}")
        _check_simplex("--ref-w and --ref-l", args.ref_w, args.ref_l)
        _check_objectives(args, ("pairs", "chosen"))
    elif cmd == "mass":
        for flag, arms in (("--chosen", args.chosen), ("--rejected", args.rejected)):
            bad = [a for a in arms if not 0 <= a < N_ARMS]
            if bad:
                raise UserError(f"mass: {flag} arms must be in [0, {N_ARMS}), got {bad}")
        if len(args.chosen) != len(args.rejected):
            raise UserError(
                f"mass: --chosen and --rejected must pair up, got {len(args.chosen)} and "
                f"{len(args.rejected)} arms"
            )
        _check_lr(args.lr)
        if args.objective:
            _check_objectives(args, ("pairs", "chosen"))
    elif cmd == "lemma":
        _check_lr(args.lr)
        if not (math.isfinite(args.c2) and args.c2 >= 0):
            raise UserError(f"lemma: --c2 must be non-negative and finite, got {args.c2:g}")
    elif cmd == "steps":
        bad = [s for s in args.seeds if s < 0]
        if bad:
            raise UserError(f"steps: --seeds must be non-negative integers, got {bad}")
        if args.objective:
            _check_objectives(args, ("pairs", "chosen", "groups"))


def main(argv: list[str] | None = None) -> pd.DataFrame:
    """Parse ``argv``, check it, compute and print the table (and write ``--out``); returns the
    table. Bad input raises ``runio.UserError``; ``cli`` turns that into one line and exit 2."""
    args = _parser().parse_args(argv)
    check_args(args)
    table = _dispatch(args)
    with pd.option_context("display.width", 200, "display.max_columns", 40):
        print(table.to_string(index=False))
    if args.out:
        atomic_write(Path(args.out), lambda tmp: table.to_csv(tmp, index=False))
    return table


def cli(argv: list[str] | None = None) -> int:
    """The command line's exit code under the error contract (``runio.cli_entry``)."""
    return cli_entry(main, argv)


def _dispatch(args) -> pd.DataFrame:
    if args.command in ("point", "field"):
        hp = parse_hparams(args.objective, tuple(args.hp))
        if args.command == "point":
            row = prob_space.point_table(
                args.objective, args.x_w, args.x_l, args.ref_w, args.ref_l, **hp
            )
            return pd.DataFrame([row])
        x_w, x_l = prob_space.triangle_grid(args.grid)
        return prob_space.descent_field(args.objective, x_w, x_l, args.ref_w, args.ref_l, **hp)
    if args.command == "mass":
        return _mass_table(args)
    if args.command == "lemma":
        return _lemma_table(args)
    if args.command == "displacement":
        return displacement.displacement_table()
    if args.command == "kl":
        return kl_modes.annotation_table()
    return steps_to_mass(
        args.objective or sorted(objectives.OBJECTIVES),
        reward=args.reward,
        seeds=tuple(args.seeds),
        hp=tuple(args.hp),
        tuned=load_tuned(args.tuned) if args.tuned else None,
        progress=not args.no_progress,
    )


if __name__ == "__main__":
    sys.exit(cli())
