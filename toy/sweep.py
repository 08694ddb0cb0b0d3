"""Hyperparameter sweeps of the bandit, batched: every grid point × seed is one row of one
computation whenever the shapes agree.

    python -m toy.sweep --preset onpolicy_dpo --grid lr=1e-3,3e-3,1e-2 beta=0.03,0.1,0.3 \\
        --seeds 0 1 2 --out runs/sweeps/dpo_lr_beta
    python -m toy.sweep --preset onpolicy_bon --grid objective=bon,dpo,ipo --set reward=R2

Grid keys are ``BanditConfig`` fields (``lr``, ``prompts_per_round``, ``objective``, ...) or the
objective's hyperparameters (``beta``, ``tau``, ``lam``, ...). Points that differ only in ``lr``
and in hyperparameters the objective accepts per row (tested automatically: the objective must
give, with an (S, 1) tensor, exactly what it gives row by row with floats) share one batch: their
learning rates and hyperparameters become per-row tensors. Points that differ in anything else
(P, N, T, the objective, the reward, ...) run as separate batches, one after another. One
progress bar covers the whole sweep.

Outputs in ``--out`` (written atomically, so a killed sweep leaves no half-written table):

- ``metrics.csv``: the tidy table, one row per (grid point, seed, evaluated step), with the grid
  columns, ``seed``, ``step``, ``round`` and every metric of ``toy.metrics.METRIC_KEYS``;
- ``summary.csv``: one row per (grid point, seed): final metrics and the first step at which
  ``mass/optimal`` reaches 0.5 and 0.9 (NaN if never);
- ``sweep.json``: the base config, the grid, the batches, versions and the git commit.

From Python: ``sweep(base, grid, seeds)`` returns (metrics, summary, batches); ``run(cfg)`` runs
a ``SweepConfig`` (e.g. ``parse(argv)``), writes ``out`` and returns a ``SweepResult``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

import objectives
from runio import (
    UserError,
    atomic_write,
    cli_entry,
    deferred_validation,
    git_sha,
    validation_deferred,
    versions,
)
from toy.config import PRESETS, BanditConfig, preset
from toy.config import validate as validate_bandit
from toy.grid import FIELDS, NOT_GRID, Point, expand, parse_grid, parse_value

if TYPE_CHECKING:
    import pandas as pd

THRESHOLDS = (0.5, 0.9)


_ROW_SAFE: dict[tuple[str, str], bool] = {}


def row_safe(objective: str, name: str) -> bool:
    """Whether ``objective`` computes, with hyperparameter ``name`` an (S, 1[, 1]) tensor, the
    same losses as row by row with floats (then rows may differ in it)."""
    key = (objective, name)
    if key not in _ROW_SAFE:
        _ROW_SAFE[key] = _check_row_safe(objectives.get(objective), name)
    return _ROW_SAFE[key]


def _check_row_safe(obj, name: str) -> bool:
    default = obj.defaults.get(name)
    if isinstance(default, bool) or not isinstance(default, (int, float)):
        return False
    g = torch.Generator().manual_seed(0)
    shape = (2, 3, 4) if obj.data == "groups" else (2, 6)
    logp = -torch.rand(shape, generator=g) * 3 - 0.01
    inputs = {
        "logps": logp, "rewards": torch.rand(shape, generator=g), "old_logps": logp * 1.1,
        "ref_logps": logp * 0.9, "chosen_logps": logp, "rejected_logps": logp * 1.3 - 0.1,
        "ref_chosen_logps": logp * 0.8, "ref_rejected_logps": logp * 1.2,
    }  # fmt: skip
    values = [max(float(default), 0.05) * 1.0, max(float(default), 0.05) * 0.5]
    try:
        args = obj.select_inputs(inputs)
        tensor = torch.tensor(values).view(2, *[1] * (len(shape) - 1))
        batched = obj.fn(**args, **{name: tensor})
        rows = [obj.fn(**{k: v[i : i + 1] for k, v in args.items()}, **{name: values[i]})
                for i in range(2)]  # fmt: skip
        return torch.allclose(batched, torch.cat(rows), rtol=1e-6, atol=1e-7)
    except Exception:
        return False


def _batch_key(point: Point) -> tuple:
    """Points with equal keys run in one batch: the config with lr and row-safe hp blanked."""
    cfg = point.config
    hp = cfg.hparams()
    shared = tuple(sorted((k, v) for k, v in hp.items() if not row_safe(cfg.objective, k)))
    return (dataclasses.replace(cfg, lr=1.0, hp=()), shared)


def batches(points: Sequence[Point]) -> list[list[Point]]:
    """Points grouped by ``_batch_key``, in grid order of first appearance."""
    groups: dict[tuple, list[Point]] = {}
    for p in points:
        groups.setdefault(_batch_key(p), []).append(p)
    return list(groups.values())


def _run_batch(group: list[Point], bar):
    from toy.train import Rows, train

    cfg0 = group[0].config
    seeds = cfg0.seeds
    defaults = cfg0.hparams()
    varying = sorted(
        k
        for k in {k for p in group for k, v in p.config.hparams().items() if v != defaults[k]}
        if row_safe(cfg0.objective, k)
    )
    hp_rows = []
    for k in varying:
        hp_rows.append((k, tuple(float(p.config.hparams()[k]) for p in group for _ in seeds)))
    rows = Rows(
        seeds=tuple(s for _ in group for s in seeds),
        lr=tuple(p.config.lr for p in group for _ in seeds),
        hp=tuple(hp_rows),
    )
    rec, prob = train(cfg0, rows, bar=bar)  # per-row values override cfg0's
    frame = rec.frame(rows.seeds, prob.reward_K, prob.ref_logp_K)
    n_steps = cfg0.total_steps + 1
    frame.insert(0, "_row", np.repeat(np.arange(len(rows.seeds)), n_steps))
    return frame


def summarise(metrics, keys: Sequence[str]):
    """Per (grid point, seed): the last evaluated step's metrics and steps to each threshold."""
    import pandas as pd

    by = [*keys, "seed"]
    ev = metrics.dropna(subset=["reward/expected"])
    last = ev.sort_values("step").groupby(by, sort=False).tail(1).set_index(by)
    out = last[["step", "reward/expected", "mass/optimal", "policy/kl_ref", "policy/entropy"]]
    out = out.rename(columns={"step": "final_step"})
    for th in THRESHOLDS:
        hit = ev[ev["mass/optimal"] >= th].groupby(by, sort=False).step.min()
        out[f"steps_to_{th:g}"] = hit.reindex(out.index)
    return pd.DataFrame(out).reset_index()


