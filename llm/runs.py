"""Run directory of an LLM training run: claimed once (never silently replaced), config.json
before training, metrics.jsonl appended per logged step, checkpoints (complete only once
trainer_state.json is written), final/ and COMPLETE (written last).

Checkpoints hold no pickled code: weights in safetensors, the optimiser and RNG states as plain
tensor data that ``torch.load(weights_only=True)`` reads (accelerate's loader), the LR schedule
as JSON. A file that needs arbitrary unpickling to load is refused on ``--resume``.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import shutil
from pathlib import Path

import torch

from llm.config import NOT_RESULTS, TrainConfig
from runio import (
    NonFiniteError,
    UserError,
    append_jsonl,
    atomic_write,
    claim_run_dir,
    is_complete,
    mark_complete,
    read_jsonl,
    release_run_dir,
    run_files,
)

DONE = -1
"""``start_run``'s answer for a resumed run that is already complete."""

append = append_jsonl

__all__ = [
    "DONE",
    "append",
    "claim",
    "last_record",
    "latest_step",
    "mark_complete",
    "mark_failed",
]


def mark_failed(run_dir: Path, message: str) -> None:
    """Record why a run stopped (``FAILED``, beside its partial metrics; never ``COMPLETE``) and
    release the directory (a later command may resume or retry it)."""
    atomic_write(run_dir / "FAILED", lambda p: p.write_text(message + "\n"))
    release_run_dir(run_dir)


def claim(cfg: TrainConfig, run_dir: Path, accelerator) -> bool:
    """Make ``run_dir`` this run's (see ``runio.claim_run_dir``): every process checks first, so
    all raise the same error; the main process creates. Returns True when resuming."""
    exists = bool(run_files(run_dir))
    if exists and not (cfg.resume or cfg.overwrite):
        claim_run_dir(run_dir)  # raises the one-line error
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        claim_run_dir(run_dir, resume=cfg.resume, overwrite=cfg.overwrite)
    accelerator.wait_for_everyone()
    return exists and cfg.resume


def _checkpoints(run_dir: Path) -> list[Path]:
    return sorted(p.parent for p in run_dir.glob("checkpoints/step_*/trainer_state.json"))


def latest_step(run_dir: Path) -> int | None:
    ckpts = _checkpoints(run_dir)
    return json.loads((ckpts[-1] / "trainer_state.json").read_text())["step"] if ckpts else None


def last_record(run_dir: Path) -> dict:
    records = read_jsonl(run_dir / "metrics.jsonl")
    return records[-1] if records else {}


def _defaults() -> dict:
    return {f.name: f.default for f in dataclasses.fields(TrainConfig)}


def _check_same_config(run_dir: Path, meta: dict) -> None:
    path = run_dir / "config.json"
    if not path.exists():
        return
    try:
        old = json.loads(path.read_text())["config"]
    except (json.JSONDecodeError, KeyError):
        raise UserError(f"resume: {path} is unreadable; use --overwrite to start over") from None
    new = json.loads(json.dumps(meta["config"], default=str))  # tuples -> lists
    # a field added after the run was started counts as its default (e.g. the rounds fields)
    defaults = json.loads(json.dumps(_defaults(), default=str))
    diff = sorted(k for k in new if k not in NOT_RESULTS and old.get(k, defaults.get(k)) != new[k])
    if diff:
        raise UserError(f"resume: config differs from the checkpointed run in {diff}")


def start_run(
    cfg: TrainConfig, run_dir: Path, meta: dict, accelerator, scheduler, resuming: bool
) -> int:
    """Write config.json (or, resuming, check it) and return the step to start from: the last
    complete checkpoint's, 0 for a run killed before its first one, ``DONE`` for a complete run."""
    if resuming:
        _check_same_config(run_dir, meta)
        if is_complete(run_dir):
            release_run_dir(run_dir)  # nothing to write: the complete run is returned as it is
            return DONE
        step = latest_step(run_dir)
        if step is not None:
            load_checkpoint(accelerator, scheduler, run_dir / "checkpoints" / f"step_{step:07d}")
            if accelerator.is_main_process:
                (run_dir / "FAILED").unlink(missing_ok=True)
                metrics = run_dir / "metrics.jsonl"
                keep = [r for r in read_jsonl(metrics) if r["step"] <= step]
                text = "".join(json.dumps(r) + "\n" for r in keep)
                atomic_write(metrics, lambda p: p.write_text(text))
            accelerator.wait_for_everyone()
            return step
    if accelerator.is_main_process:  # a fresh start (also a resume killed before a checkpoint)
        run_dir.mkdir(parents=True, exist_ok=True)
        text = json.dumps(meta, indent=2, default=str)
        atomic_write(run_dir / "config.json", lambda p: p.write_text(text))
        for stale in ("metrics.jsonl", "generations.jsonl", "FAILED"):
            (run_dir / stale).unlink(missing_ok=True)
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    accelerator.wait_for_everyone()
    return 0


