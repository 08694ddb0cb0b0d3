"""Which held-out data a pairs run evaluates on: ``--eval-data`` resolved (``EvalSource``).

- ``--eval-data FILE`` (any source ``--data`` takes) wins; ``--eval-data ''`` (or None) turns
  evaluation off.
- ``auto`` (the default): with the shipped training data, the shipped Shakespeare test set; with
  your own ``--data``, its test split (``--eval-data-split``, alias ``--dataset_test_split``;
  ``test`` when not given) when the source has splits (a saved ``DatasetDict`` directory, a
  directory of data files ``datasets.load_dataset`` splits by name, a hub dataset) and that
  split exists; otherwise no evaluation. A split named explicitly that the source lacks is an
  error; a single file has no splits, so it is not evaluated (say ``--eval-data FILE``).

The resolution is recorded in config.json (``config.resolved_eval``), enters the run's name
(the resolved path and split, not the word ``auto``) and is printed as one line when the data
are loaded."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from llm import shipped
from runio import UserError

AUTO = "auto"
DEFAULT_TEST_SPLIT = "test"


@dataclass(frozen=True)
class EvalSource:
    path: str | None
    """What is read for evaluation (None: no evaluation)."""
    split: str | None
    """Its split (None: the data's ``--data-split``, for sources with splits)."""
    why: str
    """One line: what is evaluated and why."""

    def as_dict(self) -> dict:
        return {"data": self.path, "split": self.split, "why": self.why}


_SPLITS: dict[str, tuple[list[str] | None, str]] = {}


def split_names(path: str) -> tuple[list[str] | None, str]:
    """(the source's split names, or None when it has none or they cannot be listed; why
    not). A file has none; a saved ``DatasetDict`` lists them in ``dataset_dict.json``; a
    directory of data files or a hub name: ``datasets.load_dataset_builder``'s data files
    (offline: only what is cached)."""
    if path not in _SPLITS:
        _SPLITS[path] = _split_names(path)
    return _SPLITS[path]


def _split_names(path: str) -> tuple[list[str] | None, str]:
    from llm.data import is_hub_name

    p = Path(path).expanduser()
    if p.is_file():
        return None, "is one file, without splits"
    if p.is_dir():
        saved = p / "dataset_dict.json"
        if saved.is_file():
            try:
                return list(json.loads(saved.read_text(encoding="utf-8"))["splits"]), ""
            except (OSError, ValueError, KeyError, TypeError):
                return None, "has an unreadable dataset_dict.json"
        if (p / "state.json").is_file():
            return None, "is one saved Dataset, without splits"
    elif not is_hub_name(path):
        return None, "does not exist"
    try:
        import datasets

        builder = datasets.load_dataset_builder(str(p) if p.is_dir() else path)
    except Exception as e:  # offline and not cached, not a dataset, bad files
        return None, f"has no splits that could be listed ({type(e).__name__})"
    files = builder.config.data_files
    if files:
        return [str(s) for s in files], ""
    splits = builder.info.splits
    return ([str(s) for s in splits], "") if splits else (None, "lists no splits")


def resolve(cfg) -> EvalSource:
    """The ``EvalSource`` of a ``TrainConfig`` (the rule in the module docstring)."""
    given = cfg.eval_data
    if given != AUTO:
        if not given:
            return EvalSource(None, None, "no evaluation (--eval-data '')")
        return EvalSource(given, cfg.eval_data_split, f"{given} (--eval-data)")
    if shipped.is_shipped_pairs(cfg.data):
        return EvalSource(
            shipped.PAIRS_TEST,
            None,
            "the shipped Shakespeare test set (the default with the shipped training data)",
        )
    split = cfg.eval_data_split or DEFAULT_TEST_SPLIT
    names, why_not = split_names(cfg.data)
    if names is not None and split in names:
        return EvalSource(cfg.data, split, f"the {split!r} split of {cfg.data}")
    if cfg.eval_data_split is not None and names is not None:
        raise UserError(
            f"TrainConfig.eval_data_split: {cfg.data} has no split {split!r}; it has {names}"
        )
    has = f"has no {split!r} split (it has {names})" if names is not None else why_not
    return EvalSource(
        None, None, f"no evaluation: --data {cfg.data} {has}; give --eval-data to evaluate"
    )
