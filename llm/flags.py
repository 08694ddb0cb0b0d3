"""Flag names people already type: Hugging Face / TRL spellings as aliases of ``llm.train``'s
and ``llm.diagnose``'s flags, and "did you mean" for unknown ones. ``translate(argv)`` rewrites
the command line before tyro parses it (tyro's own flags stay exactly as they are) and
remembers which flag the user typed for each field it set, so that an error about that field
names the user's flag (``llm.flag_cli.spoken_errors``). The tables are in ``llm.flag_tables``;
``--help`` lists them (``flag_tables.help_section``).

Aliases (``--snake_case`` and ``--kebab-case`` both accepted, ``--flag=value`` too):

| HF / TRL flag | ours | notes |
|---|---|---|
| model_name_or_path | model | |
| dataset_name | data | |
| dataset_split, dataset_train_split | data_split | |
| dataset_test_split | eval_data_split | with own --data and no --eval-data: its test split |
| learning_rate | lr | llm.train |
| per_device_train_batch_size, per_device_eval_batch_size | batch_size, eval_batch_size | |
| gradient_accumulation_steps | grad_accum | |
| num_train_epochs | epochs | a whole number (3.0 too); a fraction is an error |
| max_length, max_prompt_length | max_len, max_prompt_len | |
| output_dir | out_dir | runs go to <out_dir>/<name> |
| use_peft, lora_target_modules | lora, lora_targets | |
| lr_scheduler_type | lr_scheduler | linear, cosine, constant_with_warmup |
| save_steps, logging_steps, eval_steps | save_every, log_every, eval_every | whole steps |
| warmup_ratio; warmup_steps < 1 | warmup_ratio | ceil(ratio × total steps) |
| eval_strategy, save_strategy, logging_strategy | | steps: accepted; no: see below |
| bf16 [true/false] | precision bf16 / fp32 | |
| precompute_ref_log_probs | ref precomputed | |
| max_completion_length | max_new_tokens | rounds modes; an error in the pairs mode |
| loss_type | objective | TRL's names and conventions (below) |
| beta X | hp beta=X | ipo: tau=X (TRL's IPO β is τ); orpo: lam=X |
| label_smoothing X | hp eps=X | robust, exo_pair, aot, aot_unpaired |
| discopop_tau X | hp tau=X | discopop |
| desirable_weight, undesirable_weight | hp lam_d, lam_u | kto |

``--eval_strategy no`` is ``--eval-data ''``, ``--save_strategy no`` ``--save-every 0``; the
strategy ``epoch`` is an error (intervals are in steps here).

``max_steps``, ``seed``, ``warmup_steps``, ``weight_decay``, ``max_grad_norm``,
``gradient_checkpointing``, ``lora_r``, ``lora_alpha``, ``lora_dropout``, ``report_to`` and
``disable_dropout`` already have TRL's / HF's names. ``fp16``, ``run_name``, ``dataset_config``,
``dtype``, ``load_in_4bit``, ``loss_weights``, ... have no counterpart: a one-line error names
the nearest equivalent. A hyperparameter flag that no chosen objective takes is an error unless
it holds TRL's default (which TRL ignores there too).

``--loss_type`` means TRL's loss and TRL's convention; ``--objective`` the registry's (the
papers'):

| --loss_type | becomes | TRL's convention |
|---|---|---|
| sigmoid | dpo | summed log-probs |
| sigmoid_norm | dpo length_norm=mean | per-token means |
| ipo | ipo length_norm=mean, --beta as tau | TRL's DPOTrainer ipo: per-token means, β = τ |
| sft | sft length_norm=mean | per-token mean NLL |
| kto | kto form=unpaired z0=mismatched | TRL's KTOTrainer (responses unpaired, z0 mismatched) |
| others | the registry name | TRL's already |

In the rounds modes (and ``llm.diagnose``), where no mismatched pairs are scored, ``--loss_type
kto`` keeps z0=batch and says so in one line. One loss at a time (TRL's weighted combinations
have no counterpart). Every ``--hp`` value, and those the flags imply, end up in one ``--hp``
group (tyro keeps only the last group; within it a later key=value wins, so an explicit ``--hp``
beats what ``--loss_type`` implies).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib

from llm import rounds_flags
from llm.flag_tables import (
    ALIASES,
    BOOL_FLAGS,
    FLOAT_EPOCHS,
    HP_FLAGS,
    KTO_Z0_NOTE,
    LOSS_TYPES,
    NO_COUNTERPART,
    ROUNDS_KTO,
    ROUNDS_ONLY,
    STEP_FLAGS,
    STRATEGIES,
)
from runio import UserError

_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")
_SPECIAL = {"loss_type", "objective", "hp", "warmup_ratio", "warmup_steps", FLOAT_EPOCHS}
_SPECIAL |= {"help", "h"} | set(HP_FLAGS) | set(BOOL_FLAGS) | set(STEP_FLAGS) | set(STRATEGIES)
_SPECIAL |= set(ROUNDS_ONLY) | set(NO_COUNTERPART)


@dataclasses.dataclass(frozen=True)
class Tool:
    """A command line the aliases apply to."""

    name: str
    config: str
    """``module:Class`` of its config dataclass."""
    objectives: tuple[str, ...]
    """The default objective(s)."""
    several: bool = False
    """Whether --objective takes several names (llm.diagnose: each diagnosed separately)."""

    def cls(self) -> type:
        import importlib

        module, _, name = self.config.partition(":")
        return getattr(importlib.import_module(module), name)

    def fields(self) -> dict[str, dataclasses.Field]:
        return {f.name: f for f in dataclasses.fields(self.cls())}


TRAIN = Tool("llm.train", "llm.config:TrainConfig", ("dpo",))
DIAGNOSE = Tool("llm.diagnose", "llm.diagnose.config:DiagnoseConfig", ("dpo", "asft", "sft"), True)


@dataclasses.dataclass
class Translation:
    argv: list[str]
    """The command line in this tool's own flags."""
    spelled: dict[str, str]
    """Our field (``hp:<key>`` for a hyperparameter) → the flag the user typed for it."""
    notes: list[str]
    """One-line notes (where TRL's convention cannot be followed exactly)."""


