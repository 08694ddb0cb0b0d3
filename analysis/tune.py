"""Tune each objective's learning rate and main hyperparameter on held-out seeds.

    python -m analysis.tune            # the full tuning (see tuned.json's seconds)
    python -m analysis.tune --quick    # tiny settings, into figures/quick/data/

Setting: the figures' shared on-policy config (``analysis.common.onpolicy``: R1, 10 prompts ×
10 samples, T 15, 100 rounds = 1,500 steps) for each registry objective (24), and figure
6's offline config for DPO and IPO (one round of 100 prompts × 10 π_ref samples, 1,500 steps).
Grid: lr ∈ {3e-4, 1e-3, 3e-3, 1e-2} × three values of the objective's main hyperparameter
around its bandit default (``MAIN_HP``; REINFORCE, BoN and SFT: lr only). Seeds: the held-out
100, 101, 102 (the figures use 0–4). Every point × seed of one objective is one batched
``toy.sweep`` computation, evaluated every 15 steps (one round), so steps-to-mass are multiples
of 15.

Selection rule (``select``): among the grid points where **every** held-out seed puts 90% of the
mass on the optimal arm (arm 70) within the budget, the one with the fewest mean steps to 90%
(ties: higher mean final expected reward); if no point gets every seed there, the point with the
highest mean final expected reward.

Writes ``figures/data/tuning.csv`` (one row per setting × objective × grid point: final
expected reward mean/std, final mass on the optimal arm, mean steps to 50% / 90% over the seeds
that get there and how many do, ``selected``) and ``figures/data/tuned.json`` (setting →
objective → the chosen ``lr`` and ``hp`` strings, plus the rule, seeds and seconds taken).
Figures 4, 6 and 14 and ``python -m toy.gradients steps --tuned`` read them; ``tuned`` falls
back to the shared defaults in quick mode when the JSON is absent.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import pandas as pd

from analysis import common

LRS = (3e-4, 1e-3, 3e-3, 1e-2)
TRL_BETA_LOSSES = ("hinge", "nca_pair", "bco_pair", "robust", "exo_pair", "sppo_hard", "aot",
                   "aot_unpaired", "apo_zero", "apo_down")  # fmt: skip
# objective → (main hyperparameter, three values around its bandit default)
MAIN_HP: dict[str, tuple[str, tuple[str, ...]]] = {
    "dpo": ("beta", ("0.03", "0.1", "0.3")),
    "kto": ("beta", ("0.03", "0.1", "0.3")),
    "simpo": ("beta", ("0.7", "2", "6")),
    "ipo": ("tau", ("0.015", "0.05", "0.15")),
    "asft": ("lam", ("0.03", "0.1", "0.3")),
    "orpo": ("lam", ("0.03", "0.1", "0.3")),
    "slic": ("delta", ("0.3", "1", "3")),
    "rwr": ("beta", ("0.03", "0.1", "0.3")),
    "bon_pushdown": ("beta", ("0.2", "0.5", "1")),
    "ppo": ("clip_eps", ("0.1", "0.2", "0.4")),
    # TRL's other DPOTrainer loss types: β around TRL's 0.1; DiscoPOP's τ, which decides whether
    # its loss pushes the margin up from the reference (docs/science.md §3)
    **{n: ("beta", ("0.03", "0.1", "0.3")) for n in TRL_BETA_LOSSES},
    "discopop": ("tau", ("0.05", "0.2", "1")),
}
HELD_OUT = (100, 101, 102)
OFFLINE = ("dpo", "ipo")  # figure 6's offline objectives
OFFLINE_STEPS = 1500
SHARED_LR = {"on_policy": 1e-3, "offline": 1e-3}  # figures 4 and 6 before tuning
RULE = (
    "fewest mean steps to 90% mass on the optimal arm among grid points where every held-out "
    "seed reaches it; if none, highest mean final expected reward"
)
DATA = Path(__file__).resolve().parent.parent / "figures" / "data"
TUNED_JSON = DATA / "tuned.json"


def base_config(setting: str, name: str, quick: bool):
    """The figures' config for ``name`` on R1 at the held-out seeds, evaluated every round."""
    seeds = HELD_OUT[:1] if quick else HELD_OUT
    if setting == "on_policy":
        cfg = common.onpolicy(name, "R1", seeds, quick)
    else:
        steps = 45 if quick else OFFLINE_STEPS
        cfg = common.offline(name, "R1", seeds, quick, steps_per_round=steps, lr=1e-3)
    return cfg.replace(eval_every=15, out_dir="", progress=False)


