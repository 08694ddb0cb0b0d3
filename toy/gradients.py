"""Check the papers' gradient claims from the command line (science.md §4).

    python -m toy.gradients point --objective dpo --x-w 0.3 --x-l 0.1 --hp beta=0.1
    python -m toy.gradients field --objective asft --hp lam=0.1 --out field.csv
    python -m toy.gradients mass --objective dpo --policy mlp
    python -m toy.gradients lemma
    python -m toy.gradients displacement
    python -m toy.gradients kl
    python -m toy.gradients steps --seeds 0 1 2

Each prints a table; ``--out FILE.csv`` also writes it (the figures read these tables).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import pandas as pd
import torch

from toy import displacement, kl_modes, mass, prob_space
from toy.bandit import reference_probs
from toy.config import parse_hparams, preset
from toy.policy import MLPPolicy, TabularPolicy

# bandit hyperparameters that differ from the registry defaults (paper A's IPO margin of 10)
BANDIT_HP: dict[str, tuple[str, ...]] = {"ipo": ("tau=0.05",)}


def steps_to_mass(
    names: Sequence[str],
    thresholds: Sequence[float] = (0.5, 0.9),
    reward: str = "R1",
    seeds: tuple[int, ...] = (0, 1, 2),
    **overrides,
) -> pd.DataFrame:
    """Gradient steps until the policy puts each threshold of mass on the optimal arm
    (on-policy, 10 prompts × 10 samples, 1,500 steps): the mean over the seeds that get there,
    and how many do (NaN when none)."""
    from toy.train import run

    rows = []
    for name in names:
        cfg = preset(
            "onpolicy_bon",
            objective=name,
            hp=BANDIT_HP.get(name, ()),
            reward=reward,
            seeds=seeds,
            out_dir="",
            progress=False,
        ).replace(**overrides)
        m = run(cfg).metrics
        row = {"objective": name}
        for th in thresholds:
            hit = m[m["mass/optimal"] >= th].groupby("seed").step.min()
            reached = hit.reindex(list(seeds))
            row[f"steps to {th:.0%}"] = reached.mean()
            row[f"seeds reaching {th:.0%}"] = int(reached.notna().sum())
        rows.append(row)
    return pd.DataFrame(rows)


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
    for name in args.objective or ["sft", "dpo", "ipo", "simpo", "asft", "orpo", "slic"]:
        hp = parse_hparams(name, tuple(args.hp) if args.objective else BANDIT_HP.get(name, ()))
        acc = mass.one_step_mass(
            name, theta, logp_fn, ref, args.lr, chosen, None if name == "sft" else rejected, hp
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


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
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
    for p in sub.choices.values():
        p.add_argument("--hp", nargs="*", default=[], help="objective hyperparameters k=v")
        p.add_argument("--out", default=None, help="also write the table to this CSV file")
    args = parser.parse_args(argv)
    table = _dispatch(args)
    with pd.option_context("display.width", 200, "display.max_columns", 40):
        print(table.to_string(index=False))
    if args.out:
        table.to_csv(args.out, index=False)
    return table


def _dispatch(args) -> pd.DataFrame:
    from objectives import OBJECTIVES

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
        args.objective or sorted(OBJECTIVES), reward=args.reward, seeds=tuple(args.seeds)
    )


if __name__ == "__main__":
    main()
