"""The set-up both modes of ``llm.train`` share (offline pairs and Algorithm 1's rounds): the
accelerator, the model with its LoRA adapters and reference, the optimiser and schedule, the
tracker, the metrics log, the resolved config written beside the results, and summary.png.

One rule chooses the reference (``reference_mode``): the objective needs one, or the run samples
from π_ref (every rounds mode: round 0 and offline samples come from the reference); ``auto`` is
the LoRA base model with its adapters off under ``--lora``, else a frozen copy.

Also the plumbing both modes share: where the run writes, checked before any model loads
(``check_places``); the fingerprints of the input files stored in config.json
(``input_fingerprints``); a decision taken on the main process that every process learns
(``on_main``); write failures of torch's and safetensors' writers told as the disk fault they
are (``writing``)."""

from __future__ import annotations

import contextlib
import copy
import errno
import hashlib
import json
import logging
import math
import os
import re
import shutil
from pathlib import Path

import torch

import objectives
from errors import DISK_FAULTS, is_disk_fault
from llm import models
from llm.config import TrainConfig
from llm.logps import PolicyLogps
from runio import UserError, append_jsonl, check_writable, git_sha, read_jsonl, tracking, versions
from runio.summary_plot import Panel


def run_dir_of(cfg: TrainConfig) -> Path:
    """<out_dir>/<name>: the run's directory."""
    return Path(cfg.out_dir).expanduser() / cfg.run_name()


def accelerator(cfg: TrainConfig):
    """accelerate's ``Accelerator`` for ``cfg`` (with the ``--report-to`` tracker's project
    directory in the run directory)."""
    from llm.distributed import build_accelerator

    if cfg.report_to == "none":
        return build_accelerator(cfg.precision)
    project_dir = str(tracking.tracking_dir(run_dir_of(cfg)))
    return build_accelerator(cfg.precision, log_with=cfg.report_to, project_dir=project_dir)


def start_tracking(cfg: TrainConfig, acc, run_dir: Path, start: int) -> None:
    """Start ``--report-to``'s tracker (accelerate's ``init_trackers``, main process) in
    runs/<name>/tracking with the resolved config; ``start``: the step the run resumes from."""
    if cfg.report_to == "none":
        return
    kwargs = {}
    if acc.is_main_process:
        kwargs = tracking.init_kwargs(cfg.report_to, run_dir, cfg.run_name(), start, "[llm]")
    config = {**vars(cfg), "resolved_hparams": cfg.resolved_hparams(), "run_name": cfg.run_name()}
    acc.init_trackers(
        tracking.PROJECT, config=tracking.flat_config(config), init_kwargs={cfg.report_to: kwargs}
    )


def log_record(acc, path: Path, record: dict) -> None:
    """Append ``record`` to metrics.jsonl and log its numbers to the trackers at its step (call
    on the main process)."""
    append_jsonl(path, record)
    acc.log(tracking.scalars(record), step=record["step"])


SUMMARY_PANELS = (
    Panel("reward", ("reward/mean", "eval/reward/mean")),
    Panel("KL(π ‖ π_ref)", ("policy/kl_ref",)),
    Panel("loss", ("loss/train", "eval/loss")),
    Panel("implicit rewards", ("rewards/chosen", "rewards/rejected")),
    Panel("implicit margin", ("margin/implicit", "eval/margin/implicit")),
    Panel("pair accuracy", ("pairs/accuracy", "eval/pairs/accuracy")),
)
"""summary.png's panels, each drawn when the run logged one of its metrics: the rounds modes'
reward, KL and loss; the pairs mode's loss, implicit rewards, margin and accuracy."""


def write_summary(cfg: TrainConfig, acc, run_dir: Path) -> None:
    """summary.png (``runio.summary_plot``) from metrics.jsonl as written, on the main process,
    unless ``--no-plot``; a figure that cannot be drawn is one warning line, never an error."""
    if not (cfg.plot and acc.is_main_process):
        return
    from runio import summary_plot

    def draw():
        table = summary_plot.columns(read_jsonl(run_dir / "metrics.jsonl"))
        title = f"{run_dir.name} ({cfg.mode}, {cfg.objective})"
        return summary_plot.figure(table, SUMMARY_PANELS, title=title)

    summary_plot.write(run_dir, draw, tag="[llm]")


