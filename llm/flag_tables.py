"""The tables behind ``llm.flags``: which Hugging Face / TRL flag spellings ``llm.train`` and
``llm.diagnose`` accept and what each becomes, which have no counterpart (a one-line error
naming the equivalent), and the ``--help`` section listing them (``help_section``)."""

from __future__ import annotations

ALIASES = {
    "model_name_or_path": "model",
    "dataset_name": "data",
    "learning_rate": "lr",
    "per_device_train_batch_size": "batch_size",
    "per_device_eval_batch_size": "eval_batch_size",
    "gradient_accumulation_steps": "grad_accum",
    "max_length": "max_len",
    "max_prompt_length": "max_prompt_len",
    "output_dir": "out_dir",
    "use_peft": "lora",
    "lora_target_modules": "lora_targets",
    "lr_scheduler_type": "lr_scheduler",
    "dataset_split": "data_split",
    "dataset_train_split": "data_split",
    "dataset_test_split": "eval_data_split",
}
"""HF/TRL flag → our field, the same meaning (the value passes unchanged)."""

STEP_FLAGS = {"save_steps": "save_every", "logging_steps": "log_every", "eval_steps": "eval_every"}
"""HF's step intervals → ours (whole numbers; HF's fraction-of-the-total-steps form is refused)."""

LOSS_TYPES = {
    "sigmoid": ("dpo", ()),
    "sigmoid_norm": ("dpo", ("length_norm=mean",)),
    "ipo": ("ipo", ("length_norm=mean",)),
    "sft": ("sft", ("length_norm=mean",)),
    "kto": ("kto", ("form=unpaired", "z0=mismatched")),
}
"""TRL ``loss_type`` → (registry objective, the hyperparameters of TRL's convention). The
registry's own spelling (``--objective ipo``, ``--objective kto``) keeps the paper's convention;
the other TRL DPO loss types are registry names with TRL's convention already."""

ROUNDS_KTO = ("form=unpaired",)
"""``--loss_type kto`` in the rounds modes (and ``llm.diagnose``): TRL's mismatched-pair z0 is
not computed there, so z0 stays the batch's (the note ``KTO_Z0_NOTE`` says so)."""
KTO_Z0_NOTE = (
    "--loss_type kto: TRL's z0 from mismatched prompt-completion pairs is not computed {where}; "
    "z0 is {z0} (form=unpaired as TRL's)"
)

HP_FLAGS = {
    "beta": ("beta", 0.1, {"ipo": "tau", "orpo": "lam"}),
    "label_smoothing": ("eps", 0.0, {"grpo": None}),
    "discopop_tau": (None, 0.05, {"discopop": "tau"}),
    "desirable_weight": ("lam_d", 1.0, {}),
    "undesirable_weight": ("lam_u", 1.0, {}),
}
"""TRL's loss hyperparameter flags → (the registry key of every objective that has it, TRL's
default, {objective: its own key, or None where the key means something else: grpo's eps is its
std floor, not label smoothing}). TRL's β for IPO is our τ and for ORPO our λ. A flag no
chosen objective takes is an error, unless it holds TRL's default (TRL ignores it there too)."""

BOOL_FLAGS = {
    "bf16": ("precision", "bf16", "fp32"),
    "precompute_ref_log_probs": ("ref", "precomputed", None),
}
"""HF/TRL booleans → (our field, its value when true, when false: None = leave unset)."""

STRATEGIES = {
    "eval_strategy": ("eval_every", {"no": ["--eval-data", ""]}),
    "evaluation_strategy": ("eval_every", {"no": ["--eval-data", ""]}),
    "save_strategy": ("save_every", {"no": ["--save-every", "0"]}),
    "logging_strategy": ("log_every", {}),
}
"""HF's *_strategy flags: "steps" is what the *-every flags do (accepted, nothing to set); the
listed values translate; "epoch" (and any other) is an error naming the *-every flag."""

