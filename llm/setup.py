"""The set-up both modes of ``llm.train`` share (offline pairs and Algorithm 1's rounds): the
accelerator, the model with its LoRA adapters and reference, the optimiser and schedule, the
tracker, the metrics log, and the resolved config written beside the results.

One rule chooses the reference (``reference_mode``): the objective needs one, or the run samples
from π_ref (every rounds mode: round 0 and offline samples come from the reference); ``auto`` is
the LoRA base model with its adapters off under ``--lora``, else a frozen copy."""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path

import torch

import objectives
from llm import models
from llm.config import TrainConfig
from llm.logps import PolicyLogps
from runio import git_sha, tracking, versions


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
    from llm import runs

    runs.append(path, record)
    acc.log(tracking.scalars(record), step=record["step"])


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
    scheduler = get_scheduler(cfg.lr_scheduler, optimizer, cfg.warmup_steps, total_steps)
    policy, optimizer = acc.prepare(policy, optimizer)
    return policy, optimizer, scheduler, ref_model, fingerprint


def reference_logps(cfg: TrainConfig, acc, policy, ref_model, adapters_off: bool = True):
    """(logps(batch) -> (sums, counts) under π_ref, context manager yielding the reference
    causal LM for sampling): the frozen copy, or (``ref_model`` None) the policy's base model
    with its adapters off — or, without ``adapters_off``, the policy itself (a reference
    precomputed before the first step)."""
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
            return module(b["input_ids"], b["attention_mask"], b["loss_mask"], **kw)

    return logps, lm


def run_meta(cfg: TrainConfig, ref_mode: str, total_steps: int, **extra) -> dict:
    """config.json's content: the resolved config, run name, reference, versions, git SHA."""
    return {
        "config": {**vars(cfg), "resolved_hparams": cfg.resolved_hparams()},
        "run_name": cfg.run_name(),
        "reference": ref_mode,
        **extra,
        "total_steps": total_steps,
        "versions": versions("transformers", "accelerate", "peft", "tokenizers"),
        "git_sha": git_sha(),
    }
