"""A sweep's grid: ``key=v1,v2,...`` specs of ``BanditConfig`` fields or the objective's
hyperparameters, parsed and checked against the base config, expanded into points, and the
points grouped into batches (``batches``: one computation each)."""

from __future__ import annotations

import dataclasses
import itertools
import types
import typing
from collections.abc import Mapping, Sequence

import torch

import objectives
from runio import UserError, deferred_validation
from toy.config import BanditConfig
from toy.config import validate as validate_bandit

FIELDS = {f.name: f for f in dataclasses.fields(BanditConfig)}
NOT_GRID = {"seeds", "hp", "name", "out_dir", "progress", "resume", "overwrite", "report_to"}
_BOOLS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


@dataclasses.dataclass(frozen=True)
class Point:
    """One grid point: its values (grid key → value) and the config it resolves to."""

    values: tuple[tuple[str, object], ...]
    config: BanditConfig


def _kind(key: str):
    """The type a field's values take: its annotation, without ``| None`` (None: a sequence)."""
    tp = typing.get_type_hints(BanditConfig)[key]
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1:
        tp = args[0]
    if typing.get_origin(tp) is tuple:
        return None
    return tp if tp in (bool, int, float) else str


def parse_value(key: str, raw: str, hp_names: set[str], flag: str = "--grid") -> object:
    """A grid (or ``--set``) value as the type of the field it sets (strings for
    hyperparameters). A whole number is an int; 2.5 for an integer field stays 2.5, which the
    config then refuses naming the field (never rounded). ``none`` sets an optional field to
    None; ``--set`` reads a sequence field (``reward_vector``) as comma-separated numbers."""
    if key in FIELDS:
        kind = _kind(key)
        if raw.lower() == "none" and FIELDS[key].default is None:
            return None
        if kind is None and flag == "--grid":
            raise UserError(f"--grid {key}: a sequence cannot be swept; use --set")
        try:
            if kind is None:
                return tuple(float(v) for v in raw.replace(",", " ").split())
            if kind is bool:
                return _BOOLS[raw.lower()]
            if kind is int:
                value = float(raw)
                return int(value) if value.is_integer() else value
            return float(raw) if kind is float else raw
        except (ValueError, KeyError):
            what = "true or false" if kind is bool else getattr(kind, "__name__", "numbers")
            raise UserError(f"{flag} {key}: cannot read {raw!r} as {what}") from None
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
