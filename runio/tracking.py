"""Experiment tracking through accelerate's trackers (``--report-to none|tensorboard|wandb``),
shared by ``toy.train`` and ``llm.train``.

What is logged: the numeric values of each metrics.jsonl record, under the same names, at the
record's ``step`` (which is the x-axis, not a scalar of its own); the resolved config as the
run's hyperparameters (flattened to scalars: nested keys joined with ``/``, sequences written as
their command-line words). Everything goes inside the run directory, in ``<run>/tracking/``:

- tensorboard: ``tracking/modeseek/events.out.tfevents.*`` (``tensorboard --logdir runs``);
  accelerate writes the hyperparameters beside it (a timestamped sub-run and ``hparams.yml``).
- wandb: ``tracking/wandb/`` (wandb's ``dir``), project ``modeseek``, the run name as the wandb
  run's name. Without ``WANDB_MODE`` in the environment and without an API key (neither
  ``WANDB_API_KEY`` nor a ``wandb login`` entry in ``~/.netrc``), ``WANDB_MODE=offline`` is set
  (a log line says so): nothing goes over the network; ``wandb sync`` uploads the run later.

Resume: a run that restarts from step 0 (a fresh start, or a killed run with no checkpoint)
first removes its old ``tracking/``. One that continues from a checkpoint at step k keeps it:
TensorBoard hides the old session's events after step k (``purge_step``), so each step shows the
values metrics.jsonl keeps; wandb continues the same run id (``resume="allow"``; a wandb server
keeps the steps it already has, and offline each session is its own offline run directory).

Nothing here imports accelerate, tensorboard or wandb until a tracker is opened.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

REPORT_TO = ("none", "tensorboard", "wandb")
"""Accepted ``--report-to`` values."""
PROJECT = "modeseek"
"""accelerate's ``project_name``: the TensorBoard sub-directory and the wandb project."""
DIRNAME = "tracking"
"""The tracker files' directory inside a run directory."""

_INSTALL = {
    "tensorboard": "pip install tensorboard",
    "wandb": "pip install wandb (or pip install 'modeseek[wandb]')",
}


def problem(report_to: str) -> str | None:
    """Why ``report_to`` cannot be used (unknown name, package not installed), or None."""
    if report_to not in REPORT_TO:
        return f"unknown {report_to!r}; choose from {list(REPORT_TO)}"
    if report_to != "none":
        from importlib.util import find_spec

        if find_spec(report_to) is None:
            return (
                f"{report_to!r} needs the {report_to} package, which is not installed: "
                f"{_INSTALL[report_to]}"
            )
    return None


def tracking_dir(run_dir: Path) -> Path:
    """``<run_dir>/tracking``: where the trackers write."""
    return Path(run_dir) / DIRNAME


def scalars(record: Mapping, skip: tuple[str, ...] = ("step",)) -> dict[str, float]:
    """The numbers of a metrics record, by name (not booleans, strings, None or ``skip``)."""
    return {
        k: v
        for k, v in record.items()
        if k not in skip and isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def flat_config(config: Mapping, prefix: str = "") -> dict[str, object]:
    """``config`` as one level of scalars (bool, int, float, str or None): nested mappings as
    ``outer/inner`` keys, sequences as their space-joined words (e.g. ``hp``: "beta=0.1")."""
    out: dict[str, object] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flat_config(value, f"{name}/"))
        elif isinstance(value, (list, tuple)):
            out[name] = " ".join(str(v) for v in value)
        elif value is None or isinstance(value, (bool, int, float, str)):
            out[name] = value
        else:
            out[name] = str(value)
    return out