def _values(argv: list[str], i: int, inline: str | None) -> list[str]:
    """The values of the flag at ``argv[i]``: its ``=value``, or the tokens up to the next flag."""
    if inline is not None:
        return [inline]
    j = i + 1
    while j < len(argv) and not argv[j].startswith("--"):
        j += 1
    return argv[i + 1 : j]


def _context(argv: list[str], tool: Tool) -> tuple[list[str], str]:
    """(the objectives the command line chooses, the mode)."""
    objectives, mode = list(tool.objectives), "pairs"
    for i, token in enumerate(argv):
        flag, eq, inline = token[2:].partition("=")
        name = flag.replace("-", "_") if token.startswith("--") else ""
        values = _values(argv, i, inline if eq else None)
        if name in ("objective", "loss_type") and values:
            trl = name == "loss_type"
            objectives = [LOSS_TYPES.get(v, (v, ()))[0] if trl else v for v in values]
        elif name == "mode" and values:
            mode = values[0]
    return objectives, mode


def _whole(flag: str, value: str, what: str) -> str:
    try:
        number = float(value)
    except ValueError:
        return value  # tyro reports it
    if not number.is_integer():
        raise UserError(f"--{flag} {value}: {what}")
    return str(int(number))


def _hp_key(flag: str, objective: str) -> str | None:
    import objectives

    key, _, special = HP_FLAGS[flag]
    if objective in special:
        return special[objective]
    known = objectives.OBJECTIVES.get(objective)
    return key if known is not None and key in known.defaults else None


def _hp_items(flag: str, value: str, chosen: list[str], tool: Tool) -> list[tuple[str, str]]:
    """(key, ``--hp`` item) of a TRL hyperparameter flag for the chosen objectives."""
    items = []
    for objective in chosen:
        key = _hp_key(flag, objective)
        if key is not None:
            items.append((key, f"{objective}.{key}={value}" if tool.several else f"{key}={value}"))
    if items:
        return items
    with contextlib.suppress(ValueError):
        if float(value) == HP_FLAGS[flag][1]:
            return []  # TRL's default, which TRL ignores for these losses too
    special = HP_FLAGS[flag][2]  # an objective mapped to None has the key in another meaning
    takers = {o for o, k in special.items() if k} | _objectives_with(HP_FLAGS[flag][0])
    takers = sorted(takers - {o for o, k in special.items() if k is None})
    raise UserError(
        f"--{flag} {value}: {', '.join(chosen)} has no such hyperparameter (TRL uses it only for "
        f"{', '.join(takers)}); drop it or choose one of those with --loss_type"
    )


