"""Train a causal LM with any registry objective: on offline preference pairs (``--mode pairs``,
the default, this module) or in Algorithm 1's on-policy / offline / hybrid rounds of sampled and
scored responses (``--mode on_policy`` etc., ``llm.onpolicy``).

    python -m llm.train --model tiny-gpt2 --objective dpo           # shipped data, no download
    python -m llm.train --mode on_policy --objective reinforce --reward length_min
    python -m llm.train --dry-run --data pairs.jsonl --model DIR    # check data + config only
    accelerate launch -m llm.train --model DIR --lora --objective simpo ...

Order of work: the config is validated when parsed; then the data files are read, every row
checked and tokenised, and the model's position limit read from its config — all before any
weights load — and only then the run directory is claimed (an existing run is never replaced
without --resume or --overwrite) and the model built.

Outputs runs/<name>/: config.json (written before training), metrics.jsonl (one record per logged
step, toy metric keys), generations.jsonl, checkpoints/step_*/, final/ and COMPLETE (last); with
--report-to tensorboard or wandb also tracking/ (the same metrics through accelerate's trackers,
``runio.tracking``).
User errors print one line and exit 2 (--debug for the traceback); a non-finite loss or gradient
stops the run before the bad update, exit 3.
"""

from __future__ import annotations

import copy
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

import objectives
from llm import models, runs
from llm.config import TrainConfig, validate
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
from runio import (
    NonFiniteError,
    UserError,
    atomic_write,
    deferred_validation,
    exit_on_error,
    git_sha,
    tracking,
    versions,
)


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


def run_dir_of(cfg: TrainConfig) -> Path:
    """runs/<name>: the run's directory."""
    return Path(cfg.out_dir).expanduser() / cfg.run_name()


def _accelerator(cfg: TrainConfig):
    from llm.distributed import build_accelerator

    if cfg.report_to == "none":
        return build_accelerator(cfg.precision)
    project_dir = str(tracking.tracking_dir(run_dir_of(cfg)))
    return build_accelerator(cfg.precision, log_with=cfg.report_to, project_dir=project_dir)


def start_tracking(cfg: TrainConfig, accelerator, run_dir: Path, start: int) -> None:
    """Start ``--report-to``'s tracker (accelerate's ``init_trackers``, main process) in
    runs/<name>/tracking with the resolved config; ``start``: the step the run resumes from."""
    if cfg.report_to == "none":
        return
    kwargs = {}
    if accelerator.is_main_process:
        kwargs = tracking.init_kwargs(cfg.report_to, run_dir, cfg.run_name(), start, "[llm]")
    config = {**vars(cfg), "resolved_hparams": cfg.resolved_hparams(), "run_name": cfg.run_name()}
    accelerator.init_trackers(
        tracking.PROJECT, config=tracking.flat_config(config), init_kwargs={cfg.report_to: kwargs}
    )


def log_record(accelerator, path: Path, record: dict) -> None:
    """Append ``record`` to metrics.jsonl and log its numbers to the trackers at its step (call
    on the main process)."""
    runs.append(path, record)
    accelerator.log(tracking.scalars(record), step=record["step"])


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
        tables[split], hit = cached_table(cfg.cache_dir, key, compute, accelerator, len(examples))
        info[f"ref_cache/{split}"] = {"key": key, "reused": hit}
    # with LoRA, ``fn`` is the base model (adapters off): the reference itself, kept live
    return PrecomputedReference(tables, live=fn if cfg.lora else None), info


def load_data(cfg: TrainConfig, *, count_all: bool = False):
    """(tokenizer, splits, reports): every row read, checked and tokenised, and the sequence
    limits checked against the model's positions, before any model weights load.
    ``count_all`` counts every problem (as --skip-invalid does) instead of stopping at the first."""
    rows = {"train": read_rows(cfg.data, cfg.data_split)}
    if cfg.eval_data:
        rows["eval"] = read_rows(cfg.eval_data, cfg.eval_data_split or cfg.data_split)
    tokenizer = models.load_tokenizer(
        cfg.model,
        corpus=lambda: corpus_texts(rows["train"]),
        gguf_file=cfg.gguf_file,
        cache_dir=cfg.cache_dir,
    )
    check_positions(cfg, models.max_positions(cfg.model, cfg.gguf_file, cfg.cache_dir))
    kw = dict(
        max_len=cfg.max_len,
        max_prompt_len=cfg.max_prompt_len,
        chat_template=cfg.chat_template,
        skip_invalid=cfg.skip_invalid or count_all,
        require_rows=not count_all,
        objective=cfg.objective,
    )
    splits, reports = {}, {}
    for split, split_rows in rows.items():
        path = cfg.data if split == "train" else cfg.eval_data
        splits[split], rep = tokenize_rows(split_rows, tokenizer, path=path, **kw)
        reports[split] = {**vars(rep), "skipped": dict(rep.skipped)}
    return tokenizer, splits, reports


