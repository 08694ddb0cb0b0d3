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
- ``sweep.json``: the plan (base config, grid, seeds; written first), the batches, versions and
  the git commit; ``COMPLETE`` last.

The directory is the sweep's alone (``toy.outputs.claim_sweep_dir``): found writable and claimed
atomically before anything is computed (a second sweep into it gets one ``error:`` line), an
existing sweep there refused unless ``--resume`` or ``--overwrite``, files that are not a
sweep's never deleted. Each finished batch is kept in ``points/`` (atomically; removed at the
end), so ``--resume`` of a killed or failed sweep (same plan) computes only the batches still
missing and writes the tables an uninterrupted sweep writes; of a complete one, loads them. A
sweep that stops with an error writes ``FAILED`` (one line).

From Python: ``sweep(base, grid, seeds)`` returns (metrics, summary, batches); ``run(cfg)`` runs
a ``SweepConfig`` (e.g. ``parse(argv)``), writes ``out`` and returns a ``SweepResult``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from errors import one_line_cli
from runio import (
    UserError,
    atomic_write,
    cli_entry,
    deferred_validation,
    git_sha,
    mark_complete,
    release_run_dir,
    validation_deferred,
    versions,
)
from runio.validate import check_types
from toy import outputs
from toy.config import PRESETS, BanditConfig, preset
from toy.config import validate as validate_bandit
from toy.grid import (
    FIELDS,
    NOT_GRID,
    Point,
    batches,
    expand,
    parse_grid,
    parse_value,
    row_safe,
)

if TYPE_CHECKING:
    import pandas as pd

THRESHOLDS = (0.5, 0.9)


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
          progress: bool = True, store: Path | None = None):  # fmt: skip
    """Run every grid point × seed; returns (metrics, summary) DataFrames (see module doc);
    ``store`` as in ``run_points``."""
    metrics, groups = run_points(expand(base, grid, seeds), seeds, progress, store=store)
    keys = list(grid)
    for k in keys:  # numbers as numbers (hyperparameters arrive as strings)
        try:
            metrics[k] = metrics[k].astype(float)
        except (TypeError, ValueError):
            pass
    return metrics, summarise(metrics, keys), groups


def _batch_path(store: Path, index: int) -> Path:
    return Path(store) / f"batch_{index:03d}.npz"


def _store_batch(store: Path, index: int, key: str, frame: pd.DataFrame) -> None:
    """Keep batch ``index``'s frame (numeric columns, dtypes exact) under ``key``."""
    Path(store).mkdir(exist_ok=True)
    arrays = {f"c{j}": frame[c].to_numpy() for j, c in enumerate(frame.columns)}
    arrays.update(columns=np.array(list(frame.columns)), key=np.array(key))

    def save(p: Path) -> None:
        with open(p, "wb") as f:
            np.savez(f, **arrays)

    atomic_write(_batch_path(store, index), save)


def _stored_batch(store: Path, index: int, key: str) -> pd.DataFrame | None:
    """The frame ``_store_batch`` kept for batch ``index`` under ``key`` (None: none, another
    key, or an unreadable file: the batch is to be computed again)."""
    path = _batch_path(store, index)
    if not path.is_file():
        return None
    import zipfile

    import pandas as pd

    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) != key:
                return None
            return pd.DataFrame({str(c): z[f"c{j}"] for j, c in enumerate(z["columns"])})
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None


def run_points(points: Sequence[Point], seeds: Sequence[int], progress: bool = True,
               desc: str = "sweep", store: Path | None = None):  # fmt: skip
    """Run points that ``expand`` built, possibly from different base configs (e.g. one per
    objective, each with its own lr and hyperparameters), batched as in ``sweep`` under one
    progress bar; every point must have the same grid keys. Returns (metrics, batches).
    ``store``: a directory where each finished batch is kept, and taken from when there."""
    import pandas as pd
    from tqdm.auto import tqdm

    groups = batches(points)
    total = sum(p.config.total_steps * len(seeds) for p in points)
    frames = []
    with tqdm(total=total, disable=not progress, desc=desc, unit="row-step", delay=1) as bar:
        for i, group in enumerate(groups):
            key = json.dumps([[[k, str(v)] for k, v in p.values] for p in group])
            frame = _stored_batch(store, i, key) if store else None
            if frame is None:
                frame = _run_batch(group, bar)
                if store:
                    _store_batch(store, i, key, frame)
            else:
                bar.update(sum(p.config.total_steps for p in group) * len(seeds))
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
    """Directory to write metrics.csv, summary.csv and sweep.json to; none: print only. An
    existing sweep there is refused unless --resume or --overwrite."""
    resume: bool = False
    """Finish the sweep in --out (same preset, --set, --hp, grid and seeds): only the batches
    it has not finished run; a complete sweep is loaded."""
    overwrite: bool = False
    """Delete the sweep in --out and start afresh."""
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
    loaded: bool = False
    """True when ``--resume`` found the sweep complete and loaded its tables."""


