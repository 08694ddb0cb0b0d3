"""Train a causal LM with any registry objective: on offline preference pairs (``--mode pairs``,
the default, this module) or in Algorithm 1's on-policy / offline / hybrid rounds of sampled and
scored responses (``--mode on_policy`` etc., ``llm.onpolicy``).

    python -m llm.train --model tiny-gpt2 --objective dpo           # shipped data, no download
    python -m llm.train --mode on_policy --objective reinforce --reward length_min
    python -m llm.train --dry-run --data pairs.jsonl --model DIR    # check data + config only
    accelerate launch -m llm.train --model DIR --lora --objective simpo ...

Order of work: the config is validated when parsed; the places the run writes are checked
writable (nothing is created); then the data files are read, every row checked and tokenised,
and the model's position limit read from its config — all before any weights load — and only
then the run directory is claimed (``llm.runs.claim``: atomically, one live run per directory;
an existing run is never replaced without --resume or --overwrite) and the model built. A run
that fails after its claim is released, never COMPLETE, and FAILED says why.

Outputs runs/<name>/: config.json (written before training), metrics.jsonl (one record per logged
step, toy metric keys), generations.jsonl, checkpoints/step_*/, final/, summary.png (the curves
of metrics.jsonl; --no-plot: none) and COMPLETE (last); with --report-to tensorboard or wandb
also tracking/ (the same metrics through accelerate's trackers, ``runio.tracking``).
User errors print one line and exit 2 (--debug for the traceback); a non-finite loss or gradient
stops the run before the bad update, exit 3.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

import objectives
from errors import is_disk_fault
from llm import onpolicy, runs, setup
from llm.config import TrainConfig, validate
from llm.data import collate
from llm.evaluate import generation_metrics, pair_metrics
from llm.pairs import build_reference, dry_run, load_data, steps_plan, warn_data
from llm.runs import result_of
from llm.sampling import Sampler
from llm.step import train_step
from runio import (
    NonFiniteError,
    RunResult,
    UserError,
    atomic_write,
    cli_entry,
    tracking,
)


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

    obj, hp = objectives.get(cfg.objective), cfg.hparams()
    acc = setup.accelerator(cfg)
    set_seed(cfg.seed)
    tokenizer, splits, reports = load_data(cfg)
    warn_data(reports, acc)
    world = acc.num_processes
    pairs_per_step, steps_per_epoch, total = steps_plan(cfg, len(splits["train"]), world)
    run_dir = setup.run_dir_of(cfg)
    resuming = runs.claim(cfg, run_dir, acc)
    ref_mode = setup.reference_mode(cfg, obj)
    policy, optimizer, scheduler, ref_model, fingerprint = setup.build_trainable(
        cfg, acc, tokenizer, ref_mode, total
    )
    reference, ref_info = build_reference(
        cfg, ref_mode, acc, policy, ref_model, fingerprint, splits, tokenizer.pad_token_id
    )
    meta = setup.run_meta(cfg, ref_mode, total, **ref_info, data=reports, processes=world,
                          pairs_per_step=pairs_per_step)  # fmt: skip
    start = runs.start_run(cfg, run_dir, meta, acc, scheduler, resuming)
    return Session(cfg, obj, hp, acc, tokenizer, policy, optimizer, scheduler, reference,
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
    bar = cfg.progress and acc.is_main_process
    out = pair_metrics(acc, ses.policy, ses.reference, evals, ses.obj, ses.hp,
                       ses.tokenizer.pad_token_id, cfg.eval_batch_size, cfg.max_len,
                       progress=bar)  # fmt: skip
    if step == ses.total and cfg.gen_examples:
        lm = acc.unwrap_model(ses.policy).model
        scores, records = generation_metrics(
            acc, lm, ses.tokenizer, evals[: cfg.gen_examples], cfg.gen_max_new_tokens, bar
        )
        out.update(scores)
        if acc.is_main_process:
            text = "".join(json.dumps(r) + "\n" for r in records)
            atomic_write(ses.run_dir / "generations.jsonl", lambda p: p.write_text(text))
    return out


def run(
    cfg: TrainConfig,
    on_step: Callable[[int, dict], None] | None = None,
    *,
    sampler: Sampler | None = None,
    extra_metrics: Callable[[torch.nn.Module, int], dict] | None = None,
) -> RunResult:
    """Train as configured (offline pairs, or Algorithm 1's rounds with ``--mode on_policy |
    offline | hybrid``). Returns a ``RunResult``: the config, every metrics record as a
    DataFrame, the run directory, and (as a mapping) the last record. ``on_step(step, record)``
    is called after every logged step (rounds modes: every round, ``step`` the round index),
    e.g. to stop a run early. Rounds modes only: ``sampler`` replaces the ``transformers``
    sampler (``llm.sampling.Sampler``), ``extra_metrics(lm, r)`` adds keys to round r's
    record (e.g. a task's exact metrics)."""
    if not cfg.out_dir and not cfg.dry_run:
        return _run_writing_nothing(cfg, on_step, sampler, extra_metrics)
    if not cfg.dry_run:
        setup.check_places(cfg)  # an unwritable place is found before anything is read or built
    with _failing(setup.run_dir_of(cfg)):
        return _run(cfg, on_step, sampler, extra_metrics)


def _run(cfg: TrainConfig, on_step, sampler, extra_metrics) -> RunResult:
    if cfg.mode != "pairs":
        return onpolicy.run(cfg, on_step, sampler=sampler, extra_metrics=extra_metrics)
    if sampler is not None or extra_metrics is not None:
        raise TypeError("sampler= and extra_metrics= apply to the rounds modes (--mode on_policy…)")
    if cfg.dry_run:
        return result_of(cfg, None, dry_run(cfg))
    ses = _setup(cfg)
    acc = ses.accelerator
    if ses.start == runs.DONE:
        if acc.is_main_process:
            print(f"[llm] {ses.run_dir} is complete; nothing to resume", file=sys.stderr)
        return result_of(cfg, ses.run_dir, runs.last_record(ses.run_dir), loaded=True)
    setup.start_tracking(cfg, acc, ses.run_dir, ses.start)
    with tracking.finishing(acc.trackers):  # closed before COMPLETE; failed if this raises
        record = _train(ses, on_step)
        if cfg.save_final:
            runs.save_final(acc, ses.policy, ses.tokenizer, ses.run_dir / "final")
        acc.wait_for_everyone()
    setup.write_summary(cfg, acc, ses.run_dir)  # main process; its failure is a warning
    if acc.is_main_process:
        runs.mark_complete(ses.run_dir, record)
    return result_of(cfg, ses.run_dir, record)


@contextlib.contextmanager
def _failing(run_dir: Path):
    """A run that raises after this process claimed ``run_dir`` leaves it resumable, never
    COMPLETE: FAILED says why (where it can be written) unless the error is a refusal
    (``UserError``: the directory stays as it was) or the run had not started (no config.json);
    the claim is released (no .lock left) and a directory the attempt left empty removed. A disk
    fault's one line says so and how to continue."""
    try:
        yield
    except BaseException as e:
        if not runs.holds(run_dir):
            raise
        written = False
        if isinstance(e, Exception) and not isinstance(e, UserError):
            if (run_dir / "config.json").exists():
                what = f"{type(e).__name__}: {e}"
                if is_disk_fault(e):
                    what = f"cannot write {e.filename}: {e.strerror}"
                written = runs.mark_failed(run_dir, " ".join(what.split()))
        runs.release(run_dir)
        with contextlib.suppress(OSError):
            run_dir.rmdir()  # only when empty: a fresh attempt that wrote nothing
        if is_disk_fault(e):
            step = runs.latest_step(run_dir)
            where = f"its checkpoint of step {step}" if step else "the start"
            failed = f"; {run_dir / 'FAILED'} written" if written else ""
            note = f"run stopped, not complete{failed}; --resume continues it from {where}"
            raise OSError(e.errno, f"{e.strerror} ({note})", e.filename) from e
        raise


def _run_writing_nothing(cfg: TrainConfig, on_step, sampler, extra_metrics) -> RunResult:
    """``out_dir=''``: the run in a temporary directory, removed afterwards; the result keeps
    the metrics (its ``run_dir`` is None). One process only: each would get its own."""
    import tempfile

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserError("TrainConfig.out_dir: '' (write nothing) needs one process; give a dir")
    with tempfile.TemporaryDirectory(prefix="modeseek-") as tmp:
        # nothing outlives the directory: no final model, no picture
        quiet = cfg.replace(out_dir=tmp, plot=False, save_final=False)
        result = run(quiet, on_step, sampler=sampler, extra_metrics=extra_metrics)
    final = {k: v for k, v in result.final.items() if k != "run_dir"}
    return RunResult(cfg, result.metrics, None, final, result.loaded)


def _train(ses: Session, on_step: Callable[[int, dict], None] | None) -> dict:
    """The training steps from ``ses.start``, each logged (metrics.jsonl and the trackers);
    returns the last step's record."""
    cfg, acc, metrics_path = ses.cfg, ses.accelerator, ses.run_dir / "metrics.jsonl"
    main = acc.is_main_process
    if ses.start == 0 and cfg.eval_every:
        record = {"step": 0, "epoch": 0.0, **_evaluate(ses, 0)}
        if main:
            setup.log_record(acc, metrics_path, record)
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
            setup.log_record(acc, metrics_path, record)
        if cfg.save_every and s % cfg.save_every == 0 and s < ses.total:
            runs.save_checkpoint(acc, ses.run_dir, s, ses.scheduler, ses.policy)
        bar.update(1)
        bar.set_postfix(loss=f"{metrics['loss/train']:.4f}")
        if on_step is not None:
            on_step(s, record)
    bar.close()
    return record


def parse(argv: list[str]) -> TrainConfig:
    """The validated config of a command line (HF/TRL spellings translated, see llm.flags;
    errors name the flags as typed)."""
    from llm.flag_cli import parse_config
    from llm.flags import TRAIN

    description = (
        f"{__doc__}\nObjectives (--objective): {', '.join(sorted(objectives.OBJECTIVES))}."
    )
    return parse_config(argv, TRAIN, description, validate)


def _parse_and_run(argv: list[str]) -> RunResult:
    """Parse ``argv``, run it, print the final eval metrics (main process)."""
    from llm.flag_cli import spelled_flags, spoken_errors

    cfg = parse(argv)
    with spoken_errors(spelled_flags(argv)):  # errors name the flags as typed (--max_length)
        result = run(cfg)
    from accelerate import PartialState

    state = PartialState()
    if state.is_main_process and not cfg.dry_run:
        keys = [k for k in result if k.startswith(("eval/", "reward/")) or k == "loss/train"]
        where = {"run_dir": result.final.get("run_dir")}  # None: --out-dir '' kept nothing
        print(json.dumps({k: result[k] for k in keys} | where, indent=1))
    if state.num_processes > 1:  # gloo may abort at interpreter exit after correct results
        state.wait_for_everyone()
        os._exit(0)
    return result


def main(argv: list[str] | None = None) -> int:
    """The command line (``modeseek-train``): user errors print one line and exit 2
    (``--debug``: traceback), a non-finite loss 3."""
    code = cli_entry(_parse_and_run, argv)
    if code and argv is None:  # a real command line of several processes: as after a success,
        import torch.distributed as dist  # exit now (gloo may abort at interpreter exit)

        if dist.is_available() and dist.is_initialized():
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
