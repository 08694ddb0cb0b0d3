"""A bandit run's directory: ``config.json`` first, then ``metrics.jsonl`` and ``dist.npz`` (and,
with ``report_to``, ``tracking/``: ``report``), then ``COMPLETE`` last (``runio.mark_complete``).
Every file is written atomically.

- A directory without ``COMPLETE`` is a run that was killed (or failed on a non-finite loss):
  nothing in it is read as a result (``load_run``, ``load_metrics`` and ``analysis.cache``
  check ``runio.is_complete``).
- An existing run is never silently replaced: ``start_run`` refuses it unless the config says
  ``resume`` or ``overwrite`` (``runio.claim_run_dir``).
- Resume: a complete run is loaded, not retrained. An incomplete one (killed mid-way) must have
  the same config and is rerun from scratch; bandit runs take seconds and are fully
  deterministic, so the rerun writes exactly what the uninterrupted run would have.

The generic helpers (``atomic_write``, ``versions``, ``git_sha``) live in the shared ``runio``
package and are re-exported here for older importers.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pandas is imported where a table is read, not on the training path
    import pandas as pd

from runio import (
    UserError,
    atomic_write,
    claim_run_dir,
    git_sha,
    is_complete,
    mark_complete,
    versions,
)

__all__ = [
    "NOT_RESULTS",
    "atomic_write",
    "finish_run",
    "git_sha",
    "load_metrics",
    "load_run",
    "report",
    "resolved_config",
    "result_config",
    "start_run",
    "versions",
]

NOT_RESULTS = ("name", "out_dir", "progress", "resume", "overwrite", "report_to")
"""Config fields that do not change a run's results (left out of its hash and resume check)."""

OUTPUTS = ("metrics.jsonl", "dist.npz")


def _resolved(cfg) -> dict:
    import objectives

    d = dataclasses.asdict(cfg)
    d["resolved_hparams"] = {**objectives.get(cfg.objective).defaults, **cfg.hparams()}
    return d


def resolved_config(cfg) -> dict:
    """The config as written beside results: every field, plus the hyperparameters the
    objective actually uses (registry defaults with overrides applied) and the run name."""
    d = _resolved(cfg)
    d["run_name"] = cfg.run_name()
    return d


def result_config(cfg) -> dict:
    """``resolved_config`` without the fields that do not change results (``NOT_RESULTS``) and
    without the run name: what automatic names hash and what a resume must match."""
    return {k: v for k, v in _resolved(cfg).items() if k not in NOT_RESULTS}


def _short(value: object, n: int = 40) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= n else text[: n - 3] + "..."


