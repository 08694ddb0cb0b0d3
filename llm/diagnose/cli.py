"""Before training: predict, per preference pair, what one gradient step of each objective does to
log π(y_w) and log π(y_l) on *this* model, and (``--verify``) take the step to check.

    python -m llm.diagnose                            # tiny GPT-2, shipped pairs, dpo asft sft
    python -m llm.diagnose --model DIR --gguf-file F.gguf --lora --n-pairs 48 --verify
    python -m llm.diagnose --summary-of runs/diagnose # re-print a table's summary

The data and model options are the training harness's (``llm.train``: same loader, chat template,
truncation, GGUF, LoRA flags; unpaired prompt/completion/label rows are matched into pairs as
``llm.train`` does, each response scored under its own prompt). Per pair, with ℓ = log π(y|x)
summed over the response tokens, |y| its token count, ℓ̄ = ℓ/|y| and P = exp(ℓ̄):

- **probability-space partials** ∂L/∂x_w, ∂L/∂x_l and the push-down ratio |∂L/∂x_l|/|∂L/∂x_w|
  of each objective at the model's own values (``objectives.gradients``), x = P for objectives
  on per-token means (registry ``uses_mean_logps(hparams)``: ASFT, ORPO, SimPO, and SFT/DPO/IPO
  with ``length_norm=mean``), x = π(y|x) = exp(ℓ) otherwise; the reference is the model itself
  (π = π_ref before the first step);
- **CHES** (Razin et al. 2024, *Unintentional unalignment: likelihood displacement in direct
  preference optimization*): with h(x, y_<k) the last hidden layer's output at the position that
  predicts token k (what the LM head reads), S⁺ = Σ_k h(x, y⁺_<k), S⁻ = Σ_k h(x, y⁻_<k),
  CHES = ⟨S⁺, S⁻⟩ − ‖S⁺‖²; the length-normalised form uses S⁺/|y⁺| and S⁻/|y⁻|;
- **gradient inner products** ⟨∇ℓ_w, ∇ℓ_l⟩, ‖∇ℓ_w‖², ‖∇ℓ_l‖² over ``--params`` (LoRA adapters,
  the last k blocks, or every weight): one forward and one backward per response, two per pair
  (the cost of one training step on the pair; ``seconds_grads_per_pair`` in config.json);
- **first-order prediction** of one SGD step θ ← θ − η∇_θL on the pair (paper A's Lemma 6.2
  expression): with a = ∂L/∂ℓ_w, b = ∂L/∂ℓ_l from ``objectives.closed_form`` (chain rule
  ∂L/∂ℓ = (∂L/∂ℓ̄)/|y| for objectives on means),
  Δℓ_w ≈ −η(a‖∇ℓ_w‖² + b⟨∇ℓ_w,∇ℓ_l⟩),  Δℓ_l ≈ −η(a⟨∇ℓ_w,∇ℓ_l⟩ + b‖∇ℓ_l‖²);
  Δℓ_w < 0 predicts likelihood displacement.

``--verify`` takes that step (a, b by autograd through the objective itself, on the same
parameters, from the same start; the weights are restored after every pair and objective) and
measures Δℓ_w, Δℓ_l (and after ``--verify-steps`` k steps); the summary reports sign accuracy,
Spearman rank correlations of predicted vs measured, and the AUC with which CHES ranks the pairs
that displace. ``--batch-step`` does the same for one step on the mean loss of all the diagnosed
pairs (a training batch), from the Gram matrix of the per-response gradients.

Refused with a one-line error: batch-coupled objectives (registry ``batch_coupled``: AOT), whose
one-pair step is not training's; hyperparameters that need inputs beyond the pair's four
log-probs (``required_inputs``: ORPO ``nll=all``, KTO ``z0=mismatched``); files without rejected
responses. KTO's batch reference point z0 is the pair's own (0 at the start, as in any batch).

Outputs in ``--out-dir``: ``pairs.csv`` (or ``.parquet``; one row per pair × objective),
``texts.jsonl`` (each pair's decoded prompt and responses), ``summary.json``, ``config.json``
(config, resolved hyperparameters, versions, timing) and, with ``--plot``, ``diagnose.png``, each
written atomically. The directory is checked writable before anything is read (nothing is
created) and held while the diagnosis writes it (``runio.claim_run_dir``'s lock: a second live
diagnosis of the same ``--out-dir`` is refused). User errors and disk faults (disk full, file
size limit, no permission) print one line and exit 2.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from llm import shipped
from llm.diagnose.config import TABLE_NAMES, DiagnoseConfig, validate
from llm.diagnose.gradients import rejected_prompt, select_params
from llm.diagnose.pairs import diagnose_pairs
from llm.diagnose.summary import format_summary, read_table, read_texts, summarize
from llm.setup import writing
from runio import (
    UserError,
    atomic_write,
    check_writable,
    claim_run_dir,
    cli_entry,
    git_sha,
    release_run_dir,
    versions,
)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _subset(examples: list, n: int, seed: int) -> list:
    if not n or n >= len(examples):
        return examples
    gen = torch.Generator().manual_seed(seed)
    keep = sorted(torch.randperm(len(examples), generator=gen)[:n].tolist())
    return [examples[i] for i in keep]


def check_layout(cfg: DiagnoseConfig, report: dict) -> None:
    """The loaded file's layout against every listed objective (``llm.data.check_layout``'s
    errors), and pairs required: a layout without rejected responses is refused."""
    from llm.data import LAYOUT_NAMES
    from llm.data import check_layout as data_check_layout

    layout = report["layout"]
    for name in cfg.objective:
        data_check_layout(layout, name, cfg.data)
    if layout not in ("preference", "implicit", "unpaired"):
        raise UserError(
            f"{cfg.data}: {LAYOUT_NAMES.get(layout, layout)} rows have no rejected response; "
            "llm.diagnose compares chosen and rejected responses, so it needs preference pairs "
            "(prompt/chosen/rejected, chosen/rejected, or prompt/completion/label for kto)"
        )


def _row_labels(cfg: DiagnoseConfig, report: dict) -> dict[int, dict]:
    """Per pair: ``row``, its row in the data file, and ``group``, the row's own string label
    (e.g. the shipped ``corruption``), when pair i is row i: no row skipped, rows not unpaired
    (an unpaired pair is two rows, see ``llm.data.match_unpaired``)."""
    from llm.data import read_rows

    if report["kept"] != report["rows"] or report["layout"] == "unpaired":
        return {}
    rows = read_rows(cfg.data, cfg.data_split)
    keys = [k for k in ("corruption", "group", "source", "category") if k in rows[0]]
    out: dict[int, dict] = {i: {"row": i} for i in range(len(rows))}
    if keys:
        for i, r in enumerate(rows):
            if isinstance(r, dict) and isinstance(r.get(keys[0]), str):
                out[i]["group"] = r[keys[0]]
    return out


def _texts(tokenizer, examples) -> dict[int, dict]:
    """Each pair's decoded prompt and responses (``rejected_prompt`` too when it has its own)."""
    dec = lambda ids: tokenizer.decode(list(ids), skip_special_tokens=True)  # noqa: E731
    out = {}
    for e in examples:
        out[e.idx] = {
            "prompt": dec(e.prompt_ids),
            "chosen": dec(e.chosen_ids),
            "rejected": dec(e.rejected_ids),
        }
        if rejected_prompt(e) != tuple(e.prompt_ids):
            out[e.idx]["rejected_prompt"] = dec(rejected_prompt(e))
    return out