def sweep(base: BanditConfig, grid: Mapping[str, Sequence[object]], seeds: Sequence[int],
          progress: bool = True):  # fmt: skip
    """Run every grid point × seed; returns (metrics, summary) DataFrames (see module doc)."""
    metrics, groups = run_points(expand(base, grid, seeds), seeds, progress)
    keys = list(grid)
    for k in keys:  # numbers as numbers (hyperparameters arrive as strings)
        try:
            metrics[k] = metrics[k].astype(float)
        except (TypeError, ValueError):
            pass
    return metrics, summarise(metrics, keys), groups


def run_points(points: Sequence[Point], seeds: Sequence[int], progress: bool = True,
               desc: str = "sweep"):  # fmt: skip
    """Run points that ``expand`` built, possibly from different base configs (e.g. one per
    objective, each with its own lr and hyperparameters), batched as in ``sweep`` under one
    progress bar; every point must have the same grid keys. Returns (metrics, batches)."""
    import pandas as pd
    from tqdm.auto import tqdm

    groups = batches(points)
    total = sum(p.config.total_steps * len(seeds) for p in points)
    frames = []
    with tqdm(total=total, disable=not progress, desc=desc, unit="row-step", delay=1) as bar:
        for group in groups:
            frame = _run_batch(group, bar)
            cols = {k: [] for k, _ in group[0].values}
            for p in group:
                for k, v in p.values:
                    cols[k].append(v)
            per_row = {
                k: np.repeat(np.asarray(v, dtype=object), len(seeds)) for k, v in cols.items()
            }
            for k, v in per_row.items():
                frame.insert(0, k, v[frame["_row"].to_numpy()])
            frames.append(frame.drop(columns="_row"))
    metrics = pd.concat(frames, ignore_index=True)
    metrics = metrics[metrics["reward/expected"].notna() | metrics["loss/train"].notna()]
    return metrics, groups


@dataclass(frozen=True, kw_only=True)
class SweepConfig:
    """A sweep from the command line: a base config, a grid over it, and seeds."""

    preset: str | None = None
    """Base config: one of toy.config.PRESETS (listed below); none: BanditConfig's defaults."""
    set: tuple[str, ...] = ()
    """Base-config fields to override, FIELD=VALUE (e.g. reward=R2 rounds=50)."""
    hp: tuple[str, ...] = ()
    """Fixed objective hyperparameters, key=value (the base config's hp)."""
    eval_every: int | None = None
    """The base config's eval_every (see BanditConfig.eval_every); none: the preset's."""
    grid: tuple[str, ...]
    """KEY=V1,V2,... per swept key: BanditConfig fields or the objective's hyperparameters."""
    seeds: tuple[int, ...] = (0,)
    """Seeds every grid point runs with (non-negative, no repeats)."""
    out: str | None = None
    """Directory to write metrics.csv, summary.csv and sweep.json to; none: print only."""
    progress: bool = True
    """Show one progress bar over the whole sweep."""

    def __post_init__(self) -> None:
        if not validation_deferred():
            validate(self)


