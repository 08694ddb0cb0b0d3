"""A sweep's grid: ``key=v1,v2,...`` specs of ``BanditConfig`` fields or the objective's
hyperparameters, parsed and checked against the base config, and expanded into points."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence

import objectives
from runio import UserError, deferred_validation
from toy.config import BanditConfig
from toy.config import validate as validate_bandit

FIELDS = {f.name: f for f in dataclasses.fields(BanditConfig)}
NOT_GRID = {"seeds", "hp", "name", "out_dir", "progress", "resume", "overwrite"}


@dataclasses.dataclass(frozen=True)
class Point:
    """One grid point: its values (grid key → value) and the config it resolves to."""

    values: tuple[tuple[str, object], ...]
    config: BanditConfig


def parse_value(key: str, raw: str, hp_names: set[str]) -> object:
    """A grid value as the type of the field it sets (floats for hyperparameters)."""
    if key in FIELDS:
        default = getattr(BanditConfig(), key)
        kind = type(default) if default is not None else int
        try:
            if kind is bool:
                return raw.lower() in ("1", "true", "yes")
            if kind in (int, float):
                return kind(float(raw)) if kind is int else float(raw)
            return raw
        except ValueError:
            raise UserError(f"--grid {key}: cannot read {raw!r} as {kind.__name__}") from None
    if key in hp_names:
        return raw
    raise UserError(
        f"--grid {key}: not a BanditConfig field or a hyperparameter of the objective(s); "
        f"fields: {', '.join(sorted(set(FIELDS) - NOT_GRID))}; hyperparameters: "
        f"{', '.join(sorted(hp_names)) or 'none'}"
    )


def parse_grid(specs: Sequence[str], base: BanditConfig) -> dict[str, list[object]]:
    """``["lr=1e-3,3e-3", "beta=0.1,0.3"]`` → {"lr": [0.001, 0.003], "beta": ["0.1", "0.3"]}."""
    grid: dict[str, list[str]] = {}
    if not specs:
        raise UserError("--grid: expected key=v1,v2,... (one or more)")
    for spec in specs:
        key, sep, values = spec.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not values.strip():
            raise UserError(f"--grid {spec!r}: expected key=v1,v2,...")
        if key in NOT_GRID:
            raise UserError(f"--grid {key}: not sweepable (use --seeds for seeds)")
        if key in grid:
            raise UserError(f"--grid {key}: given twice")
        grid[key] = [v.strip() for v in values.split(",") if v.strip()]
    names = grid.get("objective", [base.objective])
    hp_names = set()
    for name in names:
        if name not in objectives.OBJECTIVES:
            raise UserError(f"--grid objective: unknown {name!r}; choose from "
                            f"{sorted(objectives.OBJECTIVES)}")  # fmt: skip
        hp_names |= set(objectives.get(name).defaults)
    return {k: [parse_value(k, v, hp_names) for v in vs] for k, vs in grid.items()}


def expand(base: BanditConfig, grid: Mapping[str, Sequence[object]], seeds: Sequence[int]):
    """Every grid point's validated config (each raises ``UserError`` naming the point)."""
    points = []
    keys = list(grid)
    for combo in itertools.product(*(grid[k] for k in keys)):
        values = tuple(zip(keys, combo))
        fields = {k: v for k, v in values if k in FIELDS}
        hp = dict(h.split("=", 1) for h in base.hp)
        hp.update({k: str(v) for k, v in values if k not in FIELDS})
        try:
            hp_strings = tuple(f"{k}={v}" for k, v in hp.items())
            with deferred_validation():
                cfg = base.replace(**fields, hp=hp_strings, seeds=tuple(seeds), out_dir="",
                                   progress=False, name=None)  # fmt: skip
            validate_bandit(cfg)
        except UserError as e:
            raise UserError(f"grid point {dict(values)}: {e}") from None
        points.append(Point(values, cfg))
    return points
