"""Run directory of an LLM training run: claimed once (never silently replaced), config.json
before training, metrics.jsonl appended per logged step, checkpoints (complete only once
trainer_state.json is written), final/ and COMPLETE (written last).

Claims: the main process takes ``runio.claim_run_dir``'s lock and decides (fresh, resume,
retry or refuse) while holding it; the outcome — or its one-line error — is broadcast, so every
process of a launch agrees. A directory holding only config.json (and FAILED) has no results:
the same command retries it (a fresh start).

Resume trusts nothing it did not write: config.json must exist and match (the config, and the
input files' fingerprints: ``llm.setup.input_fingerprints``), every metrics record must carry
its step, and the newest checkpoint whose files are whole is loaded (a truncated or unreadable
one is passed over, saying so on stderr).

Checkpoints hold no pickled code: weights in safetensors, the optimiser and RNG states as plain
tensor data that ``torch.load(weights_only=True)`` reads (accelerate's loader), the LR schedule
as JSON. A file that needs arbitrary unpickling to load is refused on ``--resume``.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import shutil
import sys
from pathlib import Path

import torch

from llm.config import NOT_RESULTS, TrainConfig
from llm.setup import (
    check_safetensors,
    input_fingerprints,
    on_main,
    quiet_tied_weights,
    result_of,
    run_config,
    writing,
)
from runio import (
    NonFiniteError,
    UserError,
    append_jsonl,
    atomic_write,
    claim_run_dir,
    is_complete,
    read_jsonl,
    release_run_dir,
    run_files,
)
from runio import mark_complete as _mark_complete

DONE = -1
"""``start_run``'s answer for a resumed run that is already complete."""

append = append_jsonl

__all__ = [
    "DONE",
    "append",
    "claim",
    "holds",
    "last_record",
    "latest_step",
    "mark_complete",
    "mark_failed",
    "release",
    "result_of",
]

_HELD: set[str] = set()  # run directories this process claimed and has not released


def _key(run_dir: Path) -> str:
    return str(Path(run_dir).resolve())


def holds(run_dir: Path) -> bool:
    """Whether this process holds ``run_dir``'s claim (taken by ``claim``, not yet released)."""
    return _key(run_dir) in _HELD


def release(run_dir: Path) -> None:
    _HELD.discard(_key(run_dir))
    release_run_dir(run_dir)


def mark_complete(run_dir: Path, summary: dict | None = None) -> None:
    """``COMPLETE`` (last), then the claim released."""
    _mark_complete(run_dir, summary)
    _HELD.discard(_key(run_dir))


def mark_failed(run_dir: Path, message: str) -> bool:
    """Record why a run stopped (``FAILED``, beside its partial metrics; never ``COMPLETE``) and
    release the directory (a later command may resume or retry it). Returns whether FAILED could
    be written (a full disk may refuse even that)."""
    try:
        atomic_write(run_dir / "FAILED", lambda p: p.write_text(message + "\n"))
        return True
    except OSError:
        return False
    finally:
        release(run_dir)


def claim(cfg: TrainConfig, run_dir: Path, accelerator) -> bool:
    """Make ``run_dir`` this run's (see the module docstring); True when ``--resume``
    continues an existing run (checked here: ``check_resumable``)."""
    return on_main(accelerator, lambda: _claim_here(cfg, Path(run_dir)))


def _claim_here(cfg: TrainConfig, run_dir: Path) -> bool:
    held = claim_run_dir(run_dir, resume=not cfg.overwrite, overwrite=cfg.overwrite)
    _HELD.add(_key(run_dir))
    try:
        if held and not cfg.resume:
            _retry_or_refuse(cfg, run_dir)  # returns for a retry: a fresh start
            return False
        if held:
            check_resumable(run_dir, run_config(cfg), input_fingerprints(cfg), cfg.mode)
        return held
    except BaseException:
        release(run_dir)
        raise


def _first_line(path: Path) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()[0]
    except (OSError, IndexError):
        return "unreadable"
    return text if len(text) <= 160 else text[:157] + "..."


def _retry_or_refuse(cfg: TrainConfig, run_dir: Path) -> None:
    """Without --resume: a run that left no results (config.json, FAILED, tracking/ only) of
    the same config is retried; anything else is refused, the message naming the flag."""
    names = {p.name for p in run_files(run_dir)}
    reason = _first_line(run_dir / "FAILED") if "FAILED" in names else None
    if "config.json" in names and names <= {"config.json", "FAILED", "tracking"}:
        diff = config_diff(stored_meta(run_dir), run_config(cfg))
        if not diff:
            why = f"FAILED: {reason}" if reason else "it was stopped before its first record"
            print(f"[llm] {run_dir} holds no results ({why}); retrying it", file=sys.stderr)
            return
        raise UserError(
            f"run directory {run_dir} holds a run of another config (it differs in {diff}) "
            "that left no results; pass --overwrite to replace it, or --name to choose another"
        )
    if reason is not None:
        step = latest_step(run_dir)
        where = f"its checkpoint of step {step}" if step else "the start (no checkpoint)"
        raise UserError(
            f"run directory {run_dir} holds a run that stopped with an error (FAILED: {reason}); "
            f"pass --resume to retry it from {where}, --overwrite to replace it, or --name to "
            "choose another"
        )
    raise UserError(
        f"run directory {run_dir} already holds a run; pass --resume to continue it, "
        "--overwrite to replace it, or --name to choose another"
    )