def grid(name: str, quick: bool) -> dict[str, tuple]:
    out: dict[str, tuple] = {"lr": LRS[1:3] if quick else LRS}
    if name in MAIN_HP:
        key, values = MAIN_HP[name]
        out[key] = values[:2] if quick else values
    return out


def run_tuning(names=None, offline_names=OFFLINE, quick: bool = False, progress: bool = True):
    """Every (setting, objective, grid point) × held-out seed through ``toy.sweep`` (one batch
    per objective and hyperparameter-shape, one progress bar); returns the per-point table with
    ``selected`` marked, and the seconds taken."""
    import objectives
    from toy import sweep as toy_sweep

    names = sorted(objectives.OBJECTIVES) if names is None else list(names)
    jobs = [("on_policy", n) for n in names] + [("offline", n) for n in offline_names]
    points = []
    for setting, name in jobs:
        base = base_config(setting, name, quick)
        g = {"mode": (base.mode,), "objective": (name,), **grid(name, quick)}
        hp_name = MAIN_HP[name][0] if name in MAIN_HP else ""
        for p in toy_sweep.expand(base, g, base.seeds):
            v = dict(p.values)
            values = (("mode", v["mode"]), ("objective", name), ("lr", v["lr"]),
                      ("hp_name", hp_name), ("hp_value", v.get(hp_name, "")))  # fmt: skip
            points.append(toy_sweep.Point(values, p.config))  # the same keys for every point
    start = time.perf_counter()
    seeds = points[0].config.seeds
    metrics, _ = toy_sweep.run_points(points, seeds, progress=progress, desc="tune")
    seconds = time.perf_counter() - start
    keys = ["mode", "objective", "lr", "hp_name", "hp_value"]
    per_seed = toy_sweep.summarise(metrics, keys)
    return select(aggregate(per_seed, keys)), seconds


def aggregate(per_seed: pd.DataFrame, keys) -> pd.DataFrame:
    """Per grid point: mean/std (over seeds) of the final metrics, mean steps to 50% / 90% over
    the seeds that get there and how many do."""

    def one(g):
        row = {
            "reward_mean": g["reward/expected"].mean(),
            "reward_std": g["reward/expected"].std(ddof=0),
            "mass_optimal_mean": g["mass/optimal"].mean(),
            "n_seeds": len(g),
        }
        for th, tag in ((0.5, "50"), (0.9, "90")):
            col = g[f"steps_to_{th:g}"]
            row[f"steps_to_{tag}"] = col.mean()
            row[f"seeds_reaching_{tag}"] = int(col.notna().sum())
        return pd.Series(row)

    out = per_seed.groupby(keys, sort=False).apply(one, include_groups=False).reset_index()
    for col in ("n_seeds", "seeds_reaching_50", "seeds_reaching_90"):
        out[col] = out[col].astype(int)
    order = pd.DataFrame({"m": out["mode"] != "on_policy", "o": out.objective, "lr": out.lr,
                          "h": pd.to_numeric(out.hp_value, errors="coerce")})  # fmt: skip
    return out.loc[order.sort_values(["m", "o", "lr", "h"]).index].reset_index(drop=True)


def select(table: pd.DataFrame) -> pd.DataFrame:
    """Mark each (mode, objective)'s chosen grid point in a ``selected`` column (the rule in the
    module docstring)."""
    table = table.copy()
    table["selected"] = False
    for _, g in table.groupby(["mode", "objective"], sort=False):
        ok = g[g.seeds_reaching_90 == g.n_seeds]
        if len(ok):
            best = ok.sort_values(["steps_to_90", "reward_mean"], ascending=[True, False],
                                  kind="stable").index[0]  # fmt: skip
        else:
            best = g.reward_mean.fillna(-math.inf).idxmax()
        table.loc[best, "selected"] = True
    return table


