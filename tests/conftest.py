"""Fixtures shared by several test modules."""

from pathlib import Path

import pytest

SHAKESPEARE_PAIRS = Path(__file__).resolve().parent.parent / "data/shakespeare_prefs/train.jsonl"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A directory with train.jsonl (the first 16 shipped pairs) and test.jsonl (the next 6)."""
    d = tmp_path_factory.mktemp("data")
    lines = SHAKESPEARE_PAIRS.read_text(encoding="utf-8").splitlines()
    (d / "train.jsonl").write_text("\n".join(lines[:16]) + "\n")
    (d / "test.jsonl").write_text("\n".join(lines[16:22]) + "\n")
    return d
