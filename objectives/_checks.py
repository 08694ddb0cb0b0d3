"""Input checks shared by the objective functions: a wrong shape or a positive log-probability
is a caller's bug, refused with a ValueError naming the function and the argument.

NaN inputs are *not* refused here: the training loops detect a non-finite loss, and every
objective keeps a NaN row's effect inside that row's (or that prompt's) loss.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor

LOGP_TOL = 1e-5
"""Log-probabilities above this (beyond rounding of a probability of 1) are refused."""


def _shape(x: object) -> tuple[int, ...]:
    return tuple(x.shape) if isinstance(x, Tensor) else tuple(torch.as_tensor(x).shape)


def same_shape(fn: str, **tensors: Tensor | None) -> tuple[int, ...]:
    """The common shape of the given (non-None) tensors; a ValueError when any two differ
    (no broadcasting: ``(2, 1)`` against ``(3,)`` would silently give a ``(2, 3)`` loss)."""
    given = {k: _shape(v) for k, v in tensors.items() if v is not None}
    shapes = set(given.values())
    if len(shapes) > 1:
        listed = ", ".join(f"{k} {s}" for k, s in given.items())
        raise ValueError(f"{fn}: inputs must have exactly the same shape, got {listed}")
    return next(iter(shapes)) if shapes else ()


def expect_shape(fn: str, name: str, x: Tensor | None, shape: tuple[int, ...], why: str) -> None:
    """A ValueError unless ``x`` (when given) has exactly ``shape``."""
    if x is not None and _shape(x) != tuple(shape):
        raise ValueError(f"{fn}: {name} must have shape {tuple(shape)} ({why}), got {_shape(x)}")


_SKIP_VALUE_CHECKS = False


@contextlib.contextmanager
def values_checked_once() -> Iterator[None]:
    """Within the block, skip the value check of ``logps_not_positive`` (a device sync and ~10
    small operations per call). For loops that already checked the same inputs' kind once, e.g.
    the bandit's steps after the first of a round: its log-probs come from a log-softmax."""
    global _SKIP_VALUE_CHECKS
    previous, _SKIP_VALUE_CHECKS = _SKIP_VALUE_CHECKS, True
    try:
        yield
    finally:
        _SKIP_VALUE_CHECKS = previous


def logps_not_positive(fn: str, **tensors: Tensor | None) -> None:
    """A ValueError naming the first input with a log-probability above ``LOGP_TOL`` (or the
    rounding of its dtype, if coarser). NaN is let through. One device sync for all inputs."""
    if _SKIP_VALUE_CHECKS:
        return
    given = {k: v for k, v in tensors.items() if isinstance(v, Tensor) and v.numel()}
    if not given:
        return
    tol = {
        k: max(LOGP_TOL, torch.finfo(v.dtype).eps) if v.is_floating_point() else LOGP_TOL
        for k, v in given.items()
    }
    bad = torch.stack([(v.detach() > tol[k]).any() for k, v in given.items()])
    if not bool(bad.any()):
        return
    for (k, v), b in zip(given.items(), bad.tolist()):
        if b:
            worst = v.detach().double().nan_to_num(nan=-torch.inf).max().item()
            raise ValueError(
                f"{fn}: {k} must be log-probabilities (<= 0, up to {tol[k]:g} of rounding), "
                f"got a value of {worst:g}"
            )


def baseline_per_prompt(fn: str, baseline: Tensor | float | None, rewards: Tensor) -> None:
    """A ValueError unless ``baseline`` broadcasts to the per-prompt shape of ``rewards``, i.e.
    ``rewards.shape[:-1] + (1,)``: one value per prompt (or shared), constant over the samples.
    A scalar, ``(S, 1, 1)`` against ``(S, P, N)`` rewards, or ``(P, 1)`` against ``(P, N)`` all
    qualify; a bare ``(P,)`` would broadcast along the sample axis instead and is refused."""
    if baseline is None:
        return
    target = (*_shape(rewards)[:-1], 1)
    shape = _shape(baseline)
    try:
        ok = torch.broadcast_shapes(shape, target) == torch.Size(target)
    except RuntimeError:
        ok = False
    if not ok:
        raise ValueError(
            f"{fn}: baseline of shape {shape} must broadcast to the per-prompt shape {target} "
            f"of rewards {_shape(rewards)} (one value per prompt, with a size-1 sample axis)"
        )