def run(cfg: DiagnoseConfig) -> dict:
    """Diagnose as configured; writes the outputs and returns the summary (with ``out_dir``)."""
    out_dir = Path(cfg.out_dir).expanduser()
    if cfg.summary_of is not None:
        src = Path(cfg.summary_of).expanduser()
        meta = (
            json.loads((src / "summary.json").read_text())
            if (src / "summary.json").exists()
            else {}
        )
        summary = summarize(
            read_table(src), meta.get("at_risk_objective"), cfg.top, read_texts(src)
        )
        print(format_summary(summary))
        return summary
    check_writable(out_dir, "DiagnoseConfig.out_dir")
    _existing_tables(cfg, out_dir)
    from llm.pairs import load_data

    t_start = time.perf_counter()
    tcfg = cfg.train_config()
    tokenizer, splits, reports = load_data(tcfg)
    check_layout(cfg, reports["train"])
    if u := reports["train"].get("unpaired"):
        print(
            f"[diagnose] unpaired rows: {u['desirable']} desirable and {u['undesirable']} "
            f"undesirable matched into {u['pairs']} pairs as llm.train does (each response "
            "scored under its own prompt)",
            file=sys.stderr,
        )
    examples = _subset(splits["train"], cfg.n_pairs, cfg.seed)
    with claimed(out_dir):
        existing = _existing_tables(cfg, out_dir)  # again, now that no other diagnosis writes
        return _diagnose(cfg, out_dir, tokenizer, reports, examples, existing, t_start)