def nograd_module(acc, policy):
    """The module for no-grad passes: unwrapped (no DDP collectives) unless sharded by FSDP."""
    from accelerate.utils import DistributedType

    if acc.distributed_type == DistributedType.FSDP:
        return policy
    return acc.unwrap_model(policy)


def reference_mode(cfg: TrainConfig, obj: objectives.Objective) -> str:
    """none / copy / adapter / precomputed: how the run gets π_ref (see the module docstring)."""
    if not obj.needs_ref and cfg.mode == "pairs":
        return "none"
    if cfg.ref == "auto":
        return "adapter" if cfg.lora else "copy"
    return cfg.ref


def frozen_copy(model):
    """The reference of ``--ref copy``: a deep copy, in eval mode, without gradients."""
    return copy.deepcopy(model).eval().requires_grad_(False)


def prepare_model(cfg: TrainConfig, model, ref_mode: str):
    """(model with adapters, frozen reference copy or None, weights fingerprint or None)."""
    if cfg.disable_dropout:
        models.disable_dropout(model)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    fingerprint = models.model_fingerprint(model) if ref_mode == "precomputed" else None
    ref_model = frozen_copy(model) if ref_mode == "copy" else None
    if cfg.lora:
        model = models.add_lora(
            model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_targets
        )
    return model, ref_model, fingerprint


def build_trainable(cfg: TrainConfig, acc, tokenizer, ref_mode: str, total_steps: int):
    """Load the model, add adapters and the reference, wrap it to give log-probs, and build
    AdamW and the schedule over ``total_steps``, prepared by ``acc``. Returns (policy,
    optimizer, scheduler, frozen reference copy or None, fingerprint or None)."""
    from transformers import get_scheduler

    model = models.load_model(
        cfg.model, tokenizer, seed=cfg.seed, gguf_file=cfg.gguf_file, cache_dir=cfg.cache_dir
    )
    model, ref_model, fingerprint = prepare_model(cfg, model, ref_mode)
    policy = PolicyLogps(model, cfg.logps_chunk, cfg.logps_checkpoint_mb)
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = cfg.warmup_steps or math.ceil(total_steps * (cfg.warmup_ratio or 0))
    scheduler = get_scheduler(cfg.lr_scheduler, optimizer, warmup, total_steps)
    policy, optimizer = acc.prepare(policy, optimizer)
    return policy, optimizer, scheduler, ref_model, fingerprint


def reference_logps(
    cfg: TrainConfig, acc, policy, ref_model, adapters_off: bool = True, temperature=None
):
    """(logps(batch) -> (sums, counts) under π_ref, context manager yielding the reference
    causal LM for sampling): the frozen copy, or (``ref_model`` None) the policy's base model
    with its adapters off — or, without ``adapters_off``, the policy itself (a reference
    precomputed before the first step). With ``temperature``: per-token (log-probs, mask) at
    that temperature (``llm.logps.PolicyLogps``)."""
    if ref_model is not None:
        module = PolicyLogps(ref_model, cfg.logps_chunk, cfg.logps_checkpoint_mb)
        module = module.to(acc.device).eval()
        kw, lm = {}, lambda: contextlib.nullcontext(module.model)
    else:
        module = nograd_module(acc, policy)
        kw = {"disable_adapter": True} if adapters_off else {}

        @contextlib.contextmanager
        def lm():
            with acc.unwrap_model(policy).model.disable_adapter():
                yield acc.unwrap_model(policy).model

    def logps(b):
        b = {k: v.to(acc.device) for k, v in b.items()}
        with acc.autocast():
            return module(b["input_ids"], b["attention_mask"], b["loss_mask"], **kw,
                          temperature=temperature)  # fmt: skip

    return logps, lm


