"""The LLM harness's typed configuration (one dataclass; tyro turns it into the CLI)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import objectives
from runio import UserError, config_hash, validation_deferred


@dataclass(frozen=True)
class TrainConfig:
    """Train a causal LM on offline preference pairs with a registry objective."""

    model: str = "tiny-gpt2"
    """``tiny-gpt2`` / ``tiny-llama`` (random init + a BPE tokenizer trained on --data, no
    download), a local model directory, or a hub id."""
    gguf_file: str | None = None
    """A GGUF file inside the --model directory to load (dequantised to fp32, converted once to a
    safetensors cache under --cache-dir)."""
    data: str = "data/shakespeare_prefs/train.jsonl"
    """Training pairs: .jsonl/.json/.csv/.parquet or a saved ``datasets`` directory."""
    eval_data: str | None = "data/shakespeare_prefs/test.jsonl"
    """Held-out pairs for evaluation (same formats); None for no evaluation."""
    data_split: str = "train"
    """Split to use when a ``datasets`` directory holds a DatasetDict."""
    objective: str = "dpo"
    """Registry name of the loss (pairwise or chosen-only objectives; see objectives.OBJECTIVES)."""
    hp: tuple[str, ...] = ()
    """Objective hyperparameters as key=value (e.g. beta=0.1); unset ones keep registry defaults."""
    max_len: int = 256
    """Maximum prompt + response tokens; responses are cut from the right to fit."""
    max_prompt_len: int = 128
    """Rows whose prompt has more tokens than this are invalid."""
    chat_template: Literal["auto", "on", "off"] = "auto"
    """Render rows with the tokenizer's chat template: auto = when it has one."""
    skip_invalid: bool = False
    """Skip invalid rows (reporting counts) instead of stopping with an error naming the row."""
    ref: Literal["auto", "copy", "adapter", "precomputed"] = "auto"
    """Reference for objectives that need one: a frozen copy, the LoRA base model with adapters
    disabled, or log-probs precomputed once and cached on disk. auto = adapter under LoRA, else
    copy. Reference-free objectives load none."""
    cache_dir: str = "~/.cache/modeseek"
    """Where precomputed reference log-probs and converted GGUF models are cached."""
    lora: bool = False
    """Train LoRA adapters (peft) instead of all weights."""
    lora_r: int = 8
    """LoRA rank."""
    lora_alpha: int = 16
    """LoRA scaling numerator (scale = alpha / r)."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA input."""
    lora_targets: tuple[str, ...] = ("all-linear",)
    """Module names to adapt (peft ``target_modules``); all-linear = every linear but the head."""
    lr: float = 1e-4
    """Peak AdamW learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    warmup_steps: int = 0
    """Linear warm-up steps from 0 to lr."""
    lr_scheduler: Literal["linear", "cosine", "constant_with_warmup"] = "linear"
    """Decay after warm-up (to 0 at the last step for linear/cosine)."""
    max_grad_norm: float = 1.0
    """Clip the global gradient norm to this; 0 disables clipping."""
    batch_size: int = 4
    """Pairs per micro-batch per process."""
    grad_accum: int = 1
    """Micro-batches per optimiser step. One step sees batch_size × grad_accum × processes
    pairs; the loss is the mean over them, as for one large batch."""
    epochs: int = 1
    """Passes over the training pairs (incomplete final global batches are dropped)."""
    max_steps: int = 0
    """Stop after this many optimiser steps (0: run all epochs)."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """bf16 autocast on GPU (auto = bf16 when CUDA supports it, else fp32). Log-probs are fp32."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward to save memory."""
    logps_chunk: int = 128
    """Sequence positions per LM-head chunk when computing log-probs."""
    logps_checkpoint_mb: float = 64.0
    """Recompute each chunk's fp32 logits in backward (saving their memory) when the batch's
    fp32 logits would exceed this many MB; below it keep them (faster). 0: always recompute."""
    disable_dropout: bool = True
    """Set every dropout probability to 0 (policy and reference see the same network)."""
    seed: int = 0
    """Seed for model init (tiny models), data order and dropout."""
    log_every: int = 1
    """Append a metrics.jsonl record every this many steps."""
    eval_every: int = 0
    """Evaluate every this many steps (and at step 0 and the end); 0: only at the end."""
    eval_batch_size: int = 8
    """Pairs per evaluation batch."""
    gen_examples: int = 16
    """Held-out prompts answered greedily and scored with BLEU-4 / ROUGE-L at the end."""
    gen_max_new_tokens: int = 48
    """Maximum generated tokens per prompt."""
    save_every: int = 0
    """Checkpoint (model or adapter, optimiser, scheduler, RNG, data position) every this many
    steps; 0: none."""
    resume: bool = False
    """Continue this run's directory from its latest complete checkpoint (a complete run is
    left as it is; a run killed before its first checkpoint restarts from step 0)."""
    overwrite: bool = False
    """Replace an existing run directory of the same name (without it, or --resume, an existing
    run is never touched)."""
    dry_run: bool = False
    """Check the config and every data row (and the model's position limit) without building the
    model or training: prints counts per problem; exit code 2 if training would fail."""
    save_final: bool = True
    """Save the trained model (or adapter) and tokenizer to runs/<name>/final."""
    name: str | None = None
    """Run name (directory under out_dir). None: derived from the objective, model and seed plus
    a short hash of the whole resolved config, so runs that differ in anything never share one."""
    out_dir: str = "runs"
    """Where runs/<name>/ is written."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self) -> None:
        if not validation_deferred():
            validate(self)

    def hparams(self) -> dict[str, object]:
        """``hp`` parsed into typed values (types from the registry defaults)."""
        return objectives.get(self.objective).parse_hparams(self.hp)

    def run_name(self) -> str:
        if self.name:
            return self.name
        model = Path(self.model.rstrip("/")).name
        hp = "".join(f"_{h.replace('=', '')}" for h in self.hp)
        resolved = {k: v for k, v in dataclasses.asdict(self).items() if k not in NOT_RESULTS}
        tag = config_hash({**resolved, "resolved_hparams": self.resolved_hparams()})
        return f"{self.objective}{hp}_{model}{'_lora' if self.lora else ''}_s{self.seed}_{tag}"

    def resolved_hparams(self) -> dict[str, object]:
        """The hyperparameters the objective uses: registry defaults with ``hp`` applied."""
        return {**objectives.get(self.objective).defaults, **self.hparams()}

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)


NOT_RESULTS = ("name", "out_dir", "progress", "resume", "overwrite", "dry_run")
"""Fields that do not change a run's results (left out of the automatic name's hash and of the
resume comparison)."""


def _require(ok: bool, field_name: str, message: str) -> None:
    if not ok:
        raise UserError(f"TrainConfig.{field_name}: {message}")


def _finite(c: TrainConfig) -> None:
    for f in dataclasses.fields(c):
        value = getattr(c, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"TrainConfig.{f.name}: must be a finite number, got {value}")


def validate(c: TrainConfig) -> None:
    """Raise a ``UserError`` naming the first invalid field, its value and what is accepted."""
    _require(
        c.objective in objectives.OBJECTIVES,
        "objective",
        f"unknown {c.objective!r}; choose from {sorted(objectives.OBJECTIVES)}",
    )
    obj = objectives.OBJECTIVES[c.objective]
    offline = sorted(k for k, o in objectives.OBJECTIVES.items() if o.data != "groups")
    _require(
        obj.data != "groups",
        "objective",
        f"{c.objective!r} consumes on-policy scored groups (data='groups'), not offline pairs; "
        f"choose from {offline}",
    )
    c.hparams()  # parses and range-checks every key=value (registry metadata)
    _finite(c)
    sizes = ("max_len", "max_prompt_len", "batch_size", "grad_accum", "epochs", "log_every")
    sizes += ("eval_batch_size", "gen_max_new_tokens", "lora_alpha")
    for name in sizes:
        value = getattr(c, name)
        _require(value >= 1, name, f"must be at least 1, got {value}")
    _require(c.seed >= 0, "seed", f"must be a non-negative integer, got {c.seed}")
    exclusive = c.resume + c.overwrite + c.dry_run <= 1
    _require(exclusive, "resume", "--resume, --overwrite and --dry-run exclude each other")
    _require(c.max_prompt_len < c.max_len, "max_prompt_len", "must be below max_len")
    for name in ("max_steps", "warmup_steps", "eval_every", "save_every", "gen_examples"):
        _require(getattr(c, name) >= 0, name, "must be non-negative")
    _require(c.lr > 0, "lr", f"must be positive, got {c.lr}")
    _require(c.weight_decay >= 0, "weight_decay", f"must be non-negative, got {c.weight_decay}")
    _require(0 <= c.lora_dropout < 1, "lora_dropout", f"must be in [0, 1), got {c.lora_dropout}")
    _require(c.max_grad_norm >= 0, "max_grad_norm", "must be non-negative")
    _require(bool(c.data.strip()), "data", "needs a data file")
    _require(
        c.name is None or _plain_name(c.name),
        "name",
        f"must be a plain directory name (no '/', not '.' or '..'), got {c.name!r}",
    )
    _require(c.logps_chunk >= 1, "logps_chunk", "must be at least 1")
    _require(c.logps_checkpoint_mb >= 0, "logps_checkpoint_mb", "must be non-negative")
    _require(c.lora_r >= 1, "lora_r", "must be at least 1")
    _require(
        c.ref != "adapter" or c.lora, "ref", "'adapter' needs --lora (the base model is the ref)"
    )


def _plain_name(name: str) -> bool:
    return bool(name) and "/" not in name and "\\" not in name and name not in (".", "..")
