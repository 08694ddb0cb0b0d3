"""Type and choice checks of a config's fields, read from its annotations: the one place both
worlds' configs (and the CLIs and sweeps that build them) refuse a wrong kind of value, with a
``UserError`` naming the field, before anything runs.

Accepted: ``int`` (not a bool, not a float — 2.0 included, a count is a whole number), ``float``
(an int is fine; not a bool), ``bool``, ``str``, ``Literal[...]`` (one of the choices, exactly),
``tuple[X, ...]`` (a tuple or list of X; a single string or number is refused, so ``seeds=3``
or ``hp="beta=0.1"`` cannot pass for a sequence), and ``X | None``."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, Union

from errors import UserError


def _describe(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is tuple:
        plural = {int: "integers", float: "numbers", str: "strings", bool: "true/false values"}
        inner = args[0] if args else None
        return f"a sequence of {plural.get(inner, _describe(inner))}" if args else "a sequence"
    if tp is type(None):
        return "None"
    return {int: "an integer", float: "a number", bool: "true/false", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _accepts(tp: Any, value: Any) -> bool:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin in (Union, types.UnionType):
        return any(_accepts(a, value) for a in args)
    if origin is tuple:
        if not isinstance(value, (tuple, list)):
            return False
        inner = args[0] if args and (len(args) == 2 and args[1] is Ellipsis) else None
        return inner is None or all(_accepts(inner, v) for v in value)
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    return True  # a type this check does not know: left to the config's own rules


def check_types(cfg: Any) -> None:
    """A ``UserError`` ``<Config>.<field>: must be <kind>, got <value>`` for the first field whose
    value does not fit its annotation."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        tp = hints.get(f.name)
        if tp is not None and not _accepts(tp, value):
            raise UserError(
                f"{type(cfg).__name__}.{f.name}: must be {_describe(tp)}, got {value!r}"
            )
