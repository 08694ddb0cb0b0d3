"""Train a causal LM on offline preference pairs with any pairwise or chosen-only objective.

    python -m llm.train --model tiny-gpt2 --objective dpo           # shipped data, no download
    accelerate launch -m llm.train --model DIR --lora --objective simpo ...

Outputs runs/<name>/: config.json (written before training), metrics.jsonl (one record per logged
step, toy metric keys), generations.jsonl, checkpoints/step_*/ and final/.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm.auto import tqdm

import objectives
from llm import models
from llm.config import TrainConfig
from llm.data import collate, read_rows, tokenize_rows
from llm.evaluate import generation_metrics, pair_metrics
from llm.logps import PolicyLogps
from llm.reference import (
    LiveReference,
    NoReference,
    PrecomputedReference,
    cache_key,
    cached_table,
    compute_table,
)
from llm.step import train_step
from toy.runio import atomic_write, git_sha, versions


def corpus_texts(rows: list[dict]):
    """Every string of the rows (prompts, responses, message contents): a tiny model's corpus."""
    for row in rows:
        for v in row.values() if isinstance(row, dict) else ():
            if isinstance(v, str):
                yield v
            elif isinstance(v, list):
                yield from (m["content"] for m in v if isinstance(m, dict) and "content" in m)


def resolve_ref(cfg: TrainConfig, obj: objectives.Objective) -> str:
    """'none' for reference-free objectives, else the --ref strategy (auto resolved)."""
    if not obj.needs_ref:
        return "none"
    if cfg.ref == "auto":
        return "adapter" if cfg.lora else "copy"
    return cfg.ref


def _accelerator(cfg: TrainConfig):
    from accelerate import Accelerator

    precision = cfg.precision
    if precision == "auto":
        cuda_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        precision = "bf16" if cuda_bf16 else "fp32"
    return Accelerator(mixed_precision="bf16" if precision == "bf16" else "no")


