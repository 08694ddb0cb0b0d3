"""Bandit runs for the figures, cached under ``runs/cache/<hash>`` keyed by the resolved config.

A second ``make figures`` loads every run from disk; a changed config (any field, or a
hyperparameter) hashes differently and reruns. Figures always read the files, never the
in-memory results, so a fresh run and a cached one draw identical pictures.

Only a complete run (``runio.is_complete``: its COMPLETE marker is written after its outputs) is
trusted; a cache directory left by a killed run is rerun in place (``overwrite``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from runio import config_hash, is_complete
from toy.config import BanditConfig
from toy.outputs import load_run, result_config

RUNS = Path(__file__).resolve().parent.parent / "runs" / "cache"


def config_key(cfg: BanditConfig) -> str:
    """16 hex digits of the fields that change results (same keys as before run names had a
    hash: ``result_config`` leaves out name, out_dir, progress, resume, overwrite)."""
    return config_hash(result_config(cfg), n=16)


def cached_run(
    cfg: BanditConfig, label: str | None = None
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """(metrics, dist_steps, dist) of ``cfg``, running it only when no complete cache exists.
    ``label`` (e.g. the objective) is added as a column for plotting."""
    key = config_key(cfg)
    run_dir = RUNS / key
    if not is_complete(run_dir):
        from toy.train import run

        where = dict(out_dir=str(RUNS), name=key, progress=False, plot=False)  # no summary.png
        run(cfg.replace(**where, resume=False, overwrite=True))
    metrics, steps, dist = load_run(run_dir)
    if label is not None:
        metrics.insert(0, "label", label)
    return metrics, steps, dist
