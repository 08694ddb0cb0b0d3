"""The offline-pairs mode's data and reference (``llm.train``, ``--mode pairs``): every row
read, checked and tokenised before any weights load; the model's position limit; the step plan;
``--dry-run``; and the reference strategies (a live copy or adapter-free base model, or
log-probs precomputed once and cached on disk)."""

from __future__ import annotations

import json
import os
import sys

from llm import models
from llm.config import TrainConfig
from llm.data import read_rows, tokenize_rows
from llm.reference import (
    LiveReference,
    NoReference,
    PrecomputedReference,
    cache_key,
    cached_table,
    compute_table,
)
from llm.setup import reference_logps, run_dir_of
from runio import UserError, run_files


def corpus_texts(rows: list[dict]):
    """Every string of the rows (prompts, responses, message contents): a tiny model's corpus."""
    for row in rows:
        for v in row.values() if isinstance(row, dict) else ():
            if isinstance(v, str):
                yield v
            elif isinstance(v, list):
                yield from (m["content"] for m in v if isinstance(m, dict) and "content" in m)


def build_reference(cfg, mode, accelerator, policy, ref_model, fingerprint, splits, pad_id):
    """The reference strategy (see llm.reference) for ``mode``; precomputed log-probs are those
    of the policy before its first step (its base model, adapters off, under LoRA)."""
    if mode == "none":
        return NoReference(), {}
    fn, _ = reference_logps(cfg, accelerator, policy, ref_model, adapters_off=cfg.lora)
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
    source = cfg.eval_source()
    if cfg.eval_data == "auto" and int(os.environ.get("RANK", "0")) == 0:  # not the user's pick
        print(f"[llm] evaluation: {source.why}", file=sys.stderr)
    rows = {"train": read_rows(cfg.data, cfg.data_split)}
    if source.path:
        rows["eval"] = read_rows(source.path, source.split or cfg.data_split)
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
        path = cfg.data if split == "train" else source.path
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
    if cfg.eval_source().path and cfg.gen_examples and gen > limit:
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
    if run_files(run_dir) and not (cfg.resume or cfg.overwrite):
        raise UserError(f"dry run: run directory {run_dir} exists (--resume or --overwrite)")
    report["steps"] = steps_plan(cfg, len(splits["train"]), 1)[2]
    return report