def base_config(cfg: SweepConfig) -> BanditConfig:
    """The validated base config: the preset with --set, --hp and --eval-every applied."""
    base = preset(cfg.preset) if cfg.preset else BanditConfig()
    changes: dict[str, object] = {}
    for spec in cfg.set:
        key, sep, raw = spec.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in FIELDS or key in NOT_GRID:
            raise UserError(f"--set {spec!r}: expected FIELD=VALUE with a BanditConfig field")
        changes[key] = parse_value(key, raw.strip(), set(), flag="--set")
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
    seeds, or a grid point whose config is invalid, before anything runs. Every field's kind
    is checked first (``runio.validate.check_types``: a string is not a grid, 2.5 no seed)."""
    check_types(cfg)
    if cfg.resume and cfg.overwrite:
        raise UserError("SweepConfig.resume: --resume and --overwrite exclude each other")
    if cfg.out and Path(cfg.out).exists() and not Path(cfg.out).is_dir():
        raise UserError(f"SweepConfig.out: {cfg.out} exists and is not a directory")
    base = base_config(cfg)
    grid = parse_grid(cfg.grid, base)
    if not cfg.seeds or any(s < 0 for s in cfg.seeds) or len(set(cfg.seeds)) != len(cfg.seeds):
        raise UserError("--seeds: one or more non-negative integers without repeats")
    expand(base, grid, cfg.seeds)


def run(cfg: SweepConfig) -> SweepResult:
    """Run the sweep and, with ``cfg.out``, write its files (see module doc)."""
    validate(cfg)  # also a config built with validation deferred
    base = base_config(cfg)
    grid = parse_grid(cfg.grid, base)
    if not cfg.out:
        start = time.perf_counter()
        metrics, summary, groups = sweep(base, grid, cfg.seeds, progress=cfg.progress)
        return SweepResult(metrics, summary, groups, grid, time.perf_counter() - start)
    out = Path(cfg.out)
    plan = {"base": outputs.result_config(base), "grid": {k: list(map(str, v))
            for k, v in grid.items()}, "seeds": list(cfg.seeds)}  # fmt: skip
    plan = json.loads(json.dumps(plan, default=str))
    done = outputs.claim_sweep_dir(out, plan, resume=cfg.resume, overwrite=cfg.overwrite)
    try:
        if done:
            return _load(out, base, grid, cfg.seeds)
        start = time.perf_counter()
        metrics, summary, groups = sweep(base, grid, cfg.seeds, cfg.progress, out / "points")
        seconds = time.perf_counter() - start
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
            "plan": plan,
        }
        text = json.dumps(info, indent=1, default=str)
        atomic_write(out / "sweep.json", lambda tmp: tmp.write_text(text))
        shutil.rmtree(out / "points", ignore_errors=True)
        mark_complete(out, {"rows": len(metrics), "runs": len(summary)})
        return SweepResult(metrics, summary, groups, grid, seconds)
    except Exception as e:  # FAILED says why; the finished batches stay for --resume
        if not done:
            outputs.mark_failed(out, e)
        raise
    finally:
        release_run_dir(out)


def _load(out: Path, base: BanditConfig, grid, seeds) -> SweepResult:
    """A complete sweep's tables, as written (``--resume`` of a complete sweep)."""
    import pandas as pd

    metrics = pd.read_csv(out / "metrics.csv")
    summary = pd.read_csv(out / "summary.csv")
    seconds = json.loads((out / "sweep.json").read_text()).get("seconds", 0.0)
    groups = batches(expand(base, grid, seeds))
    return SweepResult(metrics, summary, groups, grid, seconds, loaded=True)


def parse(argv: list[str]) -> SweepConfig:
    """The command line → a validated ``SweepConfig`` (``runio.UserError`` naming the flag)."""
    import tyro

    description = f"{__doc__}\nPresets (--preset NAME): {', '.join(sorted(PRESETS))}."
    with deferred_validation():  # validated below: one error line, not tyro's panel
        cfg = one_line_cli(lambda: tyro.cli(SweepConfig, args=list(argv),
                           prog="python -m toy.sweep", description=description))  # fmt: skip
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
        done = "loaded (complete sweep)" if result.loaded else "wrote"
        print(f"{done} {cfg.out}/metrics.csv, summary.csv, sweep.json")


def main(argv: list[str] | None = None) -> int:
    """The command line (``python -m toy.sweep``): prints the summary and returns the exit code
    under the error contract (``runio.cli_entry``)."""
    return cli_entry(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
