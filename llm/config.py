"""The LLM harness's typed configuration (one dataclass; tyro turns it into the CLI)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import objectives
from llm import shipped
from llm.options import DataOptions, LoraOptions, ModelOptions
from rounds.options import RoundOptions
from runio import UserError, config_hash, tracking, validation_deferred
from runio.options import RunOptions
from runio.validate import check_types


@dataclass(frozen=True)
class TrainConfig(RunOptions, RoundOptions, LoraOptions, DataOptions, ModelOptions):
    """Train a causal LM with a registry objective: on offline preference pairs, or in Algorithm
    1's rounds. The round and run knobs (``rounds.RoundOptions``, ``runio.RunOptions``) are
    shared with ``toy.BanditConfig``, the model/data/LoRA options (``llm.options``) with
    ``llm.diagnose.DiagnoseConfig``: same names, types, meanings and help."""

    # world-specific defaults of shared knobs (rounds.options / runio.options SCALE_DEFAULTS)
    mode: Literal["pairs", "on_policy", "offline", "hybrid"] = "pairs"
    """pairs: train on the offline preference pairs of --data (the default). on_policy / offline
    / hybrid: Algorithm 1 rounds on the prompts of --prompts, sampling N responses per prompt
    from the current policy / the frozen reference / a mixture (see llm.onpolicy). The pairs-only
    fields (data, eval_data, batch_size, grad_accum, epochs, gen_*) are then unused (TRL's GRPO
    flags: llm.rounds_flags)."""
    rounds: int = 10
    prompts_per_round: int = 8
    samples_per_prompt: int = 4
    steps_per_round: int = 1
    lr: float = 1e-4
    eval_every: int = 0

    eval_data: str | None = "auto"
    """Held-out data for evaluation (same formats as --data); '' for none. auto: the shipped
    test set with the shipped --data; with your own --data, its test split (--eval-data-split,
    default test) when it has one (a dataset directory or hub dataset), else no evaluation
    (llm.eval_source; config.json's resolved_eval says which)."""
    eval_data_split: str | None = None
    """Split of --eval-data when it is a DatasetDict directory or a hub dataset (None: the
    --data-split); with --eval-data auto, the split of --data to evaluate on (None: test)."""
    objective: str = "dpo"
    """Registry name of the loss (pairwise or chosen-only objectives; see objectives.OBJECTIVES)."""
    ref: Literal["auto", "copy", "adapter", "precomputed"] = "auto"
    """Reference for objectives that need one: a frozen copy, the LoRA base model with adapters
    disabled, or log-probs precomputed once and cached on disk. auto = adapter under LoRA, else
    copy. Reference-free objectives load none."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    warmup_steps: int = 0
    """Linear warm-up steps from 0 to lr."""
    warmup_ratio: float | None = None
    """Warm-up as a fraction of the total steps instead: ceil(ratio × total) steps (HF's
    warmup_ratio; excludes --warmup-steps)."""
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
    """Stop after this many optimiser steps (0: run all epochs; rounds modes: all rounds, the
    last round cut to the steps left)."""
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
    log_every: int = 1
    """Append a metrics.jsonl record every this many steps."""
    eval_batch_size: int = 8
    """Pairs per evaluation batch."""
    gen_examples: int = 16
    """Held-out prompts answered greedily and scored with BLEU-4 / ROUGE-L at the end."""
    gen_max_new_tokens: int = 48
    """Maximum generated tokens per prompt."""
    save_every: int = 0
    """Checkpoint (model or adapter, optimiser, scheduler, RNG, data position) every this many
    steps (rounds modes: every this many rounds, at the round's end); 0: none."""
    dry_run: bool = False
    """Check the config and every data row (and the model's position limit) without building the
    model or training: prints counts per problem; exit code 2 if training would fail."""
    save_final: bool = True
    """Save the trained model (or adapter) and tokenizer to runs/<name>/final."""
    # ---- on-policy rounds (paper A, Algorithm 1): modes on_policy / offline / hybrid ----------
    prompts: str = shipped.PROMPTS
    """Rounds modes: prompt-only file (rows with a ``prompt`` string or message list; same formats
    as --data). The default is the shipped Shakespeare prompts (``python -m llm.make_prompts``)."""
    reward: str | tuple[str, ...] = "length_min"
    """Rounds modes: length_min (r = -len), length_mode (r = -|len - m|), length_skew (r = -len),
    where len counts response tokens without EOS; or ``module:function`` (ours or TRL's
    signature); or a local sequence-classification reward model directory (see llm.rewards).
    Several: their weighted sum (--reward-weights; llm.reward_fns)."""
    reward_args: tuple[str, ...] = ()
    """key=value arguments of the reward, e.g. m=20 for length_mode (of the built-in ones)."""
    reward_weights: tuple[float, ...] | None = None
    """With several --reward: one weight each (TRL's reward_weights); None: all 1."""
    micro_prompts: int = 0
    """Prompts (with all their N samples) per forward/backward micro-batch within a step; the
    gradients are accumulated, so the step equals one full batch. 0: all P at once (with
    several processes: all of a process's P/W)."""
    sample_shards: int = 0
    """Sample a round's P prompts in this many equal shards, each one generate call seeded by
    (seed, round, shard) (llm.shards); the samples depend on it, not on the process count.
    0: one shard per process (W processes then equal one process with --sample-shards W)."""
    temperature: float = 1.0
    """Sampling temperature. Log-probs are the model's own (temperature 1), except for grpo and
    rloo, whose log-probs are at this temperature (TRL's online trainers)."""
    top_k: int = 0
    """Sample among the k most likely tokens; 0: no top-k."""
    top_p: float = 1.0
    """Nucleus sampling mass; 1: no top-p."""
    max_new_tokens: int = 32
    """Generated tokens per response at most (a response stops at EOS, which it includes)."""
    eval_prompts: int = 0
    """At the end of a round when an evaluation is due (eval_every; always after the last), sample
    N responses from the current policy for the first this-many prompts of the file and log
    eval/reward/mean and eval/response/length_mean (the policy's own behaviour, also in offline
    mode); 0: none."""
    generations_per_round: int = 4
    """Samples per round written to generations.jsonl (the first prompts' samples; a round has
    prompts_per_round × samples_per_prompt, and a larger value writes them all)."""
    reward_batch_size: int = 16
    """Responses per forward of a reward model."""

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
        skip = NOT_RESULTS + (ROUNDS_FIELDS if self.mode == "pairs" else ())
        fields = dataclasses.asdict(self)
        source = self.eval_source()  # what is evaluated, not the word "auto"
        fields.update(eval_data=source.path, eval_data_split=source.split)
        resolved = {
            k: shipped.portable(v) if k in PATH_FIELDS else v
            for k, v in fields.items()
            if k not in skip
            and not (k in UNSET_NOT_HASHED and v is None)
            and not (k in NEW_AT_DEFAULT and v == NEW_AT_DEFAULT[k])
        }
        tag = config_hash({**resolved, "resolved_hparams": self.resolved_hparams()})
        mode = "" if self.mode == "pairs" else f"_{self.mode}"
        lora = "_lora" if self.lora else ""
        return f"{self.objective}{hp}{mode}_{model}{lora}_s{self.seed}_{tag}"

    def eval_source(self):
        """What the pairs mode evaluates on: ``--eval-data`` resolved (``llm.eval_source``)."""
        from llm.eval_source import resolve

        return resolve(self)

    def resolved_hparams(self) -> dict[str, object]:
        """The hyperparameters the objective uses: registry defaults with ``hp`` applied."""
        return {**objectives.get(self.objective).defaults, **self.hparams()}

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)


NOT_RESULTS = ("name", "out_dir", "progress", "resume", "overwrite", "dry_run", "report_to", "plot")
"""Fields that do not change a run's results (left out of the automatic name's hash and of the
resume comparison)."""

UNSET_NOT_HASHED = ("eval_data_split", "warmup_ratio", "reward_weights")
"""Optional fields whose None means "as another field" (the eval split: --data-split's; the
warm-up: --warmup-steps): they enter a run's name hash only when set."""

NEW_AT_DEFAULT = {"pair_ties": "drop", "sample_shards": 0}
"""Knobs added after runs were named: at their default they stay out of the name hash, so a run
named before keeps its name (and resumes)."""

PATH_FIELDS = ("data", "eval_data", "prompts")
"""Fields hashed in their portable form (``llm.shipped.portable``: the shipped files by their
repository-relative names)."""

ROUNDS_FIELDS = (
    "prompts", "reward", "reward_args", "reward_weights", "rounds", "prompts_per_round",
    "samples_per_prompt", "steps_per_round", "micro_prompts", "sample_shards", "pair_threshold",
    "pair_ties",
    "kl_penalty", "kl_reward", "baseline", "baseline_decay", "offline_fraction", "temperature",
    "top_k", "top_p", "max_new_tokens", "generations_per_round", "reward_batch_size",
    "eval_prompts", "mode",
)  # fmt: skip
"""Fields of the rounds modes only: a pairs run does not use them, so they are left out of its
name hash (changing them cannot change its results)."""
ROUNDS_MODES = ("on_policy", "offline", "hybrid")


def _require(ok: bool, field_name: str, message: str) -> None:
    if not ok:
        raise UserError(f"TrainConfig.{field_name}: {message}")


def _finite(c: TrainConfig) -> None:
    for f in dataclasses.fields(c):
        value = getattr(c, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"TrainConfig.{f.name}: must be a finite number, got {value}")


def validate(c: TrainConfig) -> None:
    """Raise a ``UserError`` naming the first invalid field, its value and what is accepted:
    first each field's type against its annotation (``runio.validate.check_types``: whole
    numbers for integers, one of the choices, a sequence where one is expected), then the
    values."""
    check_types(c)
    _require(
        c.objective in objectives.OBJECTIVES,
        "objective",
        f"unknown {c.objective!r}; choose from {sorted(objectives.OBJECTIVES)}",
    )
    obj = objectives.OBJECTIVES[c.objective]
    offline = sorted(k for k, o in objectives.OBJECTIVES.items() if o.data != "groups")
    _require(
        c.mode != "pairs" or obj.data != "groups",
        "objective",
        f"{c.objective!r} consumes on-policy scored groups (data='groups'), not offline pairs; "
        f"choose from {offline}, or a rounds mode (--mode on_policy --prompts FILE)",
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
    ratio = c.warmup_ratio
    _require(ratio is None or 0 <= ratio <= 1, "warmup_ratio", f"must be in [0, 1], got {ratio}")
    _require(ratio is None or not c.warmup_steps, "warmup_ratio", "excludes --warmup-steps")
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
    for name in ("resume", "report_to"):  # out_dir='' writes nothing: nothing to resume/track
        wanted = getattr(c, name) not in (False, "none")
        _require(
            bool(c.out_dir) or not wanted, name, "needs an out_dir (out_dir='' writes nothing)"
        )
    untrackable = tracking.problem(c.report_to)  # unknown name, or its package missing
    _require(untrackable is None, "report_to", str(untrackable))
    _require(
        c.ref != "adapter" or c.lora, "ref", "'adapter' needs --lora (the base model is the ref)"
    )
    _check_objective_inputs(c, obj)
    if c.mode in ROUNDS_MODES:
        validate_rounds(c)
    else:
        _check_full_batch_pairs(c, obj)


BATCH_COUPLED_HELP = (
    "is batch-coupled (a pair's loss and gradient depend on the other pairs of its batch), so "
    "a step split into micro-batches is not the step of the full batch"
)


def _check_full_batch_pairs(c: TrainConfig, obj: objectives.Objective) -> None:
    """A batch-coupled objective (``Objective.batch_coupled``: AOT) in the pairs mode needs each
    step in one micro-batch on one process: refused with --grad-accum > 1 or when the launcher
    asked for several processes (``llm.distributed.requested_processes``)."""
    if not obj.batch_coupled:
        return
    what = f"{c.objective!r} {BATCH_COUPLED_HELP}"
    _require(
        c.grad_accum == 1,
        "grad_accum",
        f"{what}; use --grad-accum 1 with --batch-size {c.batch_size * c.grad_accum} instead",
    )
    from llm.distributed import requested_processes

    asked = requested_processes()
    if asked is not None and asked.count > 1:
        raise UserError(
            f"TrainConfig.objective: {what}; the launcher asks for {asked.count} processes "
            f"({asked.source}): run it in one process"
        )


def _check_objective_inputs(c: TrainConfig, obj: objectives.Objective) -> None:
    """Inputs a hyperparameter requires (``required_inputs``) that this mode or reference
    cannot give: KTO's mismatched-pair log-probs (``z0=mismatched``) need a reference model that
    can score new rows, and are not built in the rounds modes."""
    if "kl_logps" not in obj.required_inputs(c.hparams()):
        return
    _require(
        c.mode not in ROUNDS_MODES,
        "hp",
        f"z0=mismatched is not computed in --mode {c.mode} (a round's pairs are within one "
        "prompt's samples; no mismatched prompt-completion rows are scored); use --hp z0=batch "
        "or --mode pairs",
    )
    from llm.reference import PRECOMPUTED_NEW_ROWS

    _require(c.ref != "precomputed" or c.lora, "ref", PRECOMPUTED_NEW_ROWS)


def validate_rounds(c: TrainConfig) -> None:
    """The rounds modes' fields (``UserError`` naming the first invalid one)."""
    _require(bool(c.prompts and c.prompts.strip()), "prompts", f"--mode {c.mode} needs --prompts")
    for name in ("rounds", "prompts_per_round", "steps_per_round", "max_new_tokens"):
        value = getattr(c, name)
        _require(value >= 1, name, f"must be at least 1, got {value}")
    _require(c.reward_batch_size >= 1, "reward_batch_size", "must be at least 1")
    n = c.samples_per_prompt
    _require(n >= 2, "samples_per_prompt", f"must be at least 2, got {n}")
    for name in ("micro_prompts", "sample_shards", "generations_per_round", "top_k",
                 "eval_prompts"):  # fmt: skip
        _require(getattr(c, name) >= 0, name, f"must be non-negative, got {getattr(c, name)}")
    _require(
        c.prompts_per_round % (c.sample_shards or 1) == 0,
        "sample_shards",
        f"{c.sample_shards} does not divide prompts_per_round={c.prompts_per_round}",
    )
    for name in ("pair_threshold", "kl_penalty", "kl_reward"):
        _require(getattr(c, name) >= 0, name, f"must be non-negative, got {getattr(c, name)}")
    _require(0 <= c.offline_fraction <= 1, "offline_fraction", "must be in [0, 1]")
    _require(0 <= c.baseline_decay < 1, "baseline_decay", "must be in [0, 1)")
    _require(c.temperature > 0, "temperature", f"must be positive, got {c.temperature}")
    _require(0 < c.top_p <= 1, "top_p", f"must be in (0, 1], got {c.top_p}")
    _require(
        c.ref != "precomputed",
        "ref",
        "'precomputed' reference log-probs make no sense on-policy (the samples are new every "
        "round); use --ref copy, adapter (with --lora) or auto",
    )
    _require(
        c.max_prompt_len + c.max_new_tokens <= c.max_len,
        "max_new_tokens",
        f"max_prompt_len + max_new_tokens = {c.max_prompt_len + c.max_new_tokens} exceeds "
        f"max_len={c.max_len}",
    )
    obj = objectives.OBJECTIVES[c.objective]
    _require(
        not (obj.batch_coupled and 0 < c.micro_prompts < c.prompts_per_round),
        "micro_prompts",
        f"{c.objective!r} {BATCH_COUPLED_HELP}; use --micro-prompts 0 (all "
        f"{c.prompts_per_round} prompts at once)",
    )
    from llm.reward_fns import check_rewards
    from llm.rewards import reward_gap_bound  # nothing is loaded

    check_rewards(c.reward, c.reward_args, c.reward_weights)
    one = isinstance(c.reward, str)
    gap = reward_gap_bound(c.reward, c.reward_args, c.max_new_tokens) if one else None
    if obj.data != "groups" and c.kl_reward == 0 and gap is not None:
        _require(
            gap > c.pair_threshold,
            "pair_threshold",
            f"{c.pair_threshold:g} is not below the largest reward gap {c.reward} can give with "
            f"max_new_tokens={c.max_new_tokens} ({gap:g}): no pair can ever form, so "
            f"{c.objective!r} would never train; lower --pair-threshold",
        )


def _plain_name(name: str) -> bool:
    return bool(name) and "/" not in name and "\\" not in name and name not in (".", "..")