def _objectives_with(key: str | None) -> set[str]:
    import objectives

    return {n for n, o in objectives.OBJECTIVES.items() if key is not None and key in o.defaults}


TRAIN_TARGETS = {
    **ALIASES, **STEP_FLAGS, **ROUNDS_ONLY, FLOAT_EPOCHS: "epochs", "warmup_ratio": "warmup_ratio",
    **{k: v[0] for k, v in BOOL_FLAGS.items()}, **{k: v[0] for k, v in STRATEGIES.items()},
}  # fmt: skip
"""Every HF/TRL flag llm.train accepts → its field (for the other tools' errors)."""
HINTS = {"learning_rate": "its predicted SGD step's size is --eta"}


def _unknown(flag: str, known: set[str], tool: Tool) -> UserError:
    name = flag.replace("-", "_")
    target = TRAIN_TARGETS.get(name)
    if target is not None:  # a flag of llm.train that this tool does not have
        hint = f" ({HINTS[name]})" if name in HINTS else ""
        ours = target.replace("_", "-")
        return UserError(f"--{flag} is llm.train's --{ours}; {tool.name} has none{hint}")
    choices = {f.replace("_", "-"): f for f in known - {"h"}}
    close = difflib.get_close_matches(flag.replace("_", "-"), sorted(choices), n=1, cutoff=0.6)
    if not close:
        return UserError(f"unknown flag --{flag}; see --help")
    ours = ALIASES.get(choices[close[0]]) or STEP_FLAGS.get(choices[close[0]])
    same = f" (= --{ours.replace('_', '-')})" if ours else ""
    return UserError(f"unknown flag --{flag}; did you mean --{close[0]}{same}?")


def translate_all(argv: list[str], tool: Tool = TRAIN) -> Translation:
    """``argv`` in ``tool``'s own flags, with what each alias set (see the module docstring);
    ``UserError`` for a flag that has no counterpart, or a "did you mean" for an unknown one."""
    fields = tool.fields()
    aliases = {k: v for k, v in ALIASES.items() if v in fields}
    known = set(fields) | set(aliases) | _SPECIAL
    chosen, mode = _context(argv, tool)
    out: list[str] = []
    hp: list[str] = []  # every --hp value, in order, emitted as one group at the end
    spelled: dict[str, str] = {}
    notes: list[str] = []
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
        values = _values(argv, i, inline if eq else None)
        one = values[0] if values else ""
        step = 1 if eq else 1 + min(len(values), 1)  # a flag with one value
        if tool is TRAIN and rounds_flags.apply(flag, one, argv, chosen, fields, mode, out, hp,
                                                spelled):  # fmt: skip
            i += step  # a GRPO flag of the rounds modes (llm.rounds_flags)
            continue
        if name not in known and not negated:
            raise _unknown(flag, known, tool)
        if name in NO_COUNTERPART:
            raise UserError(f"--{flag}: no counterpart here; {NO_COUNTERPART[name]}")
        if name in HP_FLAGS:
            for key, item in _hp_items(name, one, chosen, tool):
                hp.append(item)
                spelled[f"hp:{key}"] = f"--{flag}"
        elif name == "hp":
            hp += values
            step = 1 if eq else 1 + len(values)
        elif name in ("loss_type", "objective"):
            step = 1 if eq else 1 + len(values)
            if len(values) > 1 and (name == "loss_type" or not tool.several):
                raise UserError(
                    f"--{flag} {' '.join(values)}: one objective at a time (TRL's weighted "
                    "combinations of loss types have no counterpart here)"
                )
            if name == "loss_type":
                _spell(spelled, "objective", flag)
                values, implied = _loss_type(values, mode, tool, notes)
                hp = [*implied, *hp]  # explicit --hp values win
            out += ["--objective", *values]
        elif name == FLOAT_EPOCHS and "epochs" in fields:
            what = "fractional epochs have no counterpart here (whole passes only); use --max-steps"
            out += ["--epochs", _whole(flag, one, what)]
            _spell(spelled, "epochs", flag)
        elif name in STEP_FLAGS and STEP_FLAGS[name] in fields:
            what = "HF's fraction of the total steps has no counterpart here; give whole steps"
            out += [f"--{STEP_FLAGS[name].replace('_', '-')}", _whole(flag, one, what)]
            _spell(spelled, STEP_FLAGS[name], flag)
        elif name in ("warmup_ratio", "warmup_steps") and "warmup_ratio" in fields:
            ratio = name == "warmup_ratio" or _fraction(one)
            target = "warmup_ratio" if ratio else "warmup_steps"
            out += [f"--{target.replace('_', '-')}", one]
            _spell(spelled, target, flag)
        elif name in STRATEGIES and STRATEGIES[name][0] in fields:
            out += _strategy(flag, name, one)
        elif name in ROUNDS_ONLY and ROUNDS_ONLY[name] in fields:
            ours = "--" + ROUNDS_ONLY[name].replace("_", "-")
            if mode == "pairs":
                raise UserError(
                    f"--{flag}: no counterpart in the pairs mode (responses are cut to fit "
                    f"--max-len); in the rounds modes (--mode on_policy ...) it is {ours}"
                )
            out += [ours, one]
            _spell(spelled, ROUNDS_ONLY[name], flag)
        elif name in BOOL_FLAGS and BOOL_FLAGS[name][0] in fields:
            field, on, off = BOOL_FLAGS[name]
            value, step = _bool(inline if eq else None, argv, i)
            if value is not False or off is not None:
                out += [f"--{field}", on if value is not False else off]
            _spell(spelled, field, flag)
        elif name in known - set(fields) - set(aliases) - {"help", "h"}:
            raise _unknown(flag, set(), tool)  # a TRL flag of llm.train that this tool lacks
        else:
            target = aliases.get(name, name)
            _spell(spelled, target, flag)
            field = fields.get(target)
            if field is not None and field.type in ("bool", bool) and not negated:
                value, step = _bool(inline if eq else None, argv, i)
                dashed = target.replace("_", "-")
                out.append(f"--{dashed}" if value is not False else f"--no-{dashed}")
            else:  # the flag alone: its values follow as plain tokens
                bare = (target[3:] if negated else target).replace("_", "-")
                out.append(f"--{'no-' if negated else ''}{bare}" + (f"={inline}" if eq else ""))
                step = 1
        i += step
    return Translation(out + (["--hp", *hp] if hp else []), spelled, notes)