def stored_meta(run_dir: Path) -> dict:
    path = run_dir / "config.json"
    try:
        meta = json.loads(path.read_text())
        if isinstance(meta, dict) and isinstance(meta.get("config"), dict):
            return meta
        problem = "it has no 'config' object"
    except (OSError, ValueError) as e:
        problem = f"{type(e).__name__}: {e}"
    raise UserError(f"{path} is unreadable ({problem}); pass --overwrite to start the run over")


def config_diff(meta: dict, config: dict) -> list[str]:
    """The result-changing fields in which ``config`` differs from a stored run's (a field added
    after the run was started counts as its default)."""
    old = meta["config"]
    new = json.loads(json.dumps(config, default=str))  # tuples -> lists
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    defaults = json.loads(json.dumps(defaults, default=str))
    return sorted(k for k in new if k not in NOT_RESULTS and old.get(k, defaults.get(k)) != new[k])


def check_resumable(run_dir: Path, config: dict, inputs: dict, mode: str) -> None:
    """Refuse (one line) to continue a run whose config.json is missing or differs, whose input
    files changed since it started, or whose logs hold a record it did not write."""
    names = {p.name for p in run_files(run_dir)}
    if "config.json" not in names:
        if names - {"FAILED"}:
            raise UserError(
                f"resume: {run_dir} has no config.json, so what it holds "
                f"({', '.join(sorted(names))}) cannot be checked against this config; pass "
                "--overwrite to start it over"
            )
        return
    meta = stored_meta(run_dir)
    diff = config_diff(meta, config)
    if diff:
        raise UserError(f"resume: config differs from the checkpointed run in {diff}")
    for field, old in sorted((meta.get("inputs") or {}).items()):
        new = inputs.get(field)
        if new != old:
            now = f"now {_describe(new)}" if new else "no longer a local file"
            raise UserError(
                f"resume: --{field.replace('_', '-')} {meta['config'].get(field)} changed since "
                f"the run started ({now}; then {_describe(old)}); restore it, or pass --overwrite "
                "to start over"
            )
    if "COMPLETE" not in names:
        records(run_dir / "metrics.jsonl", "step")
        if mode != "pairs":
            records(run_dir / "generations.jsonl", "round")


def _describe(fp: dict) -> str:
    digest = fp.get("sha256") or fp.get("sha256_ends") or ""
    return f"{fp.get('bytes')} bytes, sha256 {digest[:12]}"


def records(path: Path, key: str) -> list[dict]:
    """A log's records, each a JSON object with an integer ``key`` (a torn last line dropped);
    anything else is a one-line ``UserError`` naming the record."""
    out = read_jsonl(path)
    for i, r in enumerate(out):
        value = r.get(key) if isinstance(r, dict) else None
        if not isinstance(value, int) or isinstance(value, bool):
            raise UserError(
                f"resume: {path}: record {i + 1} has no integer {key!r} (not written by "
                "llm.train); remove it, or pass --overwrite to start over"
            )
    return out


def _checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, directory) of every checkpoint with trainer_state.json (written last), by step."""
    out = []
    for p in run_dir.glob("checkpoints/step_*/trainer_state.json"):
        step = p.parent.name.removeprefix("step_")
        if step.isdigit():
            out.append((int(step), p.parent))
    return sorted(out)


def latest_step(run_dir: Path) -> int | None:
    ckpts = _checkpoints(run_dir)
    return ckpts[-1][0] if ckpts else None


def last_record(run_dir: Path) -> dict:
    recs = read_jsonl(run_dir / "metrics.jsonl")
    return recs[-1] if recs else {}


def start_run(
    cfg: TrainConfig, run_dir: Path, meta: dict, accelerator, scheduler, resuming: bool
) -> int:
    """Write config.json (resuming: ``claim`` checked it) and return the step to start from:
    the newest readable checkpoint's, 0 for a run without one, ``DONE`` for a complete run."""
    main = accelerator.is_main_process
    if resuming:
        if is_complete(run_dir):
            release(run_dir)  # nothing to write: the complete run is returned as it is
            return DONE
        step = on_main(accelerator, lambda: _readable_checkpoint(run_dir, cfg.mode))
        if step is not None:
            load_checkpoint(accelerator, scheduler, run_dir / "checkpoints" / f"step_{step:07d}")
            if main:
                (run_dir / "FAILED").unlink(missing_ok=True)
                path = run_dir / "metrics.jsonl"
                keep = [r for r in records(path, "step") if r["step"] <= step]
                text = "".join(json.dumps(r) + "\n" for r in keep)
                atomic_write(path, lambda p: p.write_text(text))
            accelerator.wait_for_everyone()
            return step
    if main:  # a fresh start (also a resume without a readable checkpoint)
        run_dir.mkdir(parents=True, exist_ok=True)
        text = json.dumps(meta, indent=2, default=str)
        atomic_write(run_dir / "config.json", lambda p: p.write_text(text))
        for stale in ("metrics.jsonl", "generations.jsonl", "summary.png", "FAILED"):
            (run_dir / stale).unlink(missing_ok=True)
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    accelerator.wait_for_everyone()
    return 0