def check_positions(cfg: TrainConfig, limit: int | None) -> None:
    """--max-len (and prompt + generated tokens at evaluation) within the model's positions."""
    if limit is None:
        return
    if cfg.max_len > limit:
        raise UserError(
            f"TrainConfig.max_len: {cfg.max_len} exceeds the model's {limit} positions "
            f"(max_position_embeddings); use --max-len {limit} or less"
        )
    gen = cfg.max_prompt_len + cfg.gen_max_new_tokens
    if cfg.eval_data and cfg.gen_examples and gen > limit:
        raise UserError(
            f"TrainConfig.gen_max_new_tokens: max_prompt_len + gen_max_new_tokens = {gen} exceeds "
            f"the model's {limit} positions"
        )


def warn_data(reports: dict, accelerator) -> None:
    if not accelerator.is_main_process:
        return
    for split, rep in reports.items():
        if rep["skipped"]:
            print(f"[llm] {split}: skipped {sum(rep['skipped'].values())} invalid rows: ", end="")
            print(rep["skipped"], file=sys.stderr)
        if rep.get("unpaired"):
            u = rep["unpaired"]
            print(
                f"[llm] {split}: unpaired rows: {u['desirable']} desirable and {u['undesirable']} "
                f"undesirable matched into {u['pairs']} KTO pairs"
                + ("" if u["desirable"] == u["undesirable"] else " (the smaller side reused)"),
                file=sys.stderr,
            )
        if rep["identical"]:
            print(
                f"[llm] warning: {split}: {rep['identical']} of {rep['kept']} pairs have identical "
                "chosen and rejected responses (no preference signal; kept)",
                file=sys.stderr,
            )


def steps_plan(cfg: TrainConfig, n_train: int, world: int) -> tuple[int, int, int]:
    """(pairs per optimiser step, steps per epoch, total steps); an error if one step needs more
    pairs than the data holds."""
    pairs_per_step = cfg.batch_size * cfg.grad_accum * world
    steps_per_epoch = n_train // pairs_per_step
    if steps_per_epoch == 0:
        raise UserError(
            f"TrainConfig.batch_size: one step needs {pairs_per_step} pairs "
            f"(batch_size × grad_accum × processes); {cfg.data} has {n_train} valid rows"
        )
    return pairs_per_step, steps_per_epoch, cfg.max_steps or cfg.epochs * steps_per_epoch


def dry_run(cfg: TrainConfig) -> dict:
    """Check the config and every row without building the model: the report of ``--dry-run``.
    Raises a ``UserError`` summarising the problems when training would fail."""
    _, splits, reports = load_data(cfg, count_all=True)
    run_dir = run_dir_of(cfg)
    report = {"data": reports, "run_dir": str(run_dir), "run_dir_exists": run_dir.exists()}
    print(json.dumps(report, indent=1))
    problems = [
        f"{split}: {sum(rep['skipped'].values())} invalid rows {rep['skipped']}"
        for split, rep in reports.items()
        if rep["skipped"] and not cfg.skip_invalid
    ]
    if problems:
        raise UserError(f"dry run: {'; '.join(problems)} (fix them or pass --skip-invalid)")
    if run_dir.exists() and any(run_dir.iterdir()) and not (cfg.resume or cfg.overwrite):
        raise UserError(f"dry run: run directory {run_dir} exists (--resume or --overwrite)")
    report["steps"] = steps_plan(cfg, len(splits["train"]), 1)[2]
    return report


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


@dataclass
class Session:
    """Everything a run holds while it trains (built once by ``_setup``)."""

    cfg: TrainConfig
    obj: objectives.Objective
    hp: dict
    accelerator: object
    tokenizer: object
    policy: object
    optimizer: object
    scheduler: object
    reference: object
    splits: dict
    steps_per_epoch: int
    pairs_per_step: int
    total: int
    run_dir: Path
    start: int


