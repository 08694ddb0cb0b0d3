"""Numerically stable primitives shared by the objectives."""

from __future__ import annotations

import torch
from torch import Tensor

_LOG_HALF = -0.6931471805599453  # log(1/2): switch point between the two forms of log1mexp


def log1mexp(a: Tensor) -> Tensor:
    """log(1 - exp(a)) for a <= 0, stable everywhere (Maechler 2012).

    Values of ``a`` above ``-eps`` of its dtype (a log-probability that rounds to 0, a
    probability of 1) are clamped to ``-eps``: the value there is large negative but finite.
    The clamp is straight-through for the gradient: it is the gradient *at* ``-eps``,
    -e^a/(1 - e^a) ≈ -1/eps, finite and of the true sign, not the 0 of a plain ``clamp`` (which
    would switch off ASFT's and ORPO's push-down exactly where the closed form is largest,
    λ P/(1 - P) → +∞ as P → 1). Below ``-eps`` value and gradient are the exact ones.
    """
    eps = torch.finfo(a.dtype).eps
    # value -eps and gradient 1 (so d/da = the derivative at -eps) where a >= -eps; a elsewhere
    a = torch.where(a < -eps, a, a - (a + eps).detach())
    return torch.where(a > _LOG_HALF, torch.log(-torch.expm1(a)), torch.log1p(-torch.exp(a)))


def log_odds(logp: Tensor) -> Tensor:
    """log(p / (1 - p)) from log p, stable for p near 0 and near 1."""
    return logp - log1mexp(logp)


def group_zscore(x_PN: Tensor, eps: float = 1e-6) -> Tensor:
    """Standardise within each row (prompt): (x - mean) / (std + eps), population std."""
    mean = x_PN.mean(dim=-1, keepdim=True)
    std = x_PN.std(dim=-1, keepdim=True, correction=0)
    return (x_PN - mean) / (std + eps)


def as_tensor_like(value: Tensor | float | None, like: Tensor) -> Tensor | None:
    """Broadcastable, detached tensor of ``like``'s dtype/device, or None."""
    if value is None:
        return None
    return torch.as_tensor(value, dtype=like.dtype, device=like.device).detach()
