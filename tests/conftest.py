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


def tiny_train_config(tmp_path, **fields):
    """An ``llm.config.TrainConfig`` for a few-step pairs run of a tiny model under ``tmp_path``
    (runs/ and cache/ there, no progress bar, no generations): the tests' shared base, to
    which each module adds its data and what it varies."""
    from llm.config import TrainConfig

    base = dict(
        max_len=140,
        max_prompt_len=110,
        lr=1e-2,
        batch_size=4,
        max_steps=3,
        gen_examples=0,
        out_dir=str(tmp_path / "runs"),
        cache_dir=str(tmp_path / "cache"),
        progress=False,
    )
    return TrainConfig(**{**base, **fields})
