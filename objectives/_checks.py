"""Input checks shared by the objective functions: an input of the wrong kind, a wrong shape or
a positive log-probability is a caller's bug, refused with one line naming the function and the
argument: a TypeError for the kind (``same_kind``), a ValueError for the shape and the values.

The kind rule (``same_kind``, run by ``same_shape``, so by every objective on every call, even
within ``values_checked_once``): every tensor input given (log-probs, rewards, a tensor
baseline) must be a ``torch.Tensor`` of floating dtype, so a NumPy array, a list, a Python
number or an integer or bool tensor is refused; all of them must be on one device and of one
floating dtype. Mixed float dtypes (float32 against float64) are refused, not promoted: a
promotion would silently change the precision, and the dtype of the loss and its gradient.
Exceptions: a ``baseline`` may also be a Python number (like a hyperparameter), and PPO's
``token_mask`` may be bool or integer (a float mask must have the inputs' dtype). These are a
few isinstance/dtype/device comparisons per tensor, with no device sync.

NaN inputs are *not* refused here: the training loops detect a non-finite loss, and every
objective keeps a NaN row's effect inside that row's (or that prompt's) loss.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from numbers import Real

import torch
from torch import Tensor

LOGP_TOL = 1e-5
"""Log-probabilities above this (beyond rounding of a probability of 1) are refused."""


MASK_INPUTS = frozenset({"token_mask"})
"""Inputs that may also be bool or integer tensors (a mask); the kind rule's other exception."""


def _kind(x: object) -> str:
    """``torch.int64`` for a tensor, else the type's name (``numpy.ndarray``, ``list``)."""
    if isinstance(x, Tensor):
        return str(x.dtype)
    t = type(x)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def _not_a_tensor(fn: str, name: str, x: object) -> TypeError:
    what = "a torch.Tensor" if name in MASK_INPUTS else "a torch.Tensor of floating dtype"
    return TypeError(f"{fn}: {name} must be {what}, got {_kind(x)}")


def same_kind(fn: str, **tensors: object) -> None:
    """A TypeError unless every given (non-None) input is a ``torch.Tensor`` of floating dtype
    (``MASK_INPUTS``: also bool or integer), the floating ones of the dtype of the first of
    them, all on the device of the first. Attribute reads only: no device sync."""
    dev_name = dev = float_name = dtype = None
    for name, x in tensors.items():
        if x is None:
            continue
        if not isinstance(x, Tensor):
            raise _not_a_tensor(fn, name, x)
        dt = x.dtype
        if not dt.is_floating_point:
            if name not in MASK_INPUTS:
                raise _not_a_tensor(fn, name, x)
        elif dtype is None:
            float_name, dtype = name, dt
        elif dt is not dtype:  # dtypes are singletons
            raise TypeError(
                f"{fn}: {name} is {dt} but {float_name} {dtype} (inputs must share one "
                "floating dtype; mixed dtypes are refused, not promoted)"
            )
        if dev is None:
            dev_name, dev = name, x.device
        elif x.device != dev:
            raise TypeError(f"{fn}: {name} is on {x.device} but {dev_name} on {dev}")


def _shape(x: object) -> tuple[int, ...]:
    return tuple(x.shape) if isinstance(x, Tensor) else tuple(torch.as_tensor(x).shape)


def same_shape(fn: str, **tensors: Tensor | None) -> tuple[int, ...]:
    """The common shape of the given (non-None) tensors; a ValueError when any two differ
    (no broadcasting: ``(2, 1)`` against ``(3,)`` would silently give a ``(2, 3)`` loss).
    Checks their kind first (``same_kind``: a TypeError)."""
    same_kind(fn, **tensors)
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
    qualify; a bare ``(P,)`` would broadcast along the sample axis instead and is refused.
    A TypeError unless it is a Python number or a tensor of the kind of ``rewards``."""
    if baseline is None:
        return
    if isinstance(baseline, Tensor):
        same_kind(fn, rewards=rewards, baseline=baseline)
    elif isinstance(baseline, bool) or not isinstance(baseline, Real):
        raise TypeError(
            f"{fn}: baseline must be a torch.Tensor of floating dtype or a Python number, "
            f"got {_kind(baseline)}"
        )
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