def wandb_key_configured() -> bool:
    """Whether wandb has an API key: ``WANDB_API_KEY``, or a ``wandb login`` entry in the netrc
    file (``NETRC`` or ``~/.netrc``) for ``WANDB_BASE_URL``'s host (default api.wandb.ai)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    import netrc
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname
    path = os.environ.get("NETRC") or os.path.join(os.path.expanduser("~"), ".netrc")
    try:
        return netrc.netrc(path).authenticators(host or "") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def _wandb_kwargs(run_dir: Path, run_name: str, resuming: bool, tag: str) -> dict:
    """``wandb.init`` arguments: files in the run directory, the run's name, and one run id
    kept across resumes; ``WANDB_MODE=offline`` when unset and no API key is configured."""
    out = tracking_dir(run_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if "WANDB_MODE" not in os.environ and not wandb_key_configured():
        os.environ["WANDB_MODE"] = "offline"
        print(
            f"{tag} wandb: WANDB_MODE is unset and no API key is configured, so WANDB_MODE=offline "
            f"(nothing is sent; upload later with `wandb sync {out / 'wandb'}/offline-run-*`)",
            file=sys.stderr,
        )
    id_file = out / "wandb_id"
    run_id = id_file.read_text().strip() if resuming and id_file.exists() else ""
    if not run_id:
        run_id = uuid.uuid4().hex[:12]
        id_file.write_text(run_id + "\n")
    return {"dir": str(out), "name": run_name, "id": run_id, "resume": "allow"}


def init_kwargs(report_to: str, run_dir: Path, run_name: str, start_step: int, tag: str) -> dict:
    """The tracker's keyword arguments (accelerate's ``init_kwargs[report_to]``) for a run that
    starts at ``start_step`` (0: from scratch, so an earlier session's tracker files are removed;
    k > 0: resumed from the checkpoint of step k). Call on the main process only."""
    if start_step == 0:
        shutil.rmtree(tracking_dir(run_dir), ignore_errors=True)
    if report_to == "tensorboard":
        return {"purge_step": start_step + 1} if start_step else {}
    if report_to == "wandb":
        return _wandb_kwargs(run_dir, run_name, start_step > 0, tag)
    return {}


def open_tracker(
    report_to: str, run_dir: Path, run_name: str, config: Mapping, start_step: int = 0,
    tag: str = "[modeseek]",
):  # fmt: skip
    """accelerate's tracker class for ``report_to``, started in ``<run_dir>/tracking`` with the
    flattened ``config`` stored, without an ``Accelerator`` (``Accelerator.init_trackers`` does
    the same for ``llm.train``). Call on the main process only."""
    from accelerate import PartialState
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    PartialState()  # accelerate's logging, which the trackers use, needs its state
    kwargs = init_kwargs(report_to, run_dir, run_name, start_step, tag)
    cls = LOGGER_TYPE_TO_CLASS[report_to]
    if cls.requires_logging_directory:
        tracker = cls(PROJECT, str(tracking_dir(run_dir)), **kwargs)
    else:
        tracker = cls(PROJECT, **kwargs)
    if hasattr(tracker, "start"):  # accelerate >= 1.5 starts trackers after building them
        tracker.start()
    tracker.store_init_configuration(flat_config(config))
    return tracker


def log_table(tracker, steps: list[int], tags: list[str], rows: list[list[float]]) -> None:
    """Log ``rows[i]`` (one value per tag; NaN, a missing value, skipped) at ``steps[i]``: the
    tracker's ``log`` once per step, except TensorBoard's, whose SummaryWriter writes one event
    per scalar (about 40 µs each: 8 s for 1,500 steps × 100 tags); there all of a step's scalars
    go in one event, with the tags, float32 values and steps ``log`` would write."""
    writer = getattr(tracker, "writer", None) if tracker.name == "tensorboard" else None
    file_writer = getattr(writer, "_get_file_writer", None)
    if file_writer is not None:
        from tensorboard.compat.proto.summary_pb2 import Summary

        events = file_writer()
    for step, row in zip(steps, rows):
        values = {t: v for t, v in zip(tags, row) if v == v}  # v != v: NaN
        if not values:
            continue
        if file_writer is None:
            tracker.log(values, step=step)
            continue
        summary = Summary(value=[Summary.Value(tag=t, simple_value=v) for t, v in values.items()])
        events.add_summary(summary, global_step=step)


def finish(trackers, failed: bool = False) -> None:
    """Close the trackers (what ``Accelerator.end_training`` does before it destroys the process
    group, which ``llm.train`` still needs afterwards); a failed run's wandb run is marked
    failed (exit code 1)."""
    for tracker in trackers:
        run = getattr(tracker, "run", None) if tracker.name == "wandb" else None
        if failed and run is not None:
            run.finish(exit_code=1)
        else:
            tracker.finish()


@contextlib.contextmanager
def finishing(trackers: list) -> Iterator[None]:
    """Finish ``trackers`` when the block ends (as failed when it raises)."""
    try:
        yield
    except BaseException:
        finish(trackers, failed=True)
        raise
    finish(trackers)
