"""The playground's controls as a command line: values → ``toy.train`` argv → config → run.

Every run goes through the command line's own parser (``toy.train.parse``), so a bad value gives
exactly the CLI's one-line error, and the reproduce box shows the very argv that was parsed:
``python -m toy.train <argv>`` builds the same ``BanditConfig``. Runs are ``toy.run`` with
``out_dir=''``: nothing is written to disk.

A run can be stopped from another thread (``stop``): the training thread gets a ``Stopped``
exception raised inside it (CPython's ``PyThreadState_SetAsyncExc``) and unwinds through
``toy.run``'s own clean-up, so the CPU is free again within a step instead of finishing an
abandoned run in the background.
"""

from __future__ import annotations

import ctypes
import dataclasses
import shlex
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

import objectives
from errors import UserError
from objectives.display import display_name
from toy.bandit import REWARDS
from toy.config import PRESETS, BanditConfig

MODES = ("on_policy", "offline", "hybrid")
POLICIES = ("mlp", "tabular")
BASELINES = ("group", "running")
REWARD_NAMES = tuple(REWARDS)

# (control name = BanditConfig field, its flag's value kind); the order is the argv's order
INT, FLOAT, CHOICE, OPTIONAL_INT = "int", "float", "choice", "optional-int"
FIELDS: dict[str, str] = {
    "objective": CHOICE,
    "mode": CHOICE,
    "offline_fraction": FLOAT,
    "reward": CHOICE,
    "policy": CHOICE,
    "lr": FLOAT,
    "rounds": INT,
    "prompts_per_round": INT,
    "samples_per_prompt": INT,
    "steps_per_round": INT,
    "n_train_contexts": OPTIONAL_INT,
    "minibatch_size": OPTIONAL_INT,
    "pair_threshold": FLOAT,
    "kl_penalty": FLOAT,
    "kl_reward": FLOAT,
    "baseline": CHOICE,
    "init_steps": INT,
    "dist_every": INT,
}
CONTROLS = ("hp", "seeds", *FIELDS)
"""Every control's name: the objective's hyperparameters and the seeds are text fields."""
ALWAYS = ("objective", "mode", "reward", "policy", "lr", "rounds", "prompts_per_round")
ALWAYS += ("samples_per_prompt", "steps_per_round", "n_train_contexts")
"""Flags the command line always carries; the others only when they differ from the default."""

_DEFAULT = BanditConfig(out_dir="")


def hp_defaults(objective: str) -> dict[str, object]:
    """The registry's hyperparameters of ``objective`` that a ``key=value`` can set."""
    obj = objectives.get(objective)
    return {k: v for k, v in obj.defaults.items() if obj.hp_rules[k].kind != "tensor-or-none"}