@dataclass(frozen=True)
class SweepResult:
    """What ``run`` returns: the metrics and summary tables (as in the CSV files), the grid
    points of each batch in the order they ran, the parsed grid, and the sweep's wall time."""

    metrics: pd.DataFrame
    summary: pd.DataFrame
    batches: list[list[Point]]
    grid: dict[str, list[object]]
    seconds: float


def base_config(cfg: SweepConfig) -> BanditConfig:
    """The validated base config: the preset with --set, --hp and --eval-every applied."""
    base = preset(cfg.preset) if cfg.preset else BanditConfig()
    changes: dict[str, object] = {}
    for spec in cfg.set:
        key, sep, raw = spec.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in FIELDS or key in NOT_GRID:
            raise UserError(f"--set {spec!r}: expected FIELD=VALUE with a BanditConfig field")
        changes[key] = parse_value(key, raw.strip(), set())
    if cfg.hp:
        changes["hp"] = cfg.hp
    if cfg.eval_every is not None:
        changes["eval_every"] = cfg.eval_every
    with deferred_validation():
        base = base.replace(**changes)
    validate_bandit(base)
    return base


def validate(cfg: SweepConfig) -> None:
    """Raise ``runio.UserError`` (one line, naming the flag) for a bad base config, grid or
    seeds, or a grid point whose config is invalid, before anything runs."""
    base = base_config(cfg)
    grid = parse_grid(cfg.grid, base)
    if not cfg.seeds or any(s < 0 for s in cfg.seeds) or len(set(cfg.seeds)) != len(cfg.seeds):
        raise UserError("--seeds: one or more non-negative integers without repeats")
    expand(base, grid, cfg.seeds)


def run(cfg: SweepConfig) -> SweepResult:
    """Run the sweep and, with ``cfg.out``, write its three files (see module doc)."""
    base = base_config(cfg)
    grid = parse_grid(cfg.grid, base)
    start = time.perf_counter()
    metrics, summary, groups = sweep(base, grid, cfg.seeds, progress=cfg.progress)
    seconds = time.perf_counter() - start
    if cfg.out:
        out = Path(cfg.out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "metrics.csv", lambda tmp: metrics.to_csv(tmp, index=False))
        atomic_write(out / "summary.csv", lambda tmp: summary.to_csv(tmp, index=False))
        info = {
            "base": dataclasses.asdict(base),
            "grid": {k: list(map(str, v)) for k, v in grid.items()},
            "seeds": list(cfg.seeds),
            "batches": [[dict(p.values) for p in g] for g in groups],
            "seconds": round(seconds, 2),
            "versions": versions(),
            "git": git_sha(),
        }
        text = json.dumps(info, indent=1, default=str)
        atomic_write(out / "sweep.json", lambda tmp: tmp.write_text(text))
    return SweepResult(metrics, summary, groups, grid, seconds)


def parse(argv: list[str]) -> SweepConfig:
    """The command line → a validated ``SweepConfig`` (``runio.UserError`` naming the flag)."""
    import tyro

    description = f"{__doc__}\nPresets (--preset NAME): {', '.join(sorted(PRESETS))}."
    with deferred_validation():  # validated below: one error line, not tyro's panel
        cfg = tyro.cli(SweepConfig, args=list(argv), prog="python -m toy.sweep",
                       description=description)  # fmt: skip
    validate(cfg)
    return cfg


def _main(argv: list[str]) -> None:
    cfg = parse(argv)
    result = run(cfg)
    table = result.summary.groupby(list(result.grid), sort=False)
    table = table[["reward/expected", "steps_to_0.9"]].agg(["mean", "std"])
    print(table.to_string(float_format=lambda x: f"{x:.3f}"))
    print(f"{len(result.summary)} runs in {len(result.batches)} batch(es), {result.seconds:.1f}s")
    if cfg.out:
        print(f"wrote {cfg.out}/metrics.csv, summary.csv, sweep.json")


def main(argv: list[str] | None = None) -> int:
    """The command line (``python -m toy.sweep``): prints the summary and returns the exit code
    under the error contract (``runio.cli_entry``)."""
    return cli_entry(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