def chosen(table: pd.DataFrame) -> dict[str, dict[str, dict]]:
    """setting → objective → {"lr": float, "hp": ["key=value"]} of the selected points."""
    from toy.gradients import BANDIT_HP

    out: dict[str, dict[str, dict]] = {}
    for _, r in table[table.selected].iterrows():
        hp = dict(h.split("=", 1) for h in BANDIT_HP.get(r.objective, ()))
        if isinstance(r.hp_name, str) and r.hp_name:
            hp[r.hp_name] = _fmt(r.hp_value)
        entry = {"lr": float(r.lr), "hp": [f"{k}={v}" for k, v in hp.items()]}
        out.setdefault(r["mode"], {})[r.objective] = entry
    return out


def _fmt(v) -> str:
    return f"{float(v):g}" if str(v) not in ("", "nan") else ""


def tuned(quick: bool = False, setting: str = "on_policy") -> dict[str, dict]:
    """The committed tuned values (objective → {"lr", "hp"}) of ``setting``. In quick mode a
    missing file falls back to the shared values the untuned figures use (lr 1e-3,
    ``BANDIT_HP``); otherwise it is an error naming the command that writes it."""
    if TUNED_JSON.is_file():
        return json.loads(TUNED_JSON.read_text())[setting]
    if not quick:
        raise FileNotFoundError(f"{TUNED_JSON} is missing: run `python -m analysis.tune` first")
    import objectives
    from toy.gradients import BANDIT_HP

    lr = SHARED_LR[setting]
    return {n: {"lr": lr, "hp": list(BANDIT_HP.get(n, ()))} for n in objectives.OBJECTIVES}


def tuned_config(cfg, values: dict):
    """``cfg`` with an objective's tuned lr and hyperparameters (from ``tuned``)."""
    return cfg.replace(lr=float(values["lr"]), hp=tuple(values["hp"]))


def label(name: str, values: dict, mode: str | None = None) -> str:
    """'DPO (lr 0.003, β 0.3)' for legends (``common.label``: the paper's name, after the
    sampling mode when given)."""
    hp = common.hp_text(*values["hp"])
    return f"{common.label(name, mode)} (lr {values['lr']:g}{', ' + hp if hp else ''})"


def write(table: pd.DataFrame, seconds: float, out: Path, quick: bool) -> None:
    from runio import atomic_write

    out.mkdir(parents=True, exist_ok=True)
    csv = table.copy()
    csv["hp_value"] = csv.hp_value.map(_fmt)
    for col in ("reward_mean", "reward_std", "mass_optimal_mean"):
        csv[col] = csv[col].round(4)
    for col in ("steps_to_50", "steps_to_90"):
        csv[col] = csv[col].round(1)
    atomic_write(out / "tuning.csv", lambda tmp: csv.to_csv(tmp, index=False))
    info = {
        **chosen(table),
        "rule": RULE,
        "held_out_seeds": list(HELD_OUT[:1] if quick else HELD_OUT),
        "lrs": list(LRS),
        "main_hp": {k: {"name": n, "values": list(v)} for k, (n, v) in MAIN_HP.items()},
        "eval_every": 15,
        "seconds": round(seconds, 1),
        "quick": quick,
    }
    atomic_write(out / "tuned.json", lambda tmp: tmp.write_text(json.dumps(info, indent=1)))


def main(argv: list[str] | None = None) -> pd.DataFrame:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--quick", action="store_true", help="tiny settings (figures/quick/data)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    table, seconds = run_tuning(quick=args.quick, progress=not args.no_progress)
    out = common.FIGURES / "quick" / "data" if args.quick else DATA
    write(table, seconds, out, args.quick)
    show = table[table.selected].drop(columns=["selected"])
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(show.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    print(f"{len(table)} grid points in {seconds:.0f} s; wrote {out}/tuning.csv, tuned.json")
    return table


if __name__ == "__main__":
    main()