def _check_resumable(run_dir: Path, cfg) -> None:
    """Refuse to resume ``run_dir`` with a config whose results would differ."""
    path = run_dir / "config.json"
    if not path.exists():
        if is_complete(run_dir):
            raise UserError(
                f"cannot resume {run_dir}: it is marked complete but has no config.json; "
                "pass --overwrite to replace it"
            )
        return  # killed before its config was written: nothing to match, nothing to keep
    try:
        stored = json.loads(path.read_text())["config"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(
            f"cannot resume {run_dir}: config.json is unreadable ({e}); pass --overwrite"
        ) from None
    current = json.loads(json.dumps(result_config(cfg), default=str))
    missing = object()
    differ = [
        k
        for k in sorted(set(current) | (set(stored) - set(NOT_RESULTS) - {"run_name"}))
        if stored.get(k, missing) != current.get(k, missing)
    ]
    if differ:
        detail = ", ".join(
            f"{k} ({_short(stored.get(k))} in the run, {_short(current.get(k))} now)"
            for k in differ
        )
        raise UserError(
            f"cannot resume {run_dir}: its config differs in {detail}; "
            "pass --overwrite to replace it or --name to choose another"
        )


def start_run(cfg) -> tuple[Path, bool]:
    """Claim ``out_dir/<run name>``; returns ``(run_dir, done)``, ``done`` when ``cfg.resume``
    found a complete run there (load it with ``load_run``; nothing is to be trained).

    Every refusal (an existing run without resume/overwrite, a resume with another config) is a
    ``UserError`` raised before anything on disk is touched.
    """
    out = Path(cfg.out_dir)
    run_dir = out / cfg.run_name()
    for path, what in ((out, "out_dir"), (run_dir, "name")):
        if path.exists() and not path.is_dir():
            raise UserError(f"BanditConfig.{what}: {path} exists and is not a directory")
    if cfg.resume and run_dir.is_dir():
        _check_resumable(run_dir, cfg)
    resuming = claim_run_dir(run_dir, resume=cfg.resume, overwrite=cfg.overwrite)
    if resuming and is_complete(run_dir):
        return run_dir, True
    for stale in OUTPUTS:  # a killed run's partial outputs (each written atomically)
        (run_dir / stale).unlink(missing_ok=True)
    if not (resuming and (run_dir / "config.json").exists()):
        meta = {
            "config": resolved_config(cfg),
            "seeds": list(cfg.seeds),
            "versions": versions(),
            "git_sha": git_sha(),
        }
        text = json.dumps(meta, indent=2, default=str)
        atomic_write(run_dir / "config.json", lambda p: p.write_text(text))
    return run_dir, False


def finish_run(run_dir: Path, metrics: pd.DataFrame, dist_steps, dist) -> None:
    """Write the outputs, then the ``COMPLETE`` marker (last: a kill before it leaves a run
    that no reader takes as finished)."""
    atomic_write(
        run_dir / "metrics.jsonl",
        lambda p: metrics.to_json(p, orient="records", lines=True, double_precision=15),
    )

    def save_npz(p: Path) -> None:
        with open(p, "wb") as f:
            np.savez_compressed(f, steps=dist_steps, dist=dist)

    atomic_write(run_dir / "dist.npz", save_npz)
    mark_complete(run_dir, {"rows": len(metrics), "dist_steps": len(dist_steps)})


def report(cfg, run_dir: Path, metrics: pd.DataFrame) -> None:
    """Log ``metrics`` (the metrics.jsonl table) to ``cfg.report_to``'s tracker (accelerate's,
    in ``run_dir/tracking``; ``runio.tracking``), with the resolved config as hyperparameters.
    Every step is logged at its step under the metrics.jsonl names, NaN (not evaluated) skipped:
    one seed's values, or with several seeds the mean over seeds (of those with a value) plus
    ``<name>/seed_<s>`` per seed. accelerate and the tracker are imported only here."""
    from runio import tracking

    names = [c for c in metrics.columns if c not in ("seed", "step")]
    table = metrics.groupby("step")[names].mean()
    if len(cfg.seeds) > 1:
        import pandas as pd

        wide = metrics.pivot(index="step", columns="seed", values=names)
        wide.columns = [f"{name}/seed_{seed}" for name, seed in wide.columns]
        table = pd.concat([table, wide], axis=1)
    tags = [str(t) for t in table.columns]
    config = resolved_config(cfg)
    tracker = tracking.open_tracker(cfg.report_to, run_dir, cfg.run_name(), config, tag="[toy]")
    with tracking.finishing([tracker]):
        steps = [int(step) for step in table.index]
        tracking.log_table(tracker, steps, tags, table.to_numpy().tolist())


def _require_complete(run_dir: Path) -> None:
    if not is_complete(run_dir):
        raise UserError(
            f"{run_dir} is not a complete run (no COMPLETE marker): it was killed, failed or is "
            "still running; rerun it with --resume"
        )


def load_metrics(run_dir: str | Path) -> pd.DataFrame:
    """The metrics of a complete run (a ``UserError`` for an incomplete one)."""
    run_dir = Path(run_dir)
    _require_complete(run_dir)
    import pandas as pd

    return pd.read_json(run_dir / "metrics.jsonl", lines=True)


def load_run(run_dir: str | Path) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """(metrics, dist_steps, dist) of a complete run (a ``UserError`` for an incomplete one)."""
    run_dir = Path(run_dir)
    metrics = load_metrics(run_dir)
    with np.load(run_dir / "dist.npz") as z:
        return metrics, z["steps"], z["dist"]
