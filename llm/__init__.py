"""The harness that runs the same objectives on any causal LM from ``transformers``: offline
preference pairs, or Algorithm 1's on-policy / offline / hybrid rounds with a reward function,
with LoRA, reference log-prob caching and multi-GPU through ``accelerate``.

>>> import llm
>>> result = llm.run(llm.TrainConfig(model="tiny-gpt2", objective="dpo", max_steps=2))
>>> result.metrics[["step", "loss/train"]]

The public surface: ``TrainConfig`` and ``run`` (returns a ``RunResult``: config, metrics as a
DataFrame, run directory, and the last record as a mapping). Names load on first use, so
importing ``llm`` or one submodule does not import ``transformers``.
"""

from __future__ import annotations

import importlib

_PUBLIC = {
    "TrainConfig": "llm.config",
    "run": "llm.train",
    "RunResult": "runio.results",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'llm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