def _spell(spelled: dict[str, str], field: str, flag: str) -> None:
    """Remember that the user typed ``--flag`` for ``field`` (when it is not ours)."""
    if flag.replace("-", "_") != field:
        spelled[field] = f"--{flag}"


def _fraction(value: str) -> bool:
    """HF's ``warmup_steps`` below 1 is a ratio of the total steps (transformers ≥ 5)."""
    try:
        return 0 < float(value) < 1
    except ValueError:
        return False


def _bool(inline: str | None, argv: list[str], i: int) -> tuple[bool | None, int]:
    """(an optional true/false after a boolean flag, tokens consumed including the flag)."""
    if inline is not None:
        return inline.lower() in _TRUE, 1
    if i + 1 < len(argv) and argv[i + 1].lower() in _TRUE + _FALSE:
        return argv[i + 1].lower() in _TRUE, 2
    return None, 1


def _strategy(flag: str, name: str, value: str) -> list[str]:
    field, translated = STRATEGIES[name]
    if value == "steps":
        return []
    if value in translated:
        return list(translated[value])
    raise UserError(
        f"--{flag} {value}: no counterpart here; intervals are in steps: "
        f"--{field.replace('_', '-')} N (steps per epoch = training pairs // (batch size × "
        "gradient accumulation × processes))"
    )


def _loss_type(values: list[str], mode: str, tool: Tool, notes: list[str]):
    """(objective names, implied ``--hp`` items) of ``--loss_type`` values."""
    names, implied = [], []
    for value in values:
        objective, hp = LOSS_TYPES.get(value, (value, ()))
        no_mismatched = tool.several or mode != "pairs"
        if objective == "kto" and no_mismatched:
            hp = ROUNDS_KTO
            where = "by llm.diagnose" if tool.several else f"in --mode {mode}"
            z0 = "the pair's own" if tool.several else "the batch's (z0=batch)"
            notes.append(KTO_Z0_NOTE.format(where=where, z0=z0))
        names.append(objective)
        implied += [f"{objective}.{h}" if tool.several else h for h in hp]
    return names, implied


def translate(argv: list[str], tool: Tool = TRAIN) -> list[str]:
    """``argv`` with HF/TRL spellings rewritten to ``tool``'s flags (``translate_all``)."""
    return translate_all(argv, tool).argv