def _hp_text(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def hp_field(objective: str, hp: tuple[str, ...] = ()) -> str:
    """The hyperparameter text field: every settable hyperparameter as ``key=value``, the
    registry's default unless ``hp`` (a config's ``key=value`` items) sets it."""
    values = {k: _hp_text(v) for k, v in hp_defaults(objective).items()}
    for item in hp:
        key, _, raw = item.partition("=")
        values[key.strip()] = raw.strip()
    return " ".join(f"{k}={v}" for k, v in values.items())


def hp_help(objective: str) -> str:
    """Markdown: the objective's paper and each hyperparameter's accepted range and default."""
    obj = objectives.get(objective)
    kind = {"chosen": "chosen responses", "pairs": "preference pairs", "groups": "scored groups"}
    traits = [f"trains on {kind[obj.data]}"]
    traits.append("negative gradient" if obj.negative_gradient else "no negative gradient")
    traits.append("uses π_ref" if obj.needs_ref else "no reference model")
    lines = [f"**{display_name(objective)}** — {obj.paper}; {', '.join(traits)}."]
    for key, default in hp_defaults(objective).items():
        lines.append(f"- `{key}`: {obj.hp_rules[key].describe()} (default `{_hp_text(default)}`)")
    if len(lines) == 1:
        lines.append("- no hyperparameters")
    return "\n".join(lines)


def _hp_items(objective: str, text: str) -> list[str]:
    """The field's ``key=value`` items that differ from the registry's defaults (an item that
    cannot be read is kept, so the parser reports it)."""
    items = [t for t in str(text or "").replace(",", " ").split() if t]
    try:
        obj = objectives.get(objective)
    except UserError:
        return items  # the objective itself is reported by the parser
    kept = []
    for item in items:
        key, sep, raw = item.partition("=")
        try:
            known = bool(sep) and key in obj.defaults
            same = known and obj.hp_rules[key].parse(raw) == obj.defaults[key]
        except ValueError:
            same = False
        if not same:
            kept.append(item)
    return kept


def _number(name: str, kind: str, value: object) -> str | None:
    """A number control's text for its flag (None: leave the flag out). A value that is not an
    integer where one is needed stays as typed, so the parser's error names it."""
    if value is None or (isinstance(value, str) and not value.strip()):
        if kind == OPTIONAL_INT:
            return None
        raise UserError(f"{name}: enter a value")
    if isinstance(value, str):
        return value.strip()
    if kind in (INT, OPTIONAL_INT) and float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def argv_from(values: Mapping[str, object]) -> list[str]:
    """The ``toy.train`` command line of a set of control values (``CONTROLS`` → value). The
    prompt pool (``n_train_contexts``) left empty is P, as in the presets."""
    values = dict(values)
    if values.get("n_train_contexts") in (None, ""):
        values["n_train_contexts"] = values.get("prompts_per_round")
    argv: list[str] = []
    for name, kind in FIELDS.items():
        value = values.get(name)
        text = str(value) if kind == CHOICE else _number(name, kind, value)
        if text is None:
            continue
        shown = name in ALWAYS or (name == "offline_fraction" and values.get("mode") == "hybrid")
        if not shown and text == _text_of_default(name, kind):
            continue
        argv += [_flag(name), text]
        if name == "objective":
            items = _hp_items(str(value), str(values.get("hp", "")))
            argv += ["--hp", *items] if items else []
    argv += ["--seeds", *str(values.get("seeds", "")).replace(",", " ").split()]
    return [*argv, "--out-dir", ""]


def _text_of_default(name: str, kind: str) -> str | None:
    default = getattr(_DEFAULT, name)
    return str(default) if kind == CHOICE else _number(name, kind, default)


def controls_of(cfg: BanditConfig, seeds: str | None = None) -> dict[str, object]:
    """Control values showing ``cfg`` (a preset's): its fields, its hyperparameters merged into
    the registry's defaults; ``seeds`` (text) replaces its seeds when given."""
    out: dict[str, object] = {name: getattr(cfg, name) for name in FIELDS}
    out["hp"] = hp_field(cfg.objective, cfg.hp)
    out["seeds"] = seeds if seeds is not None else " ".join(map(str, cfg.seeds))
    return out


START_A = controls_of(
    BanditConfig(objective="dpo", reward="R1", lr=3e-3, rounds=15, n_train_contexts=10),
    seeds="0 1 2",
)
"""The playground's first config: on-policy DPO on R1, 15 rounds × 10 prompts × 10 samples ×
15 steps, three seeds (a few seconds on one CPU)."""
START_B = controls_of(
    BanditConfig(
        objective="bon", mode="offline", reward="R1", lr=3e-3, rounds=15, n_train_contexts=10
    ),
    seeds="0 1 2",
)
"""The comparison's first config: offline best-of-N (filtered BC) on the same budget."""
PRESET_NAMES = tuple(sorted(PRESETS))


def error_line(exc: BaseException) -> str:
    """The line the command line prints for ``exc`` (``errors.cli_entry``)."""
    text = str(exc) or type(exc).__name__
    return "error: " + " ".join(part.strip() for part in text.splitlines() if part.strip())


def config_from(values: Mapping[str, object]) -> tuple[list[str], BanditConfig]:
    """(argv, the config ``toy.train.parse(argv)`` builds); ``UserError`` as the CLI's."""
    from toy.train import parse

    argv = argv_from(values)
    return argv, parse(argv)


def cli_line(argv: list[str]) -> str:
    """The shell command for ``argv``: ``python -m toy.train ...``, quoted for a POSIX shell."""
    return shlex.join(["python", "-m", "toy.train", *argv])


def config_expression(cfg: BanditConfig) -> str:
    """``toy.BanditConfig(...)`` with the fields that differ from the defaults: evaluating it
    (with ``toy`` imported) gives a config equal to ``cfg``."""
    base = BanditConfig()
    order = ("objective", "hp", *FIELDS, "seeds")
    names = sorted((f.name for f in dataclasses.fields(cfg)),
                   key=lambda n: order.index(n) if n in order else len(order))  # fmt: skip
    changed = [n for n in names if getattr(cfg, n) != getattr(base, n)]
    body = "".join(f"    {name}={getattr(cfg, name)!r},\n" for name in changed)
    return f"toy.BanditConfig(\n{body})" if body else "toy.BanditConfig()"


def label_of(tag: str, cfg: BanditConfig) -> str:
    """``A · DPO · on-policy · R1`` (the objective by its paper's name)."""
    reward = cfg.reward if cfg.reward_vector is None else "custom reward"
    return f"{tag} · {display_name(cfg.objective)} · {cfg.mode.replace('_', '-')} · {reward}"


def python_snippet(configs: list[tuple[str, BanditConfig]]) -> str:
    """Python that runs the same configs (``(tag, config)`` pairs) through ``toy.run``: one
    config as ``cfg`` and ``result``, several as ``cfg_a``, ``result_a``, …"""
    parts = ["import toy\n"]
    for tag, cfg in configs:
        end = f"_{tag.lower()}" if len(configs) > 1 else ""
        parts.append(
            f"# {label_of(tag, cfg)}\n"
            f"cfg{end} = {config_expression(cfg)}\n"
            f"result{end} = toy.run(cfg{end})  # nothing written: out_dir=''\n"
            f'print(result{end}["reward/expected"], result{end}["policy/kl_ref"])\n'
        )
    return "\n".join(parts)


# ---- running, and stopping a run ---------------------------------------------------------------


class Stopped(BaseException):
    """Raised inside a training thread by ``stop``. A ``BaseException``, so no ``except
    Exception`` on the way out swallows it."""


_ACTIVE: dict[str, int] = {}  # key (a browser session) → ident of the thread inside toy.run
_SIGNALLED: set[str] = set()  # keys whose thread has been sent Stopped
_PENDING: set[str] = set()  # keys whose stop came before their run had started
_LOCK = threading.Lock()


@dataclass
class Finished:
    """One completed run: its tag (A or B), the argv it was parsed from, the ``RunResult``
    and the wall-clock seconds of ``toy.run``."""

    tag: str
    argv: list[str]
    result: object
    seconds: float


def begin(key: str = "") -> None:
    """A new request of ``key`` starts: forget a stop that came when nothing was running."""
    with _LOCK:
        _PENDING.discard(key)


def execute(tag: str, argv: list[str], cfg: BanditConfig, key: str = "") -> Finished:
    """``toy.run(cfg)`` (``cfg`` is ``toy.train.parse(argv)``); ``stop(key)`` from another
    thread ends it with ``Stopped``."""
    import toy

    with _LOCK:
        if key in _PENDING:
            _PENDING.discard(key)
            raise Stopped
        _ACTIVE[key] = threading.get_ident()
    start = time.perf_counter()
    try:
        result = toy.run(cfg)
    finally:
        with _LOCK:
            _ACTIVE.pop(key, None)
            _SIGNALLED.discard(key)
    return Finished(tag, argv, result, time.perf_counter() - start)


def stop(key: str = "") -> bool:
    """Stop the run of ``key``: raise ``Stopped`` in its thread (once), or, before it has
    started, when it starts. Whether a run was in progress."""
    with _LOCK:
        ident = _ACTIVE.get(key)
        if ident is None:
            _PENDING.add(key)
            return False
        if key not in _SIGNALLED:
            _SIGNALLED.add(key)
            exc = ctypes.py_object(Stopped)
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), exc)
    return True


def running() -> int:
    """How many threads are inside ``toy.run`` for the playground (all sessions); a stopped
    run counts until its thread has left ``toy.run``."""
    with _LOCK:
        return len(_ACTIVE)


NUMBERS = (
    ("reward/expected", "expected reward E_π[r]"),
    ("policy/kl_ref", "KL(π ‖ π_ref)"),
    ("policy/kl_ref_forward", "KL(π_ref ‖ π)"),
    ("policy/entropy", "entropy H(π)"),
    ("mass/optimal", "π(argmax r)"),
    ("logps/chosen", "log π(y_w), last batch"),
    ("logps/rejected", "log π(y_l), last batch"),
    ("margin/implicit", "implicit margin h"),
)
"""The numbers panel: (metric, label), each at the last step, mean ± sd over seeds."""


def final_numbers(result) -> dict[str, tuple[float, float]]:
    """metric → (mean over seeds at the last step, as ``result[metric]``; sd over seeds)."""
    metrics = result.metrics
    last = metrics[metrics.step == metrics.step.max()]
    return {key: (float(result[key]), float(last[key].std(ddof=0))) for key, _ in NUMBERS}