def _readable_checkpoint(run_dir: Path, mode: str) -> int | None:
    """The newest checkpoint whose files are whole; each one passed over is named on stderr."""
    ckpts = _checkpoints(run_dir)
    for n, (step, ckpt) in enumerate(reversed(ckpts)):
        why = unreadable(ckpt, step, mode)
        if why is None:
            return step
        then = f"trying step {ckpts[-n - 2][0]}'s" if n + 1 < len(ckpts) else "none before it"
        print(f"[llm] resume: checkpoint {ckpt} is unreadable ({why}); {then}", file=sys.stderr)
    if ckpts:
        print(f"[llm] resume: no readable checkpoint in {run_dir}; starting over", file=sys.stderr)
    return None


def unreadable(ckpt: Path, step: int, mode: str = "pairs") -> str | None:
    """Why checkpoint ``ckpt`` cannot be loaded (truncated or unparsable files), or None.
    A pickle that would run code is a ``UserError`` (refused, not passed over)."""
    try:
        if json.loads((ckpt / "trainer_state.json").read_text()).get("step") != step:
            return "trainer_state.json names another step"
        json.loads((ckpt / "scheduler.json").read_text())["last_epoch"]
        if mode != "pairs":
            state = json.loads((ckpt / "rounds_state.json").read_text())
            int(state["round"])
        for f in sorted(ckpt.glob("*.safetensors")):
            check_safetensors(f)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        return f"{type(e).__name__}: {e}"
    return _check_plain_data(ckpt)


def _check_plain_data(ckpt: Path) -> str | None:
    """Every pickle-format file of the checkpoint must load as plain tensor data
    (``weights_only=True``, with only the numpy types accelerate's RNG states need); one that
    would need arbitrary unpickling — a planted file — is refused before anything is loaded.
    Returns why a file is unreadable (e.g. truncated), or None."""
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
        except Exception as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
            return f"{f.name}: {first}"
    return None


def load_checkpoint(accelerator, scheduler, ckpt: Path) -> None:
    """Restore a checkpoint whose files ``unreadable`` passed (no pickle that runs code)."""
    try:
        accelerator.load_state(str(ckpt))
        scheduler.load_state_dict(json.loads((ckpt / "scheduler.json").read_text()))
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise UserError(f"resume: checkpoint {ckpt} is unreadable ({first})") from None


def check_finite(policy, what: str) -> None:
    """Refuse to save weights holding NaN or inf (a checkpoint is never non-finite)."""
    bad = [n for n, p in policy.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise NonFiniteError(f"{what}: non-finite weights in {bad[:3]}; not saved")


def save_checkpoint(accelerator, run_dir: Path, step: int, scheduler, policy) -> None:
    """Model (or PEFT model) in safetensors, optimiser and every process's RNG via accelerate,
    the LR schedule as JSON, then trainer_state.json (written last: a checkpoint without it is
    incomplete and ignored, so a failed write leaves the previous checkpoint the latest)."""
    check_finite(policy, f"checkpoint of step {step}")
    ckpt = run_dir / "checkpoints" / f"step_{step:07d}"
    with writing(ckpt), quiet_tied_weights():
        accelerator.save_state(str(ckpt), safe_serialization=True)
    if accelerator.is_main_process:
        state = json.dumps(scheduler.state_dict())
        atomic_write(ckpt / "scheduler.json", lambda p: p.write_text(state))
        atomic_write(
            ckpt / "trainer_state.json", lambda p: p.write_text(json.dumps({"step": step}))
        )
    accelerator.wait_for_everyone()


def save_final(accelerator, policy, tokenizer, out: Path) -> None:
    """The trained model (a PEFT model saves only its adapter) and tokenizer, in safetensors."""
    check_finite(policy, "final model")
    state = accelerator.get_state_dict(policy)
    if accelerator.is_main_process:
        lm = accelerator.unwrap_model(policy).model
        state = {k.removeprefix("model."): v for k, v in state.items()}
        with writing(out):
            lm.save_pretrained(out, state_dict=state, safe_serialization=True)
            tokenizer.save_pretrained(out)