def _existing_tables(cfg: DiagnoseConfig, out_dir: Path) -> list[str]:
    existing = [n for n in TABLE_NAMES if (out_dir / n).exists()]
    if existing and not cfg.overwrite:
        raise UserError(f"{out_dir / existing[0]} exists; pass --overwrite or another --out-dir")
    return existing


@contextlib.contextmanager
def claimed(out_dir: Path):
    """``out_dir`` held by this diagnosis until the block ends (``runio.claim_run_dir``'s lock;
    nothing in the directory is touched): a second live diagnosis of it gets one line. A
    directory the diagnosis created and left empty is removed."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"DiagnoseConfig.out_dir: {out_dir} exists and is not a directory")
    created = not out_dir.exists()
    try:
        claim_run_dir(out_dir, resume=True)
    except UserError:
        raise UserError(
            f"DiagnoseConfig.out_dir: {out_dir} is being written by another llm.diagnose; wait "
            "for it, or choose another --out-dir"
        ) from None
    try:
        yield
    finally:
        release_run_dir(out_dir)
        if created:
            with contextlib.suppress(OSError):
                out_dir.rmdir()  # only when empty: the diagnosis failed before writing


def _diagnose(cfg, out_dir, tokenizer, reports, examples, existing, t_start) -> dict:
    """The model's part of ``run``, in the claimed ``out_dir``."""
    from llm import models

    device = _device(cfg.device)
    model = models.load_model(
        cfg.model, tokenizer, seed=cfg.seed, gguf_file=cfg.gguf_file, cache_dir=cfg.cache_dir
    )
    models.disable_dropout(model)
    if cfg.lora:
        # the adapters' initial A matrices are random: drawn from --seed, so a rerun diagnoses
        # the same model (unseeded, torch's start seed differs per process and so did results)
        torch.manual_seed(cfg.seed)
        model = models.add_lora(
            model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_targets
        )
    model = model.to(device).eval()
    named = select_params(model, cfg.param_set(), cfg.last_k)
    params = [p for _, p in named]
    t_load = time.perf_counter() - t_start
    hparams = cfg.hparams()
    df, info = diagnose_pairs(
        model, params, examples, cfg.objective, hparams, cfg.eta,
        verify=cfg.verify, verify_steps=cfg.verify_steps, batch_step=cfg.batch_step,
        batch_max_gib=cfg.batch_max_gib, device=device,
        progress=cfg.progress, extra=_row_labels(cfg, reports["train"]),
    )  # fmt: skip
    texts = _texts(tokenizer, examples)
    summary = summarize(df, cfg.risk(), cfg.top, texts)
    seconds = time.perf_counter() - t_start
    meta = {
        # the shipped data by its repository name (data/...), not this machine's absolute path
        "config": {k: shipped.portable(v) for k, v in dataclasses.asdict(cfg).items()},
        "resolved_hparams": hparams,
        "param_set": cfg.param_set(),
        "n_params": int(sum(p.numel() for p in params)),
        "param_tensors": len(params),
        "pairs": len(examples),
        "data": reports["train"],
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "seconds_total": seconds,
        "seconds_load": t_load,
        **{k: v for k, v in info.items() if k != "lemma_6_2"},
        "versions": versions("transformers", "peft", "tokenizers"),
        "git_sha": git_sha(),
    }
    summary |= {"lemma_6_2": info["lemma_6_2"], "timing": {
        k: meta[k] for k in ("seconds_total", "seconds_load", "seconds_grads_per_pair",
                             "seconds_verify_per_pair_objective", "seconds_batch_step",
                             "n_params", "device") if k in meta
    }}  # fmt: skip
    with writing(out_dir):
        table = _write(cfg, out_dir, df, texts, summary, meta, existing)
    print(format_summary(summary))
    print(
        f"[diagnose] {len(examples)} pairs × {len(cfg.objective)} objectives, "
        f"{meta['n_params']:,} parameters ({cfg.param_set()}): {seconds:.1f} s "
        f"({info['seconds_grads_per_pair']:.2f} s/pair for the gradients"
        + (
            f", {info['seconds_verify_per_pair_objective']:.2f} s per pair and objective verified"
            if cfg.verify
            else ""
        )
        + f") → {table}",
        file=sys.stderr,
    )
    return {**summary, "out_dir": str(out_dir)}