def check_finite(policy, what: str) -> None:
    """Refuse to save weights holding NaN or inf (a checkpoint is never non-finite)."""
    bad = [n for n, p in policy.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise NonFiniteError(f"{what}: non-finite weights in {bad[:3]}; not saved")


def save_checkpoint(accelerator, run_dir: Path, step: int, scheduler, policy) -> None:
    """Model (or PEFT model) in safetensors, optimiser and every process's RNG via accelerate,
    the LR schedule as JSON, then trainer_state.json (written last: a checkpoint without it is
    incomplete and ignored)."""
    check_finite(policy, f"checkpoint of step {step}")
    ckpt = run_dir / "checkpoints" / f"step_{step:07d}"
    accelerator.save_state(str(ckpt), safe_serialization=True)
    if accelerator.is_main_process:
        state = json.dumps(scheduler.state_dict())
        atomic_write(ckpt / "scheduler.json", lambda p: p.write_text(state))
        atomic_write(
            ckpt / "trainer_state.json", lambda p: p.write_text(json.dumps({"step": step}))
        )
    accelerator.wait_for_everyone()


def _check_plain_data(ckpt: Path) -> None:
    """Every pickle-format file of the checkpoint must load as plain tensor data
    (``weights_only=True``, with only the numpy types accelerate's RNG states need); one that
    would need arbitrary unpickling — a planted file — is refused before anything is loaded."""
    from accelerate.utils.other import TORCH_SAFE_GLOBALS

    for f in sorted(ckpt.iterdir()):
        if f.suffix not in (".bin", ".pkl", ".pt", ".pth"):
            continue
        try:
            with torch.serialization.safe_globals(TORCH_SAFE_GLOBALS):
                torch.load(f, weights_only=True, map_location="cpu")
        except pickle.UnpicklingError as e:
            first = (str(e).strip().splitlines() or [""])[0][:160]
            raise UserError(
                f"resume: refused to load {f}: it is not plain tensor data and loading it could "
                f"run code ({first})"
            ) from None
        except (OSError, RuntimeError, EOFError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
            raise UserError(f"resume: {f} is unreadable ({first})") from None


def load_checkpoint(accelerator, scheduler, ckpt: Path) -> None:
    """Restore a checkpoint; a file that is not plain tensor data is refused, not executed."""
    _check_plain_data(ckpt)
    try:
        accelerator.load_state(str(ckpt))
    except (OSError, RuntimeError, KeyError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise UserError(f"resume: checkpoint {ckpt} is unreadable ({first})") from None
    try:
        scheduler.load_state_dict(json.loads((ckpt / "scheduler.json").read_text()))
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"resume: {ckpt / 'scheduler.json'} is unreadable ({e})") from None


def save_final(accelerator, policy, tokenizer, out: Path) -> None:
    """The trained model (a PEFT model saves only its adapter) and tokenizer, in safetensors."""
    check_finite(policy, "final model")
    state = accelerator.get_state_dict(policy)
    if accelerator.is_main_process:
        lm = accelerator.unwrap_model(policy).model
        state = {k.removeprefix("model."): v for k, v in state.items()}
        lm.save_pretrained(out, state_dict=state, safe_serialization=True)
        tokenizer.save_pretrained(out)


def result_of(cfg, run_dir: Path | None, final: dict, loaded: bool = False):
    """The ``runio.RunResult`` of a run: metrics.jsonl read back as a DataFrame."""
    import pandas as pd

    from runio.results import RunResult

    path = None if run_dir is None else run_dir / "metrics.jsonl"
    rows = read_jsonl(path) if path is not None and path.exists() else []
    run_dir_str = {"run_dir": str(run_dir)} if run_dir is not None else {}
    return RunResult(cfg, pd.DataFrame(rows), run_dir, {**final, **run_dir_str}, loaded)