def run_config(cfg: TrainConfig) -> dict:
    """config.json's ``config``: every field, the resolved hyperparameters and, in the pairs
    mode, what is evaluated (``--eval-data`` resolved: ``llm.eval_source``)."""
    out = {**vars(cfg), "resolved_hparams": cfg.resolved_hparams()}
    if cfg.mode == "pairs":
        out["resolved_eval"] = cfg.eval_source().as_dict()
    return out


def run_meta(cfg: TrainConfig, ref_mode: str, total_steps: int, **extra) -> dict:
    """config.json's content: the resolved config, run name, reference, the input files'
    fingerprints, versions, git SHA."""
    return {
        "config": run_config(cfg),
        "run_name": cfg.run_name(),
        "reference": ref_mode,
        **extra,
        "inputs": input_fingerprints(cfg),
        "total_steps": total_steps,
        "versions": versions("transformers", "accelerate", "peft", "tokenizers"),
        "git_sha": git_sha(),
    }


def result_of(cfg, run_dir: Path | None, final: dict, loaded: bool = False):
    """The ``runio.RunResult`` of a run: metrics.jsonl read back as a DataFrame."""
    import pandas as pd

    from runio.results import RunResult

    path = None if run_dir is None else run_dir / "metrics.jsonl"
    rows = read_jsonl(path) if path is not None and path.exists() else []
    run_dir_str = {"run_dir": str(run_dir)} if run_dir is not None else {}
    return RunResult(cfg, pd.DataFrame(rows), run_dir, {**final, **run_dir_str}, loaded)


def check_places(cfg: TrainConfig) -> None:
    """Where the run writes, checked before anything is read or built (nothing is created):
    --out-dir (or, not there yet, the nearest directory above it, where it would be created),
    and the run directory and its tracking/ (``--report-to``) when they exist."""
    run_dir = run_dir_of(cfg)
    check_writable(run_dir, "TrainConfig.out_dir")
    if cfg.report_to != "none":
        check_writable(tracking.tracking_dir(run_dir), "TrainConfig.report_to")


WHOLE_FILE = 256 << 20
"""Input files up to this size are fingerprinted by their size and the sha256 of every byte;
larger ones by size, modification time and the sha256 of their first and last MiB (hashing a
multi-GB file on every resume would cost more than it tells)."""

_FINGERPRINTS: dict[tuple, dict] = {}


