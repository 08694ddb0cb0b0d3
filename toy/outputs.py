"""A bandit run's directory: ``config.json`` first, then ``metrics.jsonl`` and ``dist.npz`` (and,
with ``report_to``, ``tracking/``: ``report``), ``summary.png`` (unless ``plot`` is off:
``toy.summary_plot``), then ``COMPLETE`` last (``runio.mark_complete``).
Every file is written atomically.

- A directory without ``COMPLETE`` is a run that was killed (or failed on a non-finite loss):
  nothing in it is read as a result (``load_run``, ``load_metrics`` and ``analysis.cache``
  check ``runio.is_complete``).
- An existing run is never silently replaced: ``start_run`` refuses it unless the config says
  ``resume`` or ``overwrite`` (``runio.claim_run_dir``).
- Resume: a complete run is loaded, not retrained. An incomplete one (killed mid-way) must have
  the same config and is rerun from scratch; bandit runs take seconds and are fully
  deterministic, so the rerun writes exactly what the uninterrupted run would have.
- A run that stops with an error (a non-finite loss, a disk fault, ...) writes ``FAILED`` (one
  line: why), where it still can, and never ``COMPLETE``; the same command then says which flag
  retries it (``--resume``: same config, from scratch; ``--overwrite``: any config).
- An out_dir that cannot be written is found before anything runs (``runio.check_writable``);
  one directory name is one live run (``runio.claim_run_dir``'s lock, released however the run
  ends).

The generic helpers (``atomic_write``, ``versions``, ``git_sha``) live in the shared ``runio``
package and are re-exported here for older importers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pandas is imported where a table is read, not on the training path
    import pandas as pd

from runio import (
    UserError,
    atomic_write,
    check_writable,
    claim_run_dir,
    git_sha,
    is_complete,
    mark_complete,
    release_run_dir,
    run_files,
    versions,
)
from runio.rundir import COMPLETE

__all__ = [
    "FAILED",
    "NOT_RESULTS",
    "atomic_write",
    "failed_reason",
    "finish_run",
    "git_sha",
    "load_metrics",
    "load_run",
    "mark_failed",
    "report",
    "resolved_config",
    "result_config",
    "start_run",
    "versions",
]

NOT_RESULTS = ("name", "out_dir", "progress", "resume", "overwrite", "report_to", "plot")
"""Config fields that do not change a run's results (left out of its hash and resume check)."""

OUTPUTS = ("metrics.jsonl", "dist.npz", "summary.png")
FAILED = "FAILED"
"""Written (one line: why) by a run that stopped with an error; removed when it is retried."""


def mark_failed(run_dir: Path, exc: BaseException) -> None:
    """Write ``FAILED`` (one line: ``exc``) where it can; a full disk may refuse even that."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split()) + "\n"
    with contextlib.suppress(OSError):
        atomic_write(Path(run_dir) / FAILED, lambda p: p.write_text(text))


def failed_reason(run_dir: Path) -> str | None:
    """The first line of an incomplete run's ``FAILED`` (None: none, or the run is complete)."""
    path = Path(run_dir) / FAILED
    if is_complete(run_dir) or not path.is_file():
        return None
    try:
        return path.read_text(errors="replace").strip().splitlines()[0][:300]
    except (OSError, IndexError):
        return "unreadable"


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


NEW_AT_DEFAULT = {"pair_ties": "drop"}
"""Knobs added after runs were named and cached, with the default that reproduces the older
runs: left out of the hash at that default, so older run names and cache keys stay valid."""


def result_config(cfg) -> dict:
    """``resolved_config`` without the fields that do not change results (``NOT_RESULTS``) and
    without the run name: what automatic names hash and what a resume must match (a knob of
    ``NEW_AT_DEFAULT`` at its default is left out too)."""
    new = NEW_AT_DEFAULT
    return {k: v for k, v in _resolved(cfg).items()
            if k not in NOT_RESULTS and not (k in new and new[k] == v)}  # fmt: skip


def _short(value: object, n: int = 40) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= n else text[: n - 3] + "..."