def _nograd_module(accelerator, policy):
    """The module for no-grad passes: unwrapped (no DDP collectives) unless sharded by FSDP."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.FSDP:
        return policy
    return accelerator.unwrap_model(policy)


def build_reference(cfg, mode, accelerator, policy, ref_model, fingerprint, splits, pad_id):
    """The reference strategy (see llm.reference) for ``mode``."""
    if mode == "none":
        return NoReference(), {}
    if mode == "copy":
        ref_policy = (
            PolicyLogps(ref_model, cfg.logps_chunk, cfg.logps_checkpoint_mb)
            .to(accelerator.device)
            .eval()
        )
        module, lora_off = ref_policy, False
    else:
        module, lora_off = _nograd_module(accelerator, policy), cfg.lora

    def fn(b):
        with accelerator.autocast():
            args = (b["input_ids"], b["attention_mask"], b["loss_mask"])
            return module(*args, disable_adapter=lora_off) if lora_off else module(*args)

    if mode != "precomputed":
        return LiveReference(fn), {}
    tables, info = {}, {}
    for split, examples in splits.items():
        key = cache_key(fingerprint, examples)
        compute = lambda ex=examples: compute_table(  # noqa: E731
            fn, ex, pad_id, cfg.eval_batch_size, accelerator
        )
        tables[split], hit = cached_table(cfg.cache_dir, key, compute, accelerator)
        info[f"ref_cache/{split}"] = {"key": key, "reused": hit}
    return PrecomputedReference(tables), info


def _start_run(cfg: TrainConfig, run_dir: Path, meta: dict, accelerator) -> int:
    """Write config.json (or, resuming, check it) and return the step to start from."""
    ckpts = sorted(run_dir.glob("checkpoints/step_*/trainer_state.json"))
    if cfg.resume and ckpts:
        old = json.loads((run_dir / "config.json").read_text())["config"]
        new = json.loads(json.dumps(meta["config"], default=str))  # tuples -> lists
        diff = sorted(k for k in new if k not in ("resume", "progress") and old.get(k) != new[k])
        if diff:
            raise ValueError(f"resume: config differs from the checkpointed run in {diff}")
        accelerator.load_state(str(ckpts[-1].parent))
        step = json.loads(ckpts[-1].read_text())["step"]
        if accelerator.is_main_process:
            metrics = run_dir / "metrics.jsonl"
            keep = [ln for ln in metrics.read_text().splitlines() if json.loads(ln)["step"] <= step]
            atomic_write(metrics, lambda p: p.write_text("".join(f"{ln}\n" for ln in keep)))
        accelerator.wait_for_everyone()
        return step
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        text = json.dumps(meta, indent=2, default=str)
        atomic_write(run_dir / "config.json", lambda p: p.write_text(text))
        for stale in ("metrics.jsonl", "generations.jsonl"):
            (run_dir / stale).unlink(missing_ok=True)
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    accelerator.wait_for_everyone()
    return 0


def _append(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def _load(cfg: TrainConfig, accelerator):
    train_rows = read_rows(cfg.data, cfg.data_split)
    tokenizer, model = models.load(
        cfg.model,
        seed=cfg.seed,
        corpus=lambda: corpus_texts(train_rows),
        gguf_file=cfg.gguf_file,
        cache_dir=cfg.cache_dir,
    )
    kw = dict(
        max_len=cfg.max_len,
        max_prompt_len=cfg.max_prompt_len,
        chat_template=cfg.chat_template,
        skip_invalid=cfg.skip_invalid,
    )
    train_ex, report = tokenize_rows(train_rows, tokenizer, path=cfg.data, **kw)
    splits, reports = {"train": train_ex}, {"train": vars(report)}
    if cfg.eval_data:
        rows = read_rows(cfg.eval_data, cfg.data_split)
        splits["eval"], rep = tokenize_rows(rows, tokenizer, path=cfg.eval_data, **kw)
        reports["eval"] = vars(rep)
    for split, rep in reports.items():
        if rep["skipped"] and accelerator.is_main_process:
            print(f"[llm] {split}: skipped {rep['rows'] - rep['kept']} invalid rows: ", end="")
            print(dict(rep["skipped"]))
    return tokenizer, model, splits, reports


def frozen_copy(model):
    """The reference of ``--ref copy``: a deep copy, in eval mode, without gradients."""
    return copy.deepcopy(model).eval().requires_grad_(False)


def _prepare_model(cfg: TrainConfig, model, ref_mode: str):
    if cfg.disable_dropout:
        models.disable_dropout(model)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    fingerprint = models.model_fingerprint(model) if ref_mode == "precomputed" else None
    ref_model = None
    if ref_mode == "copy":
        ref_model = frozen_copy(model)
    if cfg.lora:
        model = models.add_lora(
            model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_targets
        )
    return model, ref_model, fingerprint


def run(cfg: TrainConfig, on_step: Callable[[int, dict], None] | None = None) -> dict:
    """Train as configured; returns the last metrics record (with eval keys) and ``run_dir``.
    ``on_step(step, record)`` is called after every step (e.g. to stop a run early)."""
    from accelerate.utils import set_seed
    from transformers import get_scheduler

    obj, hp = objectives.get(cfg.objective), cfg.hparams()
    accelerator = _accelerator(cfg)
    set_seed(cfg.seed)
    tokenizer, model, splits, reports = _load(cfg, accelerator)
    ref_mode = resolve_ref(cfg, obj)
    model, ref_model, fingerprint = _prepare_model(cfg, model, ref_mode)
    world, n_train = accelerator.num_processes, len(splits["train"])
    pairs_per_step = cfg.batch_size * cfg.grad_accum * world
    steps_per_epoch = n_train // pairs_per_step
    if steps_per_epoch == 0:
        raise ValueError(
            f"TrainConfig.batch_size: one step needs {pairs_per_step} pairs "
            f"(batch_size × grad_accum × processes); {cfg.data} has {n_train}"
        )
    total = cfg.max_steps or cfg.epochs * steps_per_epoch
    policy = PolicyLogps(model, cfg.logps_chunk, cfg.logps_checkpoint_mb)
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = get_scheduler(cfg.lr_scheduler, optimizer, cfg.warmup_steps, total)
    policy, optimizer = accelerator.prepare(policy, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    pad_id = tokenizer.pad_token_id
    reference, ref_info = build_reference(
        cfg, ref_mode, accelerator, policy, ref_model, fingerprint, splits, pad_id
    )
    run_dir = Path(cfg.out_dir) / cfg.run_name()
    meta = {
        "config": {**vars(cfg), "resolved_hparams": {**obj.defaults, **hp}},
        "run_name": cfg.run_name(),
        "reference": ref_mode,
        **ref_info,
        "data": reports,
        "processes": world,
        "pairs_per_step": pairs_per_step,
        "total_steps": total,
        "versions": {**versions(), **_lib_versions()},
        "git_sha": git_sha(),
    }
    start = _start_run(cfg, run_dir, meta, accelerator)
    rank = accelerator.process_index

    def micro_batches(step: int) -> list[dict]:
        epoch, k = divmod(step, steps_per_epoch)
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        ids = torch.randperm(n_train, generator=gen)[k * pairs_per_step : (k + 1) * pairs_per_step]
        mine = ids.view(world, cfg.grad_accum, cfg.batch_size)[rank]
        out = [collate([splits["train"][i] for i in mb.tolist()], pad_id) for mb in mine]
        return [{k: v.to(accelerator.device) for k, v in b.items()} for b in out]

    def evaluate(step: int) -> dict:
        if "eval" not in splits:
            return {}
        out = pair_metrics(
            accelerator, policy, reference, splits["eval"], obj, hp, pad_id, cfg.eval_batch_size
        )
        if step == total and cfg.gen_examples:
            lm = accelerator.unwrap_model(policy).model
            scores, records = generation_metrics(
                accelerator,
                lm,
                tokenizer,
                splits["eval"][: cfg.gen_examples],
                cfg.gen_max_new_tokens,
            )
            out.update(scores)
            if accelerator.is_main_process:
                text = "".join(json.dumps(r) + "\n" for r in records)
                atomic_write(run_dir / "generations.jsonl", lambda p: p.write_text(text))
        return out

    main = accelerator.is_main_process
    if start == 0 and cfg.eval_every:
        record = {"step": 0, "epoch": 0.0, **evaluate(0)}
        if main:
            _append(run_dir / "metrics.jsonl", record)
    bar = tqdm(total=total, initial=start, disable=not (cfg.progress and main), desc="train")
    record: dict = {}
    policy.train()
    for step in range(start, total):
        metrics = train_step(
            accelerator, policy, reference, optimizer, scheduler, micro_batches(step),
            obj, hp, pairs_per_step, cfg.max_grad_norm,
        )  # fmt: skip
        s = step + 1
        record = {"step": s, "epoch": s / steps_per_epoch, **metrics}
        if s == total or (cfg.eval_every and s % cfg.eval_every == 0):
            record.update(evaluate(s))
        if main and (s % cfg.log_every == 0 or s == total or "eval/loss" in record):
            _append(run_dir / "metrics.jsonl", record)
        if cfg.save_every and s % cfg.save_every == 0 and s < total:
            _save_checkpoint(accelerator, run_dir, s)
        bar.update(1)
        bar.set_postfix(loss=f"{metrics['loss/train']:.4f}")
        if on_step is not None:
            on_step(s, record)
    bar.close()
    if cfg.save_final:
        _save_final(accelerator, policy, tokenizer, run_dir / "final")
    accelerator.wait_for_everyone()
    return {**record, "run_dir": str(run_dir)}


def _save_checkpoint(accelerator, run_dir: Path, step: int) -> None:
    """Model (or PEFT model), optimiser, scheduler and every process's RNG via accelerate, then
    trainer_state.json (written last: a checkpoint without it is incomplete and ignored)."""
    ckpt = run_dir / "checkpoints" / f"step_{step:07d}"
    accelerator.save_state(str(ckpt), safe_serialization=False)
    if accelerator.is_main_process:
        atomic_write(
            ckpt / "trainer_state.json", lambda p: p.write_text(json.dumps({"step": step}))
        )
    accelerator.wait_for_everyone()


def _save_final(accelerator, policy, tokenizer, out: Path) -> None:
    """The trained model (a PEFT model saves only its adapter) and tokenizer."""
    state = accelerator.get_state_dict(policy)
    if accelerator.is_main_process:
        lm = accelerator.unwrap_model(policy).model
        state = {k.removeprefix("model."): v for k, v in state.items()}
        lm.save_pretrained(out, state_dict=state)
        tokenizer.save_pretrained(out)


def _lib_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for lib in ("transformers", "accelerate", "peft", "tokenizers"):
        try:
            out[lib] = md.version(lib)
        except md.PackageNotFoundError:
            pass
    return out


def main() -> None:
    import tyro

    cfg = tyro.cli(TrainConfig, description=__doc__)
    result = run(cfg)
    from accelerate import PartialState

    state = PartialState()
    if state.is_main_process:
        keys = [k for k in result if k.startswith("eval/") or k == "loss/train"]
        print(json.dumps({k: result[k] for k in keys} | {"run_dir": result["run_dir"]}, indent=1))
    if state.num_processes > 1:  # gloo may abort at interpreter exit after correct results
        state.wait_for_everyone()
        os._exit(0)


if __name__ == "__main__":
    main()