NO_COUNTERPART = {
    "fp16": "fp16 is not supported; use --bf16 (--precision bf16) or --precision fp32",
    "tf32": "use --precision fp32 (TF32 matmuls are torch's setting, not a flag here)",
    "run_name": "the run's name is --name (its directory under --out-dir, also the trackers' run "
    "name)",
    "dataset_config": "save the configuration locally first (datasets.load_dataset(name, config)"
    ".save_to_disk(DIR)) and give --data DIR",
    "dtype": "weights load in fp32; --precision bf16 trains under bf16 autocast",
    "torch_dtype": "weights load in fp32; --precision bf16 trains under bf16 autocast",
    "load_in_4bit": "quantised loading is not supported; a GGUF file loads with --gguf-file",
    "load_in_8bit": "quantised loading is not supported; a GGUF file loads with --gguf-file",
    "loss_weights": "TRL's weighted combinations of loss types have no counterpart here",
    "rpo_alpha": "RPO's NLL term has no counterpart here (see --objective orpo, asft)",
}
"""HF/TRL flags that have no counterpart: the one-line error's hint."""

ROUNDS_ONLY = {"max_completion_length": "max_new_tokens"}
"""TRL flags of generating trainers (GRPO, RLOO): ours in the rounds modes; in the pairs mode
responses are cut to fit --max-len, so the flag is an error there."""

FLOAT_EPOCHS = "num_train_epochs"
SAME_NAMES = (
    "max_steps", "seed", "warmup_steps", "weight_decay", "max_grad_norm", "gradient_checkpointing",
    "lora_r", "lora_alpha", "lora_dropout", "report_to", "disable_dropout",
)  # fmt: skip
"""HF/TRL flags whose names are ours already (snake_case spellings accepted)."""


def _dash(name: str) -> str:
    return "--" + name.replace("_", "-")


def help_section(fields: set[str], tool: str, mismatched: bool = True) -> str:
    """The ``--help`` section listing the HF/TRL spellings ``tool`` accepts (those whose target
    is one of ``fields``) and the ones that are errors here; ``mismatched``: whether the tool
    computes KTO's mismatched-pair z0 (llm.train's pairs mode)."""
    rows = [f"--{k} = {_dash(v)}" for k, v in ALIASES.items() if v in fields]
    if "epochs" in fields:
        rows.append("--num_train_epochs N = --epochs N (a whole number, 3.0 too)")
    for k, v in STEP_FLAGS.items():
        if v in fields:
            rows.append(f"--{k} N = {_dash(v)} N (whole steps)")
    if "warmup_ratio" in fields:
        rows.append("--warmup_ratio R, --warmup_steps R < 1 = --warmup-ratio R")
    for k, (field, on, off) in BOOL_FLAGS.items():
        if field in fields:
            rows.append(f"--{k} [true|false] = {_dash(field)} {on}" + (f" / {off}" if off else ""))
    if "eval_every" in fields:
        rows.append("--eval_strategy steps|no, --save_strategy steps|no, --logging_strategy steps")
    if "max_new_tokens" in fields:
        rows.append("--max_completion_length N = --max-new-tokens N (rounds modes)")
        rows.append(
            "rounds modes (TRL's GRPO, llm.rounds_flags): --dataset_name/--data F = --prompts F, "
            "--num_generations N = --samples-per-prompt N, --num_iterations T = "
            "--steps-per-round T, --per_device_train_batch_size B = --prompts-per-round B/N, "
            "--beta X = --hp beta=X or --kl-penalty X, --epsilon X = --hp clip_eps=X, "
            "--max_steps S: S updates in all"
        )
    for t, (o, hp) in LOSS_TYPES.items():
        also = ""
        if t == "kto" and mismatched:
            also = " (rounds modes: z0=batch)"
        elif t == "kto":
            hp, also = ROUNDS_KTO, " (z0: the pair's own)"
        hp_text = f" --hp {' '.join(hp)}" if hp else ""
        rows.append(f"--loss_type {t} = --objective {o}{hp_text}{also}")
    rows.append("--loss_type T = --objective T (TRL's other loss types: registry names)")
    rows.append("--beta X = --hp beta=X (ipo: tau=X, orpo: lam=X)")
    rows.append("--label_smoothing X = --hp eps=X (robust, exo_pair, aot, aot_unpaired)")
    rows.append("--discopop_tau X = --hp tau=X (discopop)")
    rows.append("--desirable_weight X, --undesirable_weight X = --hp lam_d=X, lam_u=X (kto)")
    same = [n for n in SAME_NAMES if n in fields]
    text = (
        f"HF / TRL spellings {tool} accepts (--snake_case or --kebab-case, --flag=value too):\n"
        + "".join(f"    {r}\n" for r in rows)
        + f"\nAlready named as in HF/TRL: {', '.join(same)}. "
        + f"Refused with the equivalent named: {', '.join('--' + k for k in NO_COUNTERPART)}."
    )
    return text
