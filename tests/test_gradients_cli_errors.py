"""``python -m toy.gradients`` refuses bad input with exit code 2 and one ``error:`` line on
stderr (no traceback, no output file), before anything is computed; ``--debug`` shows the
traceback. Subprocess cases import torch (~2 s each); more cases run in-process through
``toy.gradients.main``, which is what ``__main__`` calls."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from runio import UserError
from toy import gradients

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
ENV.pop("MODESEEK_DEBUG", None)

# (arguments, whether --out is added, text the error line must contain)
CASES = {
    "off_simplex": (
        ["point", "--objective", "dpo", "--x-w", "0.7", "--x-l", "0.5"],
        True,
        "--x-w and --x-l must be probabilities in (0, 1) with a sum of at most 1",
    ),
    "zero_prob": (
        ["point", "--objective", "asft", "--x-w", "0", "--x-l", "0.5"],
        False,
        "got 0 and 0.5",
    ),
    "bad_ref": (
        ["field", "--objective", "dpo", "--ref-w", "1.2"],
        True,
        "--ref-w and --ref-l must be probabilities",
    ),
    "grid": (["field", "--objective", "asft", "--grid", "1"], True, "--grid must be at least 2"),
    "arm": (["mass", "--objective", "dpo", "--chosen", "100"], True, "--chosen arms must be in"),
    "lr": (["mass", "--lr", "nan"], False, "--lr must be positive and finite, got nan"),
    "seeds": (["steps", "--objective", "bon", "--seeds", "-1"], True, "--seeds must be non-neg"),
    "objective": (
        ["point", "--objective", "nope", "--x-w", "0.3", "--x-l", "0.1"],
        False,
        "unknown objective 'nope'; choose from",
    ),
    "hp_range": (
        ["point", "--objective", "dpo", "--x-w", "0.3", "--x-l", "0.1", "--hp", "beta=nan"],
        True,
        "objective 'dpo': beta must be positive and finite, got nan",
    ),
    "hp_name": (
        ["field", "--objective", "asft", "--hp", "gamma=1"],
        False,
        "objective 'asft' has no hyperparameter(s) ['gamma']",
    ),
}


def _run(args):
    return subprocess.run(
        [sys.executable, "-m", "toy.gradients", *args],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_exits_2_with_one_error_line(case, tmp_path):
    args, with_out, text = CASES[case]
    out = tmp_path / "table.csv"
    proc = _run([*args, "--out", str(out)] if with_out else args)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert text in lines[0], lines[0]
    assert proc.stdout == ""
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_missing_out_directory_is_one_line(tmp_path):
    out = tmp_path / "no" / "table.csv"
    proc = _run(["point", "--objective", "dpo", "--x-w", "0.3", "--x-l", "0.1", "--out", str(out)])
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"error: --out {out}: directory {out.parent} does not exist"
    ]
    assert not out.parent.exists()


def test_debug_shows_the_traceback():
    proc = _run(["field", "--objective", "asft", "--grid", "1", "--debug"])
    assert proc.returncode not in (0, 2)
    assert "Traceback" in proc.stderr and "UserError: field: --grid" in proc.stderr


IN_PROCESS = {
    "c2": (["lemma", "--c2", "-1"], "--c2 must be non-negative and finite, got -1"),
    "lr_zero": (["lemma", "--lr", "0"], "--lr must be positive and finite, got 0"),
    "unpaired": (
        ["mass", "--chosen", "1", "2", "--rejected", "3"],
        "--chosen and --rejected must pair up, got 2 and 1",
    ),
    "negative_arm": (["mass", "--rejected", "-1"], "--rejected arms must be in [0, 100)"),
    "groups_in_point": (
        ["point", "--objective", "reinforce", "--x-w", "0.3", "--x-l", "0.1"],
        "objective 'reinforce' consumes 'groups' data",
    ),
    "hp_unused": (["kl", "--hp", "beta=1"], "kl: --hp is not used by this command"),
    "hp_without_objective": (["mass", "--hp", "beta=1"], "--hp needs --objective"),
    "hp_choice": (
        ["steps", "--objective", "bon_pushdown", "--hp", "pushdown=best"],
        "pushdown must be one of 'worst', 'mean', got 'best'",
    ),
    "hp_not_number": (
        ["mass", "--objective", "ipo", "--hp", "tau=big"],
        "objective 'ipo': tau must be a number, got 'big'",
    ),
    "simplex_nan": (
        ["point", "--objective", "sft", "--x-w", "0.3", "--x-l", "nan"],
        "got 0.3 and nan",
    ),
}


@pytest.mark.parametrize("case", sorted(IN_PROCESS))
def test_cli_in_process(case, capsys, monkeypatch):
    monkeypatch.delenv("MODESEEK_DEBUG", raising=False)
    args, text = IN_PROCESS[case]
    assert gradients.main(args) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], lines
    assert captured.out == ""
    with pytest.raises(UserError):  # in-process callers of parse get the exception
        gradients.parse(args)


def test_main_still_returns_the_table(tmp_path, capsys):
    out = tmp_path / "p.csv"
    table = gradients.run(
        gradients.parse(
            ["point", "--objective", "asft", "--x-w", "0.3", "--x-l", "0.2", "--out", str(out)]
        )
    )
    # ASFT's ratio λ x_w / ((1+λ)(1 - x_l)) at λ = 0.1: 0.03 / (1.1 · 0.8) = 0.0340909…
    assert abs(table.ratio.item() - 0.03 / 0.88) < 1e-12
    assert out.exists() and [p.name for p in tmp_path.iterdir()] == ["p.csv"]
    assert gradients.main(["point", "--objective", "sft", "--x-w", "0.5", "--x-l", "0.5"]) == 0
