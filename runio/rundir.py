"""Run directories: claimed once, never silently overwritten, marked complete at the very end.

A run directory holds ``config.json`` (written first), its outputs, and ``COMPLETE`` (written
last, atomically). A directory without ``COMPLETE`` is a run that was killed or is still going;
nothing in it is to be read as a finished result.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from errors import UserError
from runio.files import atomic_write

COMPLETE = "COMPLETE"


def config_hash(resolved: dict, n: int = 8) -> str:
    """A short sha256 of a resolved config (sorted keys): makes automatic run names unique."""
    text = json.dumps(resolved, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def is_complete(run_dir: Path) -> bool:
    return (Path(run_dir) / COMPLETE).exists()


def mark_complete(run_dir: Path, summary: dict | None = None) -> None:
    text = json.dumps(summary or {}, indent=1, default=str)
    atomic_write(Path(run_dir) / COMPLETE, lambda p: p.write_text(text))


def claim_run_dir(run_dir: Path, *, resume: bool = False, overwrite: bool = False) -> bool:
    """Make ``run_dir`` this run's. Returns True when an existing run is to be resumed.

    - absent: created; False.
    - present, ``resume``: kept as it is; True.
    - present, ``overwrite``: emptied; False.
    - present otherwise: a ``UserError`` (an earlier run's outputs are never deleted silently).
    """
    run_dir = Path(run_dir)
    if resume and overwrite:
        raise UserError("--resume and --overwrite exclude each other")
    exists = run_dir.exists() and any(run_dir.iterdir())
    if exists and resume:
        return True
    if exists and not overwrite:
        raise UserError(
            f"run directory {run_dir} already holds a run; pass --resume to continue it, "
            "--overwrite to replace it, or --name to choose another"
        )
    if exists:
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return False
