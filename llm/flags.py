"""Flag names people already type: Hugging Face / TRL spellings as aliases of ``llm.train``'s
flags, and "did you mean" for unknown ones. ``translate(argv)`` rewrites the command line before
tyro parses it, so tyro's own flags stay exactly as they are.

Aliases (``--snake_case`` and ``--kebab-case`` both accepted, ``--flag=value`` too):

| HF / TRL flag | llm.train flag |
|---|---|
| model_name_or_path | model |
| dataset_name | data |
| learning_rate | lr |
| per_device_train_batch_size | batch_size |
| gradient_accumulation_steps | grad_accum |
| num_train_epochs | epochs |
| max_length | max_len |
| max_prompt_length | max_prompt_len |
| output_dir | out_dir |
| loss_type | objective |
| use_peft | lora |
| dataset_split, dataset_train_split | data_split |
| dataset_test_split | eval_data_split |
| beta X | hp beta=X |
| bf16 [true/false] | precision bf16 / fp32 |

``max_steps``, ``seed``, ``gradient_checkpointing``, ``lora_r``, ``lora_alpha`` and
``report_to`` (one of none, tensorboard, wandb) already have TRL's / HF's names (snake_case
spellings are accepted as well: ``--report_to wandb`` is ``--report-to wandb``).

Values: ``--loss_type`` takes TRL's names too (``LOSS_TYPES``: sigmoid → dpo, sigmoid_norm →
dpo with length_norm=mean, sft → sft with length_norm=mean; the others are registry names), one
at a time (TRL's weighted combinations have no counterpart). ``--num_train_epochs`` takes a whole
number, also written 3.0; a fraction is an error (use --max-steps). Every ``--hp`` value, and
those ``--beta`` and ``--loss_type`` imply, end up in one ``--hp`` group (tyro keeps only the
last group; within it a later key=value wins).
"""

from __future__ import annotations

import dataclasses
import difflib

from runio import UserError

ALIASES = {
    "model_name_or_path": "model",
    "dataset_name": "data",
    "learning_rate": "lr",
    "per_device_train_batch_size": "batch_size",
    "gradient_accumulation_steps": "grad_accum",
    "num_train_epochs": "epochs",
    "max_length": "max_len",
    "max_prompt_length": "max_prompt_len",
    "output_dir": "out_dir",
    "loss_type": "objective",
    "use_peft": "lora",
    "dataset_split": "data_split",
    "dataset_train_split": "data_split",
    "dataset_test_split": "eval_data_split",
}
LOSS_TYPES = {
    "sigmoid": ("dpo", ()),
    "sigmoid_norm": ("dpo", ("length_norm=mean",)),
    "sft": ("sft", ("length_norm=mean",)),
}
"""TRL ``loss_type`` values that are not registry names: (objective, implied hyperparameters)."""
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


def _fields() -> dict[str, dataclasses.Field]:
    from llm.config import TrainConfig

    return {f.name: f for f in dataclasses.fields(TrainConfig)}


def _bool_value(argv: list[str], i: int) -> tuple[bool | None, int]:
    """An optional true/false after a boolean flag: (value or None, tokens consumed)."""
    if i + 1 < len(argv) and argv[i + 1].lower() in _TRUE + _FALSE:
        return argv[i + 1].lower() in _TRUE, 1
    return None, 0


def _values(argv: list[str], i: int, inline: str | None) -> list[str]:
    """The values of the flag at ``argv[i]``: its ``=value``, or the tokens up to the next flag."""
    if inline is not None:
        return [inline]
    j = i + 1
    while j < len(argv) and not argv[j].startswith("--"):
        j += 1
    return argv[i + 1 : j]


def _epochs(value: str) -> str:
    try:
        epochs = float(value)
    except ValueError:
        return value  # tyro reports it
    if not epochs.is_integer():
        raise UserError(
            f"--num_train_epochs {value}: fractional epochs have no counterpart here (whole "
            "passes only); use --max-steps for a partial pass"
        )
    return str(int(epochs))


def translate(argv: list[str]) -> list[str]:
    """``argv`` with HF/TRL spellings rewritten to this CLI's; ``UserError`` with a "did you
    mean" for a flag that is neither."""
    fields = _fields()
    known = set(fields) | set(ALIASES) | {"beta", "bf16", "help", "h"}
    out: list[str] = []
    hp: list[str] = []  # every --hp value, in order, emitted as one group at the end
    i = 0
    while i < len(argv):
        token = argv[i]
        if not token.startswith("--") or token == "--":
            out.append(token)
            i += 1
            continue
        flag, eq, inline = token[2:].partition("=")
        name = flag.replace("-", "_")
        negated = name.startswith("no_") and name[3:] in fields
        if name not in known and not negated:
            choices = sorted({f.replace("_", "-") for f in known} - {"h"})
            close = difflib.get_close_matches(flag.replace("_", "-"), choices, n=1, cutoff=0.6)
            hint = f"; did you mean --{close[0]}?" if close else "; see --help"
            raise UserError(f"unknown flag --{flag}{hint}")
        if name == "beta":
            value = inline if eq else (argv[i + 1] if i + 1 < len(argv) else "")
            hp.append(f"beta={value}")
            i += 1 if eq else 2
            continue
        if name == "hp":
            values = _values(argv, i, inline if eq else None)
            hp += values
            i += 1 if eq else 1 + len(values)
            continue
        if name in ("loss_type", "objective"):
            values = _values(argv, i, inline if eq else None)
            i += 1 if eq else 1 + len(values)
            if len(values) > 1:
                raise UserError(
                    f"--{flag} {' '.join(values)}: one objective at a time (TRL's weighted "
                    "combinations of loss types have no counterpart here)"
                )
            if values and name == "loss_type":  # TRL's names (LOSS_TYPES) or registry names
                objective, implied = LOSS_TYPES.get(values[0], (values[0], ()))
                values, hp = [objective], [*implied, *hp]  # explicit --hp values win
            out += ["--objective", *values]
            continue
        if name == "num_train_epochs":
            value = inline if eq else (argv[i + 1] if i + 1 < len(argv) else "")
            out += ["--epochs", _epochs(value)]
            i += 1 if eq else 2
            continue
        if name == "bf16":
            value, used = (inline.lower() in _TRUE, 0) if eq else _bool_value(argv, i)
            out += ["--precision", "bf16" if value in (None, True) else "fp32"]
            i += 1 + used
            continue
        target = ALIASES.get(name, name)
        field = fields.get(target)
        if field is not None and field.type in ("bool", bool) and not negated:
            value, used = (inline.lower() in _TRUE, 0) if eq else _bool_value(argv, i)
            dashed = target.replace("_", "-")
            out.append(f"--{dashed}" if value in (None, True) else f"--no-{dashed}")
            i += 1 + used
            continue
        dashed = ("no-" if negated else "") + (target[3:] if negated else target).replace("_", "-")
        out.append(f"--{dashed}" + (f"={inline}" if eq else ""))
        i += 1
    return out + (["--hp", *hp] if hp else [])
