"""The result of a run, the same type for the bandit (``toy.run``) and a language model
(``llm.run``): the resolved config, every metrics record as a DataFrame (the rows of
metrics.jsonl), the run directory, and the last record, which the result also is as a mapping
(``result["loss/train"]``)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


@dataclass(eq=False)
class RunResult(Mapping):
    config: Any
    """The run's resolved config (``toy.BanditConfig`` or ``llm.TrainConfig``)."""
    metrics: pd.DataFrame
    """Every metrics record: one row per (seed, step) for the bandit, per logged step (pairs
    mode) or round (rounds modes) for a language model; slash-namespaced columns."""
    run_dir: Path | None
    """Where the outputs are; None when nothing was written (``out_dir=''``)."""
    final: dict = field(default_factory=dict)
    """The last record (a language model's, with its eval keys; the bandit's last step, mean
    over seeds), and ``run_dir`` as a string."""
    loaded: bool = False
    """True when a complete run was found (``resume``) and loaded instead of trained."""

    def __getitem__(self, key: str) -> Any:
        return self.final[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.final)

    def __len__(self) -> int:
        return len(self.final)
