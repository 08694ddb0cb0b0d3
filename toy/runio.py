"""Run outputs: config.json before training, metrics and distributions after, written atomically
(a killed run never leaves a half-written file; rerunning it starts over cleanly)."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd


def versions() -> dict[str, str]:
    import matplotlib
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "matplotlib": matplotlib.__version__,
    }


def git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def resolved_config(cfg) -> dict:
    """The config as written beside results: every field, plus the hyperparameters the
    objective actually uses (registry defaults with overrides applied)."""
    import objectives

    d = dataclasses.asdict(cfg)
    d["resolved_hparams"] = {**objectives.get(cfg.objective).defaults, **cfg.hparams()}
    d["run_name"] = cfg.run_name()
    return d


def start_run(cfg) -> Path:
    run_dir = Path(cfg.out_dir) / cfg.run_name()
    run_dir.mkdir(parents=True, exist_ok=True)
    meta = {
        "config": resolved_config(cfg),
        "seeds": list(cfg.seeds),
        "versions": versions(),
        "git_sha": git_sha(),
    }
    text = json.dumps(meta, indent=2, default=str)
    atomic_write(run_dir / "config.json", lambda p: p.write_text(text))
    for stale in ("metrics.jsonl", "dist.npz"):  # outputs of an earlier, different run
        (run_dir / stale).unlink(missing_ok=True)
    return run_dir


def finish_run(run_dir: Path, metrics: pd.DataFrame, dist_steps, dist) -> None:
    atomic_write(
        run_dir / "metrics.jsonl",
        lambda p: metrics.to_json(p, orient="records", lines=True, double_precision=15),
    )

    def save_npz(p: Path) -> None:
        with open(p, "wb") as f:
            np.savez_compressed(f, steps=dist_steps, dist=dist)

    atomic_write(run_dir / "dist.npz", save_npz)


def load_metrics(run_dir: str | Path) -> pd.DataFrame:
    return pd.read_json(Path(run_dir) / "metrics.jsonl", lines=True)
