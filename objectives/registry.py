"""The objectives registry: one entry per objective, with the metadata callers dispatch on.

Callers (the bandit loop, the LLM harness, the analysis) never test an objective's name: they
read ``data`` to know what to build, ``inputs``/``optional_inputs`` to know which tensors to pass,
``needs_ref``/``needs_mean_logps`` to know how to compute them, and ``defaults`` for the
hyperparameters.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from torch import Tensor

from objectives import closed_form as cf
from objectives import pairwise, sampled

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
        needs_mean_logps: whether log-probs must be per-token means rather than sums.
        negative_gradient: whether the loss can push a response's likelihood down.
        paper: where the formula comes from.
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
    paper: str = ""
    defaults: Mapping[str, object] = field(init=False)

    def __post_init__(self) -> None:
        params = inspect.signature(self.fn).parameters.values()
        hp = {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}
        object.__setattr__(self, "defaults", hp)

    def __call__(self, **kwargs) -> Tensor:
        return self.fn(**kwargs)

    def check_hparams(self, hparams: Mapping[str, object]) -> None:
        """Raise a ValueError naming any hyperparameter this objective does not take."""
        unknown = sorted(set(hparams) - set(self.defaults))
        if unknown:
            raise ValueError(
                f"objective {self.name!r} has no hyperparameter(s) {unknown}; "
                f"it takes {sorted(self.defaults)}"
            )

    def parse_hparams(self, pairs: tuple[str, ...] | list[str]) -> dict[str, object]:
        """``key=value`` strings (a CLI's ``--hp beta=0.1 pushdown=mean``) → typed values, the
        type taken from each hyperparameter's default; errors name the bad item."""
        out: dict[str, object] = {}
        for item in pairs:
            key, sep, raw = item.partition("=")
            if not sep:
                raise ValueError(f"hp: expected key=value, got {item!r}")
            self.check_hparams({key: None})
            default = self.defaults[key]
            if isinstance(default, bool):
                if raw.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(f"hp: {key} must be true or false, got {raw!r}")
                out[key] = raw.lower() in ("true", "1")
            elif isinstance(default, (int, float)) or default is None:
                try:
                    out[key] = float(raw)
                except ValueError:
                    raise ValueError(f"hp: {key} must be a number, got {raw!r}") from None
            else:
                out[key] = raw
        return out


def _entry(name, fn, partials, data, **meta) -> tuple[str, Objective]:
    inputs = meta.pop(
        "inputs",
        {"chosen": ("chosen_logps",), "pairs": PAIR_INPUTS, "groups": ("logps", "rewards")}[data],
    )
    return name, Objective(name, fn, partials, data, inputs, **meta)


_REF_FREE_PAIR = PAIR_INPUTS[:2]
_RL_OPTIONAL = ("ref_logps", "baseline")

OBJECTIVES: dict[str, Objective] = dict(
    [
        _entry(
            "sft",
            pairwise.sft,
            cf.d_sft,
            "chosen",
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
            paper="best-of-N with push-down of the worse samples (Tajwar et al. 2024)",
        ),
        _entry(
            "rwr",
            sampled.rwr,
            cf.d_rwr,
            "groups",
            negative_gradient=False,
            paper="reward-weighted regression (Peters & Schaal 2007)",
        ),
        _entry(
            "reinforce",
            sampled.reinforce,
            cf.d_reinforce,
            "groups",
            optional_inputs=_RL_OPTIONAL,
            paper="REINFORCE (Williams 1992)",
        ),
        _entry(
            "ppo",
            sampled.ppo,
            cf.d_ppo,
            "groups",
            inputs=("logps", "rewards", "old_logps"),
            optional_inputs=_RL_OPTIONAL,
            paper="PPO-clip (Schulman et al. 2017)",
        ),
        _entry(
            "dpo",
            pairwise.dpo,
            cf.d_dpo,
            "pairs",
            needs_ref=True,
            paper="DPO (Rafailov et al. 2023)",
        ),
        _entry(
            "ipo", pairwise.ipo, cf.d_ipo, "pairs", needs_ref=True, paper="IPO (Azar et al. 2023)"
        ),
        _entry(
            "slic",
            pairwise.slic,
            cf.d_slic,
            "pairs",
            inputs=_REF_FREE_PAIR,
            paper="SLiC-HF (Zhao et al. 2023)",
        ),
        _entry(
            "orpo",
            pairwise.orpo,
            cf.d_orpo,
            "pairs",
            inputs=_REF_FREE_PAIR,
            needs_mean_logps=True,
            paper="ORPO (Hong et al. 2024)",
        ),
        _entry(
            "simpo",
            pairwise.simpo,
            cf.d_simpo,
            "pairs",
            inputs=_REF_FREE_PAIR,
            needs_mean_logps=True,
            paper="SimPO (Meng et al. 2024)",
        ),
        _entry(
            "asft",
            pairwise.asft,
            cf.d_asft,
            "pairs",
            inputs=_REF_FREE_PAIR,
            needs_mean_logps=True,
            paper="ASFT (Wang et al. 2024)",
        ),
        _entry(
            "kto",
            pairwise.kto,
            cf.d_kto,
            "pairs",
            needs_ref=True,
            paper="KTO (Ethayarajh et al. 2024), paired",
        ),
    ]
)


def get(name: str) -> Objective:
    """The registry entry for ``name``, with an error listing the valid names."""
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise ValueError(f"unknown objective {name!r}; choose from {sorted(OBJECTIVES)}") from None