def _check_resumable(run_dir: Path, cfg) -> None:
    """Refuse to resume ``run_dir`` with a config whose results would differ."""
    missing = object()
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
    # a knob new at its default is absent from ``current``; older runs never stored it
    stored = {k: v for k, v in stored.items() if NEW_AT_DEFAULT.get(k, missing) != v}
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
    found a complete run there (load it with ``load_run``; nothing is to be trained). The claim
    is this process's until ``runio.release_run_dir`` (``toy.train.run`` releases it).

    Every refusal (an unwritable out_dir, an existing run without resume/overwrite, a resume
    with another config, a live run of the same name) is a ``UserError`` raised before anything
    on disk is touched. A failure after the claim writes ``FAILED`` and releases it.
    """
    out = Path(cfg.out_dir)
    run_dir = out / cfg.run_name()
    for path, what in ((out, "out_dir"), (run_dir, "name")):
        if path.exists() and not path.is_dir():
            raise UserError(f"BanditConfig.{what}: {path} exists and is not a directory")
    reason = failed_reason(run_dir)
    if reason is not None and not (cfg.resume or cfg.overwrite):
        raise UserError(
            f"run directory {run_dir} holds a run that stopped with an error (see its FAILED: "
            f"{reason}); --resume retries it with the same config, --overwrite replaces it"
        )
    if cfg.resume and run_dir.is_dir():
        _check_resumable(run_dir, cfg)
    check_writable(run_dir, "BanditConfig.out_dir")
    resuming = claim_run_dir(run_dir, resume=cfg.resume, overwrite=cfg.overwrite)
    if resuming and is_complete(run_dir):
        return run_dir, True
    try:
        _prepare(cfg, run_dir, resuming)
    except BaseException as e:
        if isinstance(e, Exception):
            mark_failed(run_dir, e)
        release_run_dir(run_dir)
        raise
    return run_dir, False


def _prepare(cfg, run_dir: Path, resuming: bool) -> None:
    """A claimed run directory made ready to train in: a killed or failed run's outputs and
    ``FAILED`` removed, a writable ``tracking/`` (with ``report_to``), ``config.json``."""
    for stale in (*OUTPUTS, FAILED):  # a killed run's partial outputs (each written atomically)
        (run_dir / stale).unlink(missing_ok=True)
    if cfg.report_to != "none":  # a stale tracking/ goes now, not after training
        from runio.tracking import tracking_dir

        tracking = tracking_dir(run_dir)
        try:
            shutil.rmtree(tracking) if tracking.is_dir() else tracking.unlink(missing_ok=True)
        except OSError as e:
            raise UserError(
                f"BanditConfig.report_to: cannot clear {tracking} ({e.strerror})"
            ) from None
        check_writable(tracking, "BanditConfig.report_to")
    if not (resuming and (run_dir / "config.json").exists()):
        meta = {
            "config": resolved_config(cfg),
            "seeds": list(cfg.seeds),
            "versions": versions(),
            "git_sha": git_sha(),
        }
        text = json.dumps(meta, indent=2, default=str)
        atomic_write(run_dir / "config.json", lambda p: p.write_text(text))


def finish_run(run_dir: Path, metrics: pd.DataFrame, dist_steps, dist, plot=None) -> None:
    """Write the outputs, then ``plot()`` (``summary.png``: its failure is a warning, never
    raised), then the ``COMPLETE`` marker (last: a kill before it leaves a run that no reader
    takes as finished)."""
    atomic_write(
        run_dir / "metrics.jsonl",
        lambda p: metrics.to_json(p, orient="records", lines=True, double_precision=15),
    )

    def save_npz(p: Path) -> None:
        with open(p, "wb") as f:
            np.savez_compressed(f, steps=dist_steps, dist=dist)

    atomic_write(run_dir / "dist.npz", save_npz)
    if plot is not None:
        plot()
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


# ----------------------------------------------------------------------------------------------
# A sweep's directory (``toy.sweep --out``): ``sweep.json`` first (with the plan: base config,
# grid, seeds), one ``points/batch_NNN.npz`` per finished batch, then the tables and COMPLETE.

SWEEP_FILES = ("sweep.json", "metrics.csv", "summary.csv", "points", COMPLETE, FAILED)


def _is_sweep_file(name: str) -> bool:
    """One of a sweep's files, or the temporary file of an atomic write of one (a kill's)."""
    return name in SWEEP_FILES or any(name.startswith(f".{n}.") for n in SWEEP_FILES)


def _sweep_state(out: Path) -> str:
    reason = failed_reason(out)
    if is_complete(out):
        return "holds a complete sweep; --resume loads it, --overwrite replaces it"
    if reason is not None:
        state = f"holds a sweep that stopped with an error (see its FAILED: {reason})"
    else:
        state = "holds an unfinished sweep (killed, or still running)"
    return f"{state}; --resume finishes it (its finished batches kept), --overwrite replaces it"


def _check_plan(out: Path, plan: dict) -> None:
    """Refuse to resume a sweep whose base config, grid or seeds differ from ``plan``."""
    path = out / "sweep.json"
    if not path.exists():
        return  # killed before its plan was written: nothing ran, nothing to match
    try:
        stored = json.loads(path.read_text())["plan"]
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(
            f"cannot resume {out}: sweep.json has no readable plan; pass --overwrite"
        ) from None
    old_base, new_base = stored.get("base") or {}, plan["base"]
    differ = [f"base.{k}" for k in sorted(set(old_base) | set(new_base))
              if old_base.get(k) != new_base.get(k)]  # fmt: skip
    differ += [k for k in plan if k != "base" and stored.get(k) != plan[k]]
    if differ:
        raise UserError(
            f"cannot resume {out}: its sweep differs in {', '.join(differ)}; "
            "pass --overwrite to replace it or choose another --out"
        )


def claim_sweep_dir(out: Path, plan: dict, resume: bool, overwrite: bool) -> bool:
    """Claim a sweep's ``out`` directory (``runio.claim_run_dir``: one live sweep per
    directory); True when ``resume`` found a complete sweep (nothing to compute). Refused
    before anything is written or deleted: another sweep there without --resume/--overwrite,
    a resume with another plan, files that are not a sweep's (never deleted), an unwritable
    place."""
    held = run_files(out)
    foreign = sorted(p.name for p in held if not _is_sweep_file(p.name))
    if foreign:
        raise UserError(f"SweepConfig.out: {out} holds files that are not a sweep's "
                        f"({', '.join(foreign[:3])}); choose a new or empty --out")  # fmt: skip
    if held and not (resume or overwrite):
        raise UserError(f"SweepConfig.out: {out} {_sweep_state(out)}")
    if held and resume:
        _check_plan(out, plan)
    check_writable(out, "SweepConfig.out")
    resuming = claim_run_dir(out, resume=resume, overwrite=overwrite)
    try:
        if resuming:  # checked again, under the lock
            _check_plan(out, plan)
            if is_complete(out):
                return True
        for stale in ("metrics.csv", "summary.csv", FAILED):
            (out / stale).unlink(missing_ok=True)
        if not (out / "sweep.json").exists():
            info = {"plan": plan, "versions": versions(), "git": git_sha()}
            text = json.dumps(info, indent=1, default=str)
            atomic_write(out / "sweep.json", lambda p: p.write_text(text))
    except BaseException:
        release_run_dir(out)
        raise
    return False
