"""The shipped data sets, found beside the installed ``llm`` package (the repository root's
``data/``), wherever the command runs: the defaults of ``--data``, ``--prompts`` and the
evaluation set are these absolute paths, not names relative to the working directory (a path
the user gives is still read relative to the working directory)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
"""The directory holding the ``llm`` package and ``data/`` (the repository root)."""
DATA = ROOT / "data"
PAIRS_TRAIN = str(DATA / "shakespeare_prefs" / "train.jsonl")
PAIRS_TEST = str(DATA / "shakespeare_prefs" / "test.jsonl")
PROMPTS = str(DATA / "shakespeare_prompts" / "train.jsonl")


def is_shipped_pairs(path: str | None) -> bool:
    """Whether ``path`` (relative to the working directory, or absolute) is the shipped training
    pairs file."""
    if not path:
        return False
    try:
        return Path(path).expanduser().resolve() == Path(PAIRS_TRAIN)
    except (OSError, RuntimeError):
        return False


def portable(value: object) -> object:
    """A path under the shipped ``data/`` as its repository-relative name (``data/...``), any
    other value unchanged: what a run's name hash sees, so that a run of the shipped data has
    the same name from every clone and working directory."""
    if not isinstance(value, str) or not value:
        return value
    try:
        rel = Path(value).expanduser().resolve().relative_to(DATA)
    except (ValueError, OSError, RuntimeError):
        return value
    return f"data/{rel.as_posix()}"
