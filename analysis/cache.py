"""Bandit runs for the figures, cached under ``runs/cache/<hash>`` keyed by the resolved config.

A second ``make figures`` loads every run from disk; a changed config (any field, or a
hyperparameter) hashes differently and reruns. Figures always read the files, never the
in-memory results, so a fresh run and a cached one draw identical pictures.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from toy import runio
from toy.config import BanditConfig

RUNS = Path(__file__).resolve().parent.parent / "runs" / "cache"
_IGNORED = {"name", "out_dir", "progress"}  # fields that do not change the results


def config_key(cfg: BanditConfig) -> str:
    resolved = {
        k: v for k, v in runio.resolved_config(cfg).items() if k not in _IGNORED | {"run_name"}
    }
    text = json.dumps(resolved, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cached_run(
    cfg: BanditConfig, label: str | None = None
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """(metrics, dist_steps, dist) of ``cfg``, running it only when no complete cache exists.
    ``label`` (e.g. the objective) is added as a column for plotting."""
    key = config_key(cfg)
    run_dir = RUNS / key
    if not ((run_dir / "metrics.jsonl").exists() and (run_dir / "dist.npz").exists()):
        from toy.train import run

        run(cfg.replace(out_dir=str(RUNS), name=key, progress=False))
    metrics = runio.load_metrics(run_dir)
    with np.load(run_dir / "dist.npz") as z:
        steps, dist = z["steps"], z["dist"]
    if label is not None:
        metrics.insert(0, "label", label)
    return metrics, steps, dist