def _file_fingerprint(path: Path) -> dict:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino, WHOLE_FILE)
    if key not in _FINGERPRINTS:
        h, mib = hashlib.sha256(), 1 << 20
        with open(path, "rb") as f:
            if st.st_size <= WHOLE_FILE:
                for block in iter(lambda: f.read(mib), b""):
                    h.update(block)
                fp = {"bytes": st.st_size, "sha256": h.hexdigest()}
            else:
                h.update(f.read(mib))
                f.seek(max(st.st_size - mib, 0))
                h.update(f.read(mib))
                fp = {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256_ends": h.hexdigest()}
        _FINGERPRINTS[key] = fp
    return _FINGERPRINTS[key]


def fingerprint(path: Path) -> dict:
    """A file's fingerprint (``WHOLE_FILE``); a directory's: its files' (hidden ones aside),
    hashed together with their names."""
    if path.is_file():
        return _file_fingerprint(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()
                   and not any(s.startswith(".") for s in p.relative_to(path).parts))  # fmt: skip
    h = hashlib.sha256()
    for p in files:
        h.update(f"{p.relative_to(path)}\0{sorted(_file_fingerprint(p).items())}\n".encode())
    total = sum(_file_fingerprint(p)["bytes"] for p in files)
    return {"files": len(files), "bytes": total, "sha256": h.hexdigest()}


def input_fingerprints(cfg: TrainConfig) -> dict[str, dict]:
    """``fingerprint`` of each local input: --data and --eval-data (pairs mode); --prompts and
    a --reward that is a model directory or a ``module:function`` (its source file) in the
    rounds modes. Hub names are not fingerprinted (nothing local to compare)."""
    fields = ("data", "eval_data") if cfg.mode == "pairs" else ("prompts", "reward")
    out = {}
    for field in fields:
        specs = cfg.eval_source().path if field == "eval_data" else getattr(cfg, field)
        for k, spec in enumerate([specs] if isinstance(specs, str | None) else specs):
            path = Path(spec).expanduser() if spec else None
            if field == "reward" and path is not None and not path.is_dir():
                path = _module_file(spec) if ":" in spec else None
            if path is not None and path.exists():  # several rewards: reward, reward[1], ...
                out[field if k == 0 else f"{field}[{k}]"] = fingerprint(path)
    return out


def _module_file(spec: str) -> Path | None:
    import importlib.util

    try:
        origin = importlib.util.find_spec(spec.partition(":")[0]).origin
    except (ImportError, AttributeError, ValueError):
        return None
    return Path(origin) if origin and Path(origin).is_file() else None


def on_main(accelerator, fn):
    """``fn()`` on the main process, its result broadcast to every process; its error (a
    ``UserError``, an ``OSError``, anything) is raised on every process, so none waits forever
    and all print the same line."""
    error, box = None, [None]
    if accelerator.is_main_process:
        try:
            box = [("ok", fn())]
        except UserError as e:
            error, box = e, [("user", str(e))]
        except OSError as e:
            error, box = e, [("os", (e.errno, e.strerror, e.filename))]
        except Exception as e:
            error, box = e, [("bug", f"the main process failed: {type(e).__name__}: {e}")]
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        broadcast_object_list(box)
    if error is not None:
        raise error
    kind, value = box[0]
    if kind == "user":
        raise UserError(value)
    if kind == "os":
        raise OSError(*value)
    if kind == "bug":
        raise RuntimeError(value)
    return value


@contextlib.contextmanager
def writing(where: Path):
    """A failed write inside (torch's and safetensors' writers raise their own exceptions)
    re-raised as the ``OSError`` it was — file size limit, disk full — so the CLI prints one
    line; anything else propagates unchanged."""
    try:
        yield
    except Exception as e:
        if is_disk_fault(e):
            raise
        fault = write_fault(e, Path(where))
        if fault is None:
            raise
        raise fault from e


def write_fault(exc: Exception, where: Path) -> OSError | None:
    """The disk fault behind ``exc`` from a write under ``where``, or None."""
    import resource

    found = re.search(r"os error (\d+)", str(exc))
    code = int(found.group(1)) if found else None
    if code in DISK_FAULTS:
        return OSError(code, os.strerror(code), str(where))
    files = [p for p in where.rglob("*") if p.is_file()] if where.is_dir() else [where]
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY:  # torch's writer only says "unexpected pos"
        for p in files:
            if p.exists() and p.stat().st_size >= limit:
                return OSError(errno.EFBIG, os.strerror(errno.EFBIG), str(p))
    parent = where if where.is_dir() else where.parent
    if parent.exists() and shutil.disk_usage(parent).free < 1 << 20:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(where))
    return None


@contextlib.contextmanager
def quiet_tied_weights():
    """Without accelerate's warning that tied weights (GPT-2's head) are saved once: expected,
    and restored on load — one line of noise on stderr per checkpoint otherwise."""
    log = logging.getLogger("accelerate.utils.other")
    quiet = lambda record: "Removed shared tensor" not in record.getMessage()  # noqa: E731
    log.addFilter(quiet)
    try:
        yield
    finally:
        log.removeFilter(quiet)


def check_safetensors(path: Path) -> None:
    """A ValueError unless the safetensors file holds its whole header and every tensor the
    header describes (a truncated checkpoint file is found without reading its tensors)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if size < 8 + n:
            raise ValueError(f"{path.name}: truncated ({size} bytes)")
        header = json.loads(f.read(n))
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if size != 8 + n + end:
        raise ValueError(f"{path.name}: {size} bytes, its header describes {8 + n + end}")
