"""``DiagnoseConfig``: the options of ``python -m llm.diagnose`` and their validation (one
``UserError`` naming the first invalid field)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

import objectives
from llm.options import DataOptions, LoraOptions, ModelOptions
from runio import UserError, validation_deferred

PAIR_KINDS = ("pairs", "chosen")
TABLE_NAMES = ("pairs.csv", "pairs.parquet")


@dataclass(frozen=True)
class DiagnoseConfig(LoraOptions, DataOptions, ModelOptions):
    """Predict (and with --verify measure) each objective's one-step effect on log π(y_w),
    log π(y_l) per preference pair, with CHES and gradient inner products."""

    objective: tuple[str, ...] = ("dpo", "asft", "sft")
    """Objectives to diagnose (pairwise or chosen-only registry names)."""
    hp: tuple[str, ...] = ()
    """Hyperparameters: key=value (every listed objective that has the key) or
    objective.key=value (e.g. dpo.beta=0.2); unset ones keep registry defaults."""
    params: Literal["auto", "lora", "last-k", "all"] = "auto"
    """Parameters the gradients (and the verified step) are taken in: LoRA adapters, the last
    --last-k transformer blocks, or every weight; auto = lora under --lora, else all."""
    last_k: int = 1
    """Blocks for --params last-k."""
    eta: float = 1e-4
    """SGD step size η of the predicted (and verified) step."""
    n_pairs: int = 0
    """Diagnose a random subset of this many valid pairs (seeded by --seed); 0: all."""
    verify: bool = False
    """Take the step per pair and objective and measure Δℓ_w, Δℓ_l."""
    verify_steps: int = 1
    """With --verify, also measure after this many SGD steps on the pair (1: one step only)."""
    batch_step: bool = False
    """Also predict (and with --verify take) one SGD step on the mean loss of all diagnosed pairs
    together, as a training batch: every pair's Δℓ then includes the other pairs' pushes
    (columns batch_*). Stores two flattened gradients per pair (see --batch-max-gib)."""
    batch_max_gib: float = 8.0
    """Memory allowed for --batch-step's stored gradients (pairs × 2 × parameters × 4 bytes in
    float32)."""
    top: int = 10
    """At-risk pairs printed in the summary."""
    risk_objective: str | None = None
    """Objective whose predicted Δℓ_w ranks the at-risk pairs; None: dpo if listed, else the
    first listed."""
    device: str = "auto"
    """cpu, cuda, ...; auto: cuda when available."""
    out_dir: str = "runs/diagnose"
    """Directory for pairs.csv, texts.jsonl, summary.json, config.json."""
    format: Literal["csv", "parquet"] = "csv"
    """Format of the per-pair table."""
    overwrite: bool = False
    """Replace an existing table in --out-dir (without it an existing one is refused)."""
    plot: bool = False
    """Also draw diagnose.png in --out-dir (figure 15's drawing, llm.diagnose.plot)."""
    summary_of: str | None = None
    """Print the summary of an existing --out-dir's table (no model is loaded)."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self) -> None:
        if not validation_deferred():
            validate(self)

    def hparams(self) -> dict[str, dict]:
        """{objective: its hyperparameters} from --hp (registry defaults for the unset ones)."""
        return parse_hp(self.objective, self.hp)

    def param_set(self) -> str:
        if self.params == "auto":
            return "lora" if self.lora else "all"
        return self.params

    def risk(self) -> str:
        if self.risk_objective:
            return self.risk_objective
        return "dpo" if "dpo" in self.objective else self.objective[0]

    def load_objective(self) -> str:
        """The objective the data are loaded for (``llm.train``'s layout rules): the first listed
        pairwise one, since those need a rejected response (KTO also reads unpaired rows);
        ``run`` then checks the file's layout against every listed objective."""
        pairwise = [n for n in self.objective if objectives.get(n).data == "pairs"]
        return (pairwise or list(self.objective))[0]

    def train_config(self):
        """The training config with the same data and model options (validated by it)."""
        from llm.config import TrainConfig

        names = {f.name for f in dataclasses.fields(TrainConfig)}
        shared = {k: v for k, v in dataclasses.asdict(self).items() if k in names}
        shared.pop("objective", None)
        shared.pop("hp", None)
        return TrainConfig(
            **shared, objective=self.load_objective(), eval_data=None, gen_examples=0
        )


def require_field(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise UserError(f"DiagnoseConfig.{name}: {message}")


def parse_hp(names: tuple[str, ...], items: tuple[str, ...]) -> dict[str, dict]:
    """--hp items → {objective: validated hyperparameters}."""
    out: dict[str, dict] = {n: {} for n in names}
    for item in items:
        key, sep, value = str(item).partition("=")
        require_field(bool(sep), "hp", f"expected key=value or objective.key=value, got {item!r}")
        target, dot, bare = key.partition(".")
        if dot:
            require_field(target in out, "hp", f"{item!r} names {target!r}, not a listed objective")
            out[target].update(objectives.get(target).parse_hparams([f"{bare}={value}"]))
            continue
        takers = [n for n in names if key.strip() in objectives.get(n).defaults]
        require_field(bool(takers), "hp", f"no listed objective {list(names)} has {key!r}")
        for n in takers:
            out[n].update(objectives.get(n).parse_hparams([f"{key}={value}"]))
    return {n: {**objectives.get(n).defaults, **hp} for n, hp in out.items()}


def check_objective(name: str, hp: dict) -> None:
    """A ``UserError`` unless a one-pair step of ``name`` with ``hp`` is what training does on
    that pair: batch-coupled objectives (AOT: a pair's loss depends on the other pairs of its
    batch) and settings that need inputs beyond the pair's four log-probs (ORPO ``nll=all``,
    KTO ``z0=mismatched``) are refused."""
    obj = objectives.get(name)
    require_field(
        not obj.batch_coupled,
        "objective",
        f"{name!r} is batch-coupled (a pair's loss and gradient depend on the other pairs of its "
        "batch), so a one-pair step does not predict training; diagnose a per-pair objective",
    )
    extra = sorted(set(obj.required_inputs(hp)) - set(objectives.registry.PAIR_INPUTS))
    setting = ", ".join(f"{k}={hp[k]}" for k in obj.hp_inputs if k in hp)
    require_field(
        not extra,
        "hp",
        f"{name!r} with {setting} needs {extra}, which llm.diagnose does not compute; "
        "diagnose it with its default for that hyperparameter",
    )


def validate(c: DiagnoseConfig) -> None:
    """Raise a ``UserError`` naming the first invalid field."""
    if c.summary_of is not None:
        return
    require_field(bool(c.objective), "objective", "list at least one objective")
    for name in c.objective:
        require_field(
            name in objectives.OBJECTIVES,
            "objective",
            f"unknown {name!r}; choose from {sorted(objectives.OBJECTIVES)}",
        )
        ok = [k for k, o in sorted(objectives.OBJECTIVES.items()) if o.data in PAIR_KINDS]
        require_field(
            objectives.get(name).data in PAIR_KINDS,
            "objective",
            f"{name!r} consumes scored groups, not pairs; choose from {ok}",
        )
    require_field(len(set(c.objective)) == len(c.objective), "objective", "listed twice")
    for name, hp in c.hparams().items():
        check_objective(name, hp)
    require_field(math.isfinite(c.eta) and c.eta > 0, "eta", f"must be positive, got {c.eta}")
    for name in ("last_k", "verify_steps"):
        require_field(getattr(c, name) >= 1, name, f"must be at least 1, got {getattr(c, name)}")
    require_field(c.batch_max_gib > 0, "batch_max_gib", f"must be positive, got {c.batch_max_gib}")
    for name in ("n_pairs", "top"):
        require_field(getattr(c, name) >= 0, name, f"must be non-negative, got {getattr(c, name)}")
    require_field(
        c.risk_objective is None or c.risk_objective in c.objective,
        "risk_objective",
        f"{c.risk_objective!r} is not among --objective {list(c.objective)}",
    )
    if c.lora:
        require_field(
            c.params in ("auto", "lora"),
            "params",
            f"under --lora the trained weights are the adapters: use lora, not {c.params!r}",
        )
    else:
        require_field(c.params != "lora", "params", "'lora' needs --lora")
    c.train_config()  # the shared model/data fields, checked by TrainConfig's rules
