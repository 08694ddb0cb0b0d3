"""Run directories: claimed once, never silently overwritten, marked complete at the very end.

A run directory holds ``config.json`` (written first), its outputs, and ``COMPLETE`` (written
last, atomically). A directory without ``COMPLETE`` is a run that was killed or is still going;
nothing in it is to be read as a finished result.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
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
    """Write ``COMPLETE`` (last) and release this process's claim on the directory."""
    text = json.dumps(summary or {}, indent=1, default=str)
    atomic_write(Path(run_dir) / COMPLETE, lambda p: p.write_text(text))
    release_run_dir(run_dir)


LOCK = ".lock"
"""The file whose ``flock`` a live run holds: a second process claiming the same directory fails
at once. The kernel drops the lock when the holder exits, killed or not, so a killed run can be
resumed (or overwritten) by the next command; a run that ends (complete or failed) removes it."""

_HELD: dict[str, int] = {}  # run directory -> the descriptor holding its lock (this process)


def _lock(run_dir: Path) -> None:
    """Take ``run_dir``'s lock for this process (kept until ``release_run_dir`` or exit)."""
    key, path = str(run_dir.resolve()), run_dir / LOCK
    if key in _HELD:
        return
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UserError(
                f"run directory {run_dir} is being written by another process (a run of the "
                "same name is going); wait for it, or choose another --name"
            ) from None
        try:  # the holder we waited for may have removed the file: lock the one on disk
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    _HELD[key] = fd


def release_run_dir(run_dir: Path) -> None:
    """Give up this process's claim on ``run_dir`` and remove its lock file (a no-op when this
    process holds none)."""
    fd = _HELD.pop(str(Path(run_dir).resolve()), None)
    if fd is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(Path(run_dir) / LOCK)
        os.close(fd)  # closing the descriptor releases the flock


def run_files(run_dir: Path) -> list[Path]:
    """What a run directory holds, its lock file aside."""
    return [p for p in Path(run_dir).iterdir() if p.name != LOCK] if Path(run_dir).is_dir() else []


def claim_run_dir(run_dir: Path, *, resume: bool = False, overwrite: bool = False) -> bool:
    """Make ``run_dir`` this run's, atomically. Returns True when an existing run is resumed.

    The directory is created and its lock taken first (``LOCK``: one live run per directory,
    whichever process gets there first; the other gets a one-line ``UserError``), then:

    - empty: False (a fresh run).
    - holding a run, ``resume``: kept as it is; True.
    - holding a run, ``overwrite``: emptied; False.
    - holding a run otherwise: a ``UserError`` (an earlier run's outputs are never deleted
      silently).
    """
    run_dir = Path(run_dir)
    if resume and overwrite:
        raise UserError("--resume and --overwrite exclude each other")
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} exists and is not a directory")
    run_dir.mkdir(parents=True, exist_ok=True)
    _lock(run_dir)
    try:
        held = run_files(run_dir)
        if held and resume:
            return True
        if held and not overwrite:
            raise UserError(
                f"run directory {run_dir} already holds a run; pass --resume to continue it, "
                "--overwrite to replace it, or --name to choose another"
            )
        for path in held:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        return False
    except BaseException:
        release_run_dir(run_dir)
        raise