def _setup(cfg: TrainConfig) -> Session:
    from accelerate.utils import set_seed
    from transformers import get_scheduler

    obj, hp = objectives.get(cfg.objective), cfg.hparams()
    accelerator = _accelerator(cfg)
    set_seed(cfg.seed)
    tokenizer, splits, reports = load_data(cfg)
    warn_data(reports, accelerator)
    world = accelerator.num_processes
    pairs_per_step, steps_per_epoch, total = steps_plan(cfg, len(splits["train"]), world)
    run_dir = run_dir_of(cfg)
    resuming = runs.claim(cfg, run_dir, accelerator)
    model = models.load_model(
        cfg.model, tokenizer, seed=cfg.seed, gguf_file=cfg.gguf_file, cache_dir=cfg.cache_dir
    )
    ref_mode = resolve_ref(cfg, obj)
    model, ref_model, fingerprint = _prepare_model(cfg, model, ref_mode)
    policy = PolicyLogps(model, cfg.logps_chunk, cfg.logps_checkpoint_mb)
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = get_scheduler(cfg.lr_scheduler, optimizer, cfg.warmup_steps, total)
    policy, optimizer = accelerator.prepare(policy, optimizer)
    reference, ref_info = build_reference(
        cfg, ref_mode, accelerator, policy, ref_model, fingerprint, splits,
        tokenizer.pad_token_id,
    )  # fmt: skip
    meta = {
        "config": {**vars(cfg), "resolved_hparams": cfg.resolved_hparams()},
        "run_name": cfg.run_name(),
        "reference": ref_mode,
        **ref_info,
        "data": reports,
        "processes": world,
        "pairs_per_step": pairs_per_step,
        "total_steps": total,
        "versions": versions("transformers", "accelerate", "peft", "tokenizers"),
        "git_sha": git_sha(),
    }
    start = runs.start_run(cfg, run_dir, meta, accelerator, scheduler, resuming)
    return Session(cfg, obj, hp, accelerator, tokenizer, policy, optimizer, scheduler, reference,
                   splits, steps_per_epoch, pairs_per_step, total, run_dir, start)  # fmt: skip


def _step_rows(ses: Session, step: int):
    """The data rows of optimiser step ``step`` over all processes: a pure function of the seed
    and the step (so a resumed run sees the same data)."""
    epoch, k = divmod(step, ses.steps_per_epoch)
    gen = torch.Generator().manual_seed(ses.cfg.seed * 1_000_003 + epoch)
    ids = torch.randperm(len(ses.splits["train"]), generator=gen)
    return ids[k * ses.pairs_per_step : (k + 1) * ses.pairs_per_step]


def _micro_batches(ses: Session, step: int) -> list[dict]:
    """This process's micro-batches of optimiser step ``step``, split over processes and
    accumulation."""
    cfg, acc = ses.cfg, ses.accelerator
    ids = _step_rows(ses, step)
    mine = ids.view(acc.num_processes, cfg.grad_accum, cfg.batch_size)[acc.process_index]
    pad_id = ses.tokenizer.pad_token_id
    out = [collate([ses.splits["train"][i] for i in mb.tolist()], pad_id) for mb in mine]
    return [{key: v.to(acc.device) for key, v in b.items()} for b in out]


def _evaluate(ses: Session, step: int) -> dict:
    """Held-out pair metrics; at the last step also greedy generations, BLEU-4 and ROUGE-L."""
    if "eval" not in ses.splits:
        return {}
    cfg, acc, evals = ses.cfg, ses.accelerator, ses.splits["eval"]
    out = pair_metrics(acc, ses.policy, ses.reference, evals, ses.obj, ses.hp,
                       ses.tokenizer.pad_token_id, cfg.eval_batch_size, cfg.max_len)  # fmt: skip
    if step == ses.total and cfg.gen_examples:
        lm = acc.unwrap_model(ses.policy).model
        scores, records = generation_metrics(
            acc, lm, ses.tokenizer, evals[: cfg.gen_examples], cfg.gen_max_new_tokens
        )
        out.update(scores)
        if acc.is_main_process:
            text = "".join(json.dumps(r) + "\n" for r in records)
            atomic_write(ses.run_dir / "generations.jsonl", lambda p: p.write_text(text))
    return out


