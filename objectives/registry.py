"""The objectives registry: one entry per objective, with the metadata callers dispatch on.

Callers (the bandit loop, the LLM harness, the analysis) never test an objective's name: they
read ``data`` to know what to build, ``inputs``/``optional_inputs`` to know which tensors to pass
(``required_inputs(hparams)`` adds those a hyperparameter setting needs, e.g. ORPO's
``nll="all"``), ``needs_ref`` and ``uses_mean_logps(hparams)`` to know how to compute them, and
``defaults`` for the hyperparameters, ``hp_rules`` for their allowed ranges.

Names of the entries that port a TRL ``DPOTrainer`` loss type are TRL's ``loss_type`` strings
(``hinge``, ``nca_pair``, …), so ``--loss_type nca_pair`` picks the same loss.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from torch import Tensor

from errors import UserError
from objectives import closed_form as cf
from objectives import online, pairwise, sampled, trl_pairwise
from objectives.hparams import (
    BELOW_HALF,
    BOOL,
    FINITE_OR_NONE,
    NON_NEGATIVE,
    OPEN_UNIT,
    POSITIVE,
    TENSOR_OR_NONE,
    Rule,
    choice,
)

DataKind = Literal["chosen", "pairs", "groups"]
PAIR_INPUTS = ("chosen_logps", "rejected_logps", "ref_chosen_logps", "ref_rejected_logps")


@dataclass(frozen=True)
class Objective:
    """An objective and what it consumes.

    Attributes:
        name: registry key.
        fn: the pure loss function, returning the unreduced per-example loss.
        partials: hand-derived ∂loss/∂(log-prob inputs), same arguments as ``fn``.
        data: "chosen" (responses to imitate, shape (B,)), "pairs" (chosen and rejected, (B,)),
            or "groups" (P prompts × N scored samples, (P, N); the loss is per prompt, (P,)).
        inputs: tensor arguments ``fn`` requires.
        optional_inputs: tensor arguments ``fn`` uses when given (e.g. a running baseline).
        needs_ref: whether reference log-probs are required.
        needs_mean_logps: whether log-probs must be per-token means rather than sums, whatever
            the hyperparameters (``uses_mean_logps`` also reads a ``length_norm`` switch).
        hp_inputs: inputs that a hyperparameter value makes required,
            ``{hparam: {value: (input, ...)}}`` (they are listed in ``optional_inputs`` too).
        negative_gradient: whether the loss can push a response's likelihood down.
        batch_coupled: whether a row's loss (and gradient) depends on the other rows of the batch
            beyond a detached statistic (AOT's ranking over the batch): splitting a batch into
            micro-batches changes such a loss, and rows a caller masks out afterwards still
            take part in it.
        paper: where the formula comes from.
        hp_rules: the allowed range of each hyperparameter (``objectives.hparams.Rule``);
            ``validate_hparams`` and ``parse_hparams`` enforce them, and the registry refuses an
            entry whose rules do not cover exactly its hyperparameters.
        defaults: hyperparameters and their default values (read from ``fn``'s signature).
    """

    name: str
    fn: Callable[..., Tensor]
    partials: Callable[..., dict[str, Tensor]]
    data: DataKind
    inputs: tuple[str, ...]
    optional_inputs: tuple[str, ...] = ()
    needs_ref: bool = False
    needs_mean_logps: bool = False
    negative_gradient: bool = True
    batch_coupled: bool = False
    paper: str = ""
    hp_rules: Mapping[str, Rule] = field(default_factory=dict)
    hp_inputs: Mapping[str, Mapping[str, tuple[str, ...]]] = field(default_factory=dict)
    defaults: Mapping[str, object] = field(init=False)

    def __post_init__(self) -> None:
        params = inspect.signature(self.fn).parameters.values()
        hp = {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}
        object.__setattr__(self, "defaults", hp)
        # the metadata must cover exactly the hyperparameters, and admit their defaults
        if set(self.hp_rules) != set(hp):
            raise TypeError(
                f"objective {self.name!r}: hp_rules cover {sorted(self.hp_rules)} but the "
                f"hyperparameters are {sorted(hp)}"
            )
        for key, default in hp.items():
            if not self.hp_rules[key].accepts(default):
                raise TypeError(
                    f"objective {self.name!r}: default {key}={default!r} breaks its rule"
                )

    def _resolved(self, hparams: Mapping[str, object] | None) -> dict[str, object]:
        return {**self.defaults, **(hparams or {})}

    def uses_mean_logps(self, hparams: Mapping[str, object] | None = None) -> bool:
        """Whether the caller must pass per-token means ℓ̄ = ℓ/|y| (policy and reference) rather
        than sums, with these hyperparameters: ``needs_mean_logps``, or a ``length_norm``
        hyperparameter set to "mean" (SFT, DPO, IPO: TRL's length-normalised forms)."""
        return self.needs_mean_logps or self._resolved(hparams).get("length_norm") == "mean"

    def required_inputs(self, hparams: Mapping[str, object] | None = None) -> tuple[str, ...]:
        """``inputs`` plus the optional inputs these hyperparameters make required."""
        hp = self._resolved(hparams)
        extra = [k for name, by in self.hp_inputs.items() for k in by.get(hp.get(name), ())]
        return (*self.inputs, *(k for k in extra if k not in self.inputs))

    def select_inputs(
        self,
        available: Mapping[str, Tensor],
        hparams: Mapping[str, object] | None = None,
        missing_hint: str = "",
    ) -> dict[str, Tensor]:
        """The tensors ``fn`` takes, picked from whatever a caller has built (``available`` may
        hold more). A ValueError names the inputs these hyperparameters require that are not
        there, followed by ``missing_hint`` (what the caller could not build, and why): a
        ``UserError``, since a hyperparameter choice (e.g. ORPO's ``nll="all"``) is what asks
        for an input a data path cannot build."""
        missing = [k for k in self.required_inputs(hparams) if k not in available]
        if missing:
            raise UserError(
                f"objective {self.name!r} with these hyperparameters needs {sorted(missing)}, "
                f"which were not given{missing_hint}"
            )
        wanted = (*self.inputs, *self.optional_inputs)
        return {k: v for k, v in available.items() if k in wanted}

    def loss(self, available: Mapping[str, Tensor], **hparams) -> Tensor:
        """The unreduced per-example loss from the inputs a caller has (``select_inputs``) and
        the hyperparameters (already validated: no range checks here, so per-row tensors of a
        batched sweep pass through)."""
        return self.fn(**self.select_inputs(available, hparams), **hparams)

    def __call__(self, **kwargs) -> Tensor:
        self._check_ranges({k: v for k, v in kwargs.items() if k in self.defaults})
        return self.fn(**kwargs)

    def _check_names(self, names) -> None:
        unknown = sorted(set(names) - set(self.defaults))
        if unknown:
            raise UserError(
                f"objective {self.name!r} has no hyperparameter(s) {unknown}; "
                f"it takes {sorted(self.defaults)}"
            )

    def _check_ranges(self, hparams: Mapping[str, object]) -> None:
        for key, value in hparams.items():
            rule = self.hp_rules[key]
            if not rule.accepts(value):
                raise UserError(
                    f"objective {self.name!r}: {key} must be {rule.describe()}, got {value!r}"
                )

    def validate_hparams(self, hparams: Mapping[str, object]) -> dict[str, object]:
        """Check hyperparameters given as Python values (a config's, or a caller's keywords)
        against this objective's names and ``hp_rules``; returns them as a dict.

        Raises ``runio.UserError`` with one line naming the objective, the hyperparameter, the
        bad value and what is accepted, e.g. ``objective 'dpo': beta must be positive and
        finite, got nan``.
        """
        self._check_names(hparams)
        self._check_ranges(hparams)
        return dict(hparams)

    def check_hparams(self, hparams: Mapping[str, object]) -> None:
        """``validate_hparams`` without the return value (raises ``runio.UserError``)."""
        self.validate_hparams(hparams)

    def parse_hparams(self, pairs: tuple[str, ...] | list[str]) -> dict[str, object]:
        """``key=value`` strings (a CLI's ``--hp beta=0.1 pushdown=mean``) → typed values, read
        and range-checked by each hyperparameter's rule; a ``runio.UserError`` names the bad
        item."""
        out: dict[str, object] = {}
        for item in pairs:
            key, sep, raw = str(item).partition("=")
            key = key.strip()
            if not sep:
                raise UserError(f"objective {self.name!r}: hp: expected key=value, got {item!r}")
            self._check_names([key])
            try:
                out[key] = self.hp_rules[key].parse(raw)
            except ValueError as e:
                raise UserError(f"objective {self.name!r}: {key} {e}, got {raw!r}") from None
        return self.validate_hparams(out)


def _entry(name, fn, partials, data, **meta) -> tuple[str, Objective]:
    inputs = meta.pop(
        "inputs",
        {"chosen": ("chosen_logps",), "pairs": PAIR_INPUTS, "groups": ("logps", "rewards")}[data],
    )
    return name, Objective(name, fn, partials, data, inputs, **meta)


_REF_FREE_PAIR = PAIR_INPUTS[:2]
_RL_OPTIONAL = ("ref_logps", "baseline")
_KL_INPUTS = ("kl_logps", "ref_kl_logps")
_BETA = {"beta": POSITIVE}
# (name, hp_rules, paper) of the TRL DPOTrainer loss types ported to objectives.trl_pairwise;
# every one can push a response's likelihood down
_TRL_LOSSES = (
    ("hinge", _BETA, "reference-based hinge (SLiC-HF, Zhao et al. 2023; RSO, Liu et al. 2024)"),
    ("nca_pair", _BETA, "NCA (Chen et al. 2024), pairwise"),
    ("bco_pair", {**_BETA, "delta": FINITE_OR_NONE}, "BCO (Jung et al. 2024), pairwise"),
    ("robust", {**_BETA, "eps": BELOW_HALF}, "Robust DPO (Chowdhury et al. 2024)"),
    ("exo_pair", {**_BETA, "eps": OPEN_UNIT}, "EXO (Ji et al. 2024), pairwise"),
    ("sppo_hard", _BETA, "SPPO (Wu et al. 2024), hard win probabilities"),
    ("aot", {**_BETA, "eps": BELOW_HALF}, "AOT (Melnyk et al. 2024), paired"),
    ("aot_unpaired", {**_BETA, "eps": BELOW_HALF}, "AOT (Melnyk et al. 2024), unpaired"),
    ("apo_zero", _BETA, "APO-zero (D'Oosterlinck et al. 2024)"),
    ("apo_down", _BETA, "APO-down (D'Oosterlinck et al. 2024)"),
    ("discopop", {**_BETA, "tau": POSITIVE}, "DiscoPOP (Lu et al. 2024)"),
)

OBJECTIVES: dict[str, Objective] = dict(
    [
        _entry(
            "sft",
            pairwise.sft,
            cf.d_sft,
            "chosen",
            hp_rules={"length_norm": choice("sum", "mean")},
            negative_gradient=False,
            paper="maximum likelihood on y_w (Pref-FT)",
        ),
        _entry(
            "bon",
            sampled.bon,
            cf.d_bon,
            "groups",
            negative_gradient=False,
            paper="filtered BC / best-of-N SFT (Tajwar et al. 2024)",
        ),
        _entry(
            "bon_pushdown",
            sampled.bon_pushdown,
            cf.d_bon_pushdown,
            "groups",
            hp_rules={"beta": NON_NEGATIVE, "pushdown": choice("worst", "mean")},
            paper="best-of-N with push-down of the worse samples (Tajwar et al. 2024)",
        ),
        _entry(
            "rwr",
            sampled.rwr,
            cf.d_rwr,
            "groups",
            hp_rules={"beta": POSITIVE, "w_max": POSITIVE, "normalize": BOOL},
            negative_gradient=False,
            paper="reward-weighted regression (Peters & Schaal 2007)",
        ),
        _entry(
            "reinforce",
            sampled.reinforce,
            cf.d_reinforce,
            "groups",
            hp_rules={"kl_coef": NON_NEGATIVE, "ent_coef": NON_NEGATIVE},
            optional_inputs=_RL_OPTIONAL,
            paper="REINFORCE (Williams 1992)",
        ),
        _entry(
            "ppo",
            sampled.ppo,
            cf.d_ppo,
            "groups",
            hp_rules={"clip_eps": OPEN_UNIT, "kl_coef": NON_NEGATIVE, "token_mask": TENSOR_OR_NONE},
            inputs=("logps", "rewards", "old_logps"),
            optional_inputs=_RL_OPTIONAL,
            paper="PPO-clip (Schulman et al. 2017)",
        ),
        # TRL's online trainers (GRPOTrainer, RLOOTrainer, TRL 1.16): objectives.online
        *(
            _entry(
                name,
                getattr(online, name),
                getattr(cf, f"d_{name}"),
                "groups",
                hp_rules=rules,
                # RLOOConfig's beta is 0.05 (a reference is needed), GRPOConfig's 0
                inputs=("logps", "rewards", *(("ref_logps",) if name == "rloo" else ())),
                optional_inputs=(
                    "old_logps",
                    *(() if name == "rloo" else ("ref_logps", "prompt_tokens")),
                    "advantages",
                ),
                needs_ref=name == "rloo",
                paper=paper,
            )
            for name, (rules, paper) in online.REGISTRY.items()
        ),
        _entry(
            "dpo",
            pairwise.dpo,
            cf.d_dpo,
            "pairs",
            hp_rules={"beta": POSITIVE, "length_norm": choice("sum", "mean")},
            needs_ref=True,
            paper="DPO (Rafailov et al. 2023); length_norm=mean: TRL's sigmoid_norm",
        ),
        _entry(
            "ipo",
            pairwise.ipo,
            cf.d_ipo,
            "pairs",
            hp_rules={"tau": POSITIVE, "length_norm": choice("sum", "mean")},
            needs_ref=True,
            paper="IPO (Azar et al. 2023); length_norm=mean: TRL's ipo",
        ),
        _entry(
            "slic",
            pairwise.slic,
            cf.d_slic,
            "pairs",
            hp_rules={"delta": NON_NEGATIVE, "lam": NON_NEGATIVE},
            inputs=_REF_FREE_PAIR,
            paper="SLiC-HF (Zhao et al. 2023)",
        ),
        _entry(
            "orpo",
            pairwise.orpo,
            cf.d_orpo,
            "pairs",
            hp_rules={"lam": NON_NEGATIVE, "nll": choice("response", "all")},
            inputs=_REF_FREE_PAIR,
            optional_inputs=("chosen_full_logps",),
            hp_inputs={"nll": {"all": ("chosen_full_logps",)}},
            needs_mean_logps=True,
            paper="ORPO (Hong et al. 2024); nll=all: TRL's ORPOTrainer",
        ),
        _entry(
            "simpo",
            pairwise.simpo,
            cf.d_simpo,
            "pairs",
            hp_rules={"beta": POSITIVE, "gamma": NON_NEGATIVE},
            inputs=_REF_FREE_PAIR,
            needs_mean_logps=True,
            paper="SimPO (Meng et al. 2024)",
        ),
        _entry(
            "asft",
            pairwise.asft,
            cf.d_asft,
            "pairs",
            hp_rules={"lam": NON_NEGATIVE, "beta": POSITIVE},
            inputs=_REF_FREE_PAIR,
            needs_mean_logps=True,
            paper="ASFT (Wang et al. 2024); beta != 1: tempered reward",
        ),
        _entry(
            "kto",
            pairwise.kto,
            cf.d_kto,
            "pairs",
            hp_rules={
                "beta": POSITIVE,
                "lam_d": NON_NEGATIVE,
                "lam_u": NON_NEGATIVE,
                "kl_estimate": FINITE_OR_NONE,
                "z0": choice("batch", "mismatched"),
                "form": choice("paired", "unpaired"),
            },
            inputs=PAIR_INPUTS,
            optional_inputs=_KL_INPUTS,
            hp_inputs={"z0": {"mismatched": _KL_INPUTS}},
            needs_ref=True,
            paper="KTO (Ethayarajh et al. 2024), paired; form=unpaired, z0=mismatched: TRL's",
        ),
        # TRL DPOTrainer loss types (TRL 1.16's names), reference-based, summed log-probs
        *(
            _entry(
                name,
                getattr(trl_pairwise, name),
                getattr(cf, f"d_{name}"),
                "pairs",
                hp_rules=rules,
                needs_ref=True,
                batch_coupled=name.startswith("aot"),
                paper=paper,
            )
            for name, rules, paper in _TRL_LOSSES
        ),
    ]
)


def get(name: str) -> Objective:
    """The registry entry for ``name``, with an error listing the valid names."""
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise UserError(f"unknown objective {name!r}; choose from {sorted(OBJECTIVES)}") from None
