"""The categorical bandit of paper A (docs/science.md §2): a 100-arm policy trained with any
objective of ``objectives`` through Algorithm 1's rounds (``rounds``), with exact metrics.

>>> import toy
>>> result = toy.run(toy.preset("onpolicy_dpo", rounds=10, seeds=(0, 1), out_dir=""))
>>> result["reward/expected"]  # the last step, mean over the seeds

The public surface: ``BanditConfig`` and ``preset`` (``PRESETS``), ``run`` (one config, its
seeds batched; returns a ``RunResult``), and the module ``sweep`` (``toy.sweep.sweep(base, grid,
seeds)``: a grid of configs × seeds as batched computations; ``python -m toy.sweep`` its command
line). Names load on first use, so importing one submodule does not import the others.
"""

from __future__ import annotations

import importlib

_PUBLIC = {
    "BanditConfig": "toy.config",
    "PRESETS": "toy.config",
    "preset": "toy.config",
    "run": "toy.train",
    "RunResult": "toy.train",
}
_MODULES = ("sweep",)
__all__ = sorted((*_PUBLIC, *_MODULES))


def __getattr__(name: str):
    if name in _MODULES:  # a submodule, as ``import toy.sweep`` would bind it
        return importlib.import_module(f"toy.{name}")
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'toy' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC) | set(_MODULES))