def run(cfg: TrainConfig, on_step: Callable[[int, dict], None] | None = None) -> dict:
    """Train as configured; returns the last metrics record (with eval keys) and ``run_dir``.
    ``on_step(step, record)`` is called after every step (e.g. to stop a run early)."""
    if cfg.mode != "pairs":  # Algorithm 1 rounds: on_policy / offline / hybrid
        from llm import onpolicy

        return onpolicy.run(cfg, on_round=on_step)
    if cfg.dry_run:
        return dry_run(cfg)
    ses = _setup(cfg)
    acc = ses.accelerator
    if ses.start == runs.DONE:
        if acc.is_main_process:
            print(f"[llm] {ses.run_dir} is complete; nothing to resume", file=sys.stderr)
        return {**runs.last_record(ses.run_dir), "run_dir": str(ses.run_dir)}
    start_tracking(cfg, acc, ses.run_dir, ses.start)
    with tracking.finishing(acc.trackers):  # closed before COMPLETE; failed if this raises
        record = _train(ses, on_step)
        if cfg.save_final:
            runs.save_final(acc, ses.policy, ses.tokenizer, ses.run_dir / "final")
        acc.wait_for_everyone()
    if acc.is_main_process:
        runs.mark_complete(ses.run_dir, record)
    return {**record, "run_dir": str(ses.run_dir)}


def _train(ses: Session, on_step: Callable[[int, dict], None] | None) -> dict:
    """The training steps from ``ses.start``, each logged (metrics.jsonl and the trackers);
    returns the last step's record."""
    cfg, acc, metrics_path = ses.cfg, ses.accelerator, ses.run_dir / "metrics.jsonl"
    main = acc.is_main_process
    if ses.start == 0 and cfg.eval_every:
        record = {"step": 0, "epoch": 0.0, **_evaluate(ses, 0)}
        if main:
            log_record(acc, metrics_path, record)
    bar = tqdm(total=ses.total, initial=ses.start, disable=not (cfg.progress and main),
               desc="train")  # fmt: skip
    record: dict = {}
    ses.policy.train()
    for step in range(ses.start, ses.total):
        s = step + 1
        try:
            metrics = train_step(
                acc, ses.policy, ses.reference, ses.optimizer, ses.scheduler,
                _micro_batches(ses, step), ses.obj, ses.hp, ses.pairs_per_step, cfg.max_grad_norm,
                cfg.max_len,
            )  # fmt: skip
        except NonFiniteError as e:
            bar.close()
            rows = _step_rows(ses, step).tolist()
            message = (
                f"step {s}: {e} (batch: rows {rows} of {cfg.data}); the update was not applied "
                f"and nothing was saved (last checkpoint: {runs.latest_step(ses.run_dir)}). "
                "Lower --lr or check --hp"
            )
            if main:
                runs.mark_failed(ses.run_dir, message)
            raise NonFiniteError(f"{message} [{ses.run_dir}/FAILED]") from None
        record = {"step": s, "epoch": s / ses.steps_per_epoch, **metrics}
        if s == ses.total or (cfg.eval_every and s % cfg.eval_every == 0):
            record.update(_evaluate(ses, s))
        if main and (s % cfg.log_every == 0 or s == ses.total or "eval/loss" in record):
            log_record(acc, metrics_path, record)
        if cfg.save_every and s % cfg.save_every == 0 and s < ses.total:
            runs.save_checkpoint(acc, ses.run_dir, s, ses.scheduler, ses.policy)
        bar.update(1)
        bar.set_postfix(loss=f"{metrics['loss/train']:.4f}")
        if on_step is not None:
            on_step(s, record)
    bar.close()
    return record


def _parse(argv: list[str]) -> TrainConfig:
    """The validated config of a command line (HF/TRL spellings translated, see llm.flags)."""
    import tyro

    from llm.flags import translate

    argv = translate(list(argv))  # HF/TRL flag spellings; "did you mean" for unknown flags
    description = (
        f"{__doc__}\nObjectives (--objective): {', '.join(sorted(objectives.OBJECTIVES))}."
    )
    with deferred_validation():  # our one-line errors, not tyro's box around them
        cfg = tyro.cli(TrainConfig, args=argv, description=description)
    validate(cfg)
    return cfg


def cli(argv: list[str]) -> dict:
    """Parse ``argv`` into a config and run it; prints the final eval metrics (main process)."""
    cfg = _parse(argv)
    result = run(cfg)
    from accelerate import PartialState

    state = PartialState()
    if state.is_main_process and not cfg.dry_run:
        keys = [k for k in result if k.startswith(("eval/", "reward/")) or k == "loss/train"]
        print(json.dumps({k: result[k] for k in keys} | {"run_dir": result["run_dir"]}, indent=1))
    if state.num_processes > 1:  # gloo may abort at interpreter exit after correct results
        state.wait_for_everyone()
        os._exit(0)
    return result


def main(argv: list[str] | None = None) -> None:
    """The command line: user errors print one line and exit 2 (``--debug``: traceback)."""
    exit_on_error(cli, argv)


if __name__ == "__main__":
    main()
