"""Allowed ranges of the objectives' hyperparameters, as data the registry attaches to each entry.

A ``Rule`` says what values a hyperparameter accepts, how to read it from a ``key=value`` string
and how to describe it in an error. The rule is chosen by what the formula needs: a coefficient
the loss divides by or that sets its scale (β of DPO, τ of IPO) must be positive; a weight whose
zero is a meaningful special case (λ, γ, δ, kl_coef, ent_coef) must be non-negative; PPO's clip
ε and EXO's label smoothing lie in (0, 1); a label-flip rate or label smoothing that a loss
divides by 1 - 2ε (Robust DPO, AOT) lies in [0, ½); and no number may be NaN or infinite.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real

import torch


@dataclass(frozen=True)
class Rule:
    """What one hyperparameter accepts.

    Attributes:
        kind: "positive" (> 0), "non-negative" (>= 0), "open-unit" (in (0, 1)), "below-half"
            (in [0, 0.5)), "bool",
            "choice" (one of ``choices``), "finite-or-none" (any finite number, a tensor of finite
            numbers, or None) or "tensor-or-none" (a tensor argument that is keyword-only but not
            a tunable number, e.g. PPO's token mask; not settable from a ``key=value`` string).
        choices: the accepted strings of a "choice" rule.
    """

    kind: str
    choices: tuple[str, ...] = ()

    def describe(self) -> str:
        """What is accepted, as it reads after "must be"."""
        return {
            "positive": "positive and finite",
            "non-negative": "non-negative and finite",
            "open-unit": "in the open interval (0, 1)",
            "below-half": "in the interval [0, 0.5)",
            "bool": "true or false",
            "choice": "one of " + ", ".join(repr(c) for c in self.choices),
            "finite-or-none": "a finite number or None",
            "tensor-or-none": "a tensor or None",
        }[self.kind]

    def accepts(self, value: object) -> bool:
        """Whether ``value`` (a Python value, as passed to the objective) satisfies the rule."""
        if self.kind == "bool":
            return isinstance(value, bool)
        if self.kind == "choice":
            return isinstance(value, str) and value in self.choices
        if self.kind == "tensor-or-none":
            return value is None or isinstance(value, torch.Tensor)
        if self.kind == "finite-or-none":
            if value is None:
                return True
            if isinstance(value, torch.Tensor):
                return value.is_floating_point() and bool(torch.isfinite(value).all())
        if isinstance(value, bool) or not isinstance(value, Real):
            return False
        x = float(value)
        if not math.isfinite(x):
            return False
        return {
            "positive": x > 0,
            "non-negative": x >= 0,
            "open-unit": 0 < x < 1,
            "below-half": 0 <= x < 0.5,
            "finite-or-none": True,
        }[self.kind]

    def parse(self, raw: str) -> object:
        """The typed value of a ``key=value`` string's value; ValueError with a short reason
        when it cannot be read (the range itself is checked by ``accepts``)."""
        text = raw.strip()
        if self.kind == "bool":
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError("must be true or false")
            return text.lower() in ("true", "1")
        if self.kind == "choice":
            return text
        if self.kind == "tensor-or-none":
            raise ValueError("is a tensor argument and cannot be set from a key=value string")
        if self.kind == "finite-or-none" and text.lower() == "none":
            return None
        try:
            return float(text)
        except ValueError:
            raise ValueError("must be a number") from None


POSITIVE = Rule("positive")
NON_NEGATIVE = Rule("non-negative")
OPEN_UNIT = Rule("open-unit")
BELOW_HALF = Rule("below-half")
BOOL = Rule("bool")
FINITE_OR_NONE = Rule("finite-or-none")
TENSOR_OR_NONE = Rule("tensor-or-none")


def choice(*choices: str) -> Rule:
    """A string hyperparameter that must be one of ``choices``."""
    return Rule("choice", tuple(choices))