def _write(cfg, out_dir: Path, df, texts: dict, summary: dict, meta: dict, existing) -> Path:
    """The outputs, each written atomically (a stale table of the other format removed)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    table = out_dir / f"pairs.{cfg.format}"
    if cfg.format == "csv":
        atomic_write(table, lambda p: df.to_csv(p, index=False, float_format="%.9g"))
    else:
        atomic_write(table, lambda p: df.to_parquet(p, index=False))
    for stale in existing:
        if out_dir / stale != table:
            (out_dir / stale).unlink()
    lines = "".join(json.dumps({"pair": k, **v}) + "\n" for k, v in texts.items())
    atomic_write(out_dir / "texts.jsonl", lambda p: p.write_text(lines, encoding="utf-8"))
    for name, obj in (("summary.json", summary), ("config.json", meta)):
        text = json.dumps(_no_nan(obj), indent=1, default=_json_default) + "\n"
        atomic_write(out_dir / name, lambda p, t=text: p.write_text(t, encoding="utf-8"))
    if cfg.plot:
        from llm.diagnose.plot import draw

        draw(df, out_dir / "diagnose.png")
    return table


def _no_nan(v):
    """NaN → None (JSON null), recursively: undefined statistics (e.g. an AUC with one class)."""
    if isinstance(v, dict):
        return {k: _no_nan(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_no_nan(x) for x in v]
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def _json_default(v):
    if isinstance(v, (np.floating, np.integer, np.bool_)):
        return v.item()
    if isinstance(v, Path):
        return str(v)
    raise TypeError(type(v).__name__)


def parse(argv: list[str] | None = None) -> DiagnoseConfig:
    """The command line's ``DiagnoseConfig``: HF/TRL spellings translated (``llm.flags``, as
    for ``llm.train``), parsed by tyro, then validated here (a ``UserError`` naming the first
    invalid field as the user typed it, not tyro's error box)."""
    from llm.flag_cli import parse_config
    from llm.flags import DIAGNOSE

    argv = sys.argv[1:] if argv is None else argv
    return parse_config(argv, DIAGNOSE, __doc__, validate)


def _parse_and_run(argv: list[str]) -> dict:
    from llm.flag_cli import spelled_flags, spoken_errors
    from llm.flags import DIAGNOSE

    cfg = parse(argv)
    with spoken_errors(spelled_flags(argv, DIAGNOSE)):  # errors name the flags as typed
        return run(cfg)


def main(argv: list[str] | None = None) -> int:
    """The command line: parse, run (which prints the summary) and return the exit code under
    the error contract (``runio.cli_entry``): user errors print one line and give 2
    (``--debug``: traceback)."""
    return cli_entry(_parse_and_run, argv)
