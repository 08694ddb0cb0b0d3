"""``runio.validate.check_types``: every config field's value is checked against its annotation
(one line naming the field), so a wrong kind of value never falls back to a default or fails
deep inside a run."""

import dataclasses
from typing import Literal

import pytest

from errors import UserError
from runio.validate import check_types


@dataclasses.dataclass
class C:
    n: int = 1
    x: float = 0.5
    flag: bool = False
    name: str = "a"
    mode: Literal["on", "off"] = "on"
    seeds: tuple[int, ...] = (0,)
    tags: tuple[str, ...] = ()
    limit: int | None = None


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("n", 2.5, "C.n: must be an integer, got 2.5"),
        ("n", 2.0, "C.n: must be an integer, got 2.0"),
        ("n", True, "C.n: must be an integer, got True"),
        ("n", "3", "C.n: must be an integer, got '3'"),
        ("x", "0.1", "C.x: must be a number, got '0.1'"),
        ("x", False, "C.x: must be a number, got False"),
        ("flag", 1, "C.flag: must be true/false, got 1"),
        ("name", 3, "C.name: must be a string, got 3"),
        ("mode", "On", "C.mode: must be one of 'on', 'off', got 'On'"),
        ("seeds", 3, "C.seeds: must be a sequence of integers, got 3"),
        ("seeds", (0, 1.5), "C.seeds: must be a sequence of integers, got (0, 1.5)"),
        ("tags", "beta=0.1", "C.tags: must be a sequence of strings, got 'beta=0.1'"),
        ("limit", 1.5, "C.limit: must be an integer or None, got 1.5"),
    ],
)
def test_wrong_kinds_are_refused_naming_the_field(field, value, message):
    with pytest.raises(UserError) as e:
        check_types(C(**{field: value}))
    assert str(e.value) == message


def test_right_kinds_pass():
    check_types(C(n=3, x=1, flag=True, mode="off", seeds=[1, 2], tags=["a"], limit=4))
    check_types(C())
