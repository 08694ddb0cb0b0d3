"""The console scripts of pyproject's [project.scripts] are installed and reach their CLIs."""

import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


@pytest.mark.parametrize(
    ("script", "expect"),
    [
        ("modeseek-bandit", "--preset"),
        ("modeseek-train", "--objective"),
        ("modeseek-gradients", "steps"),
        ("modeseek-diagnose", "--verify"),
    ],
)
def test_console_script_help(script, expect):
    path = BIN / script
    assert path.exists(), f"{script} is not installed: run `pip install -e .`"
    out = subprocess.run([str(path), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert expect in out.stdout


def test_bandit_script_reports_bad_input_with_exit_2():
    path = BIN / "modeseek-bandit"
    assert path.exists(), "modeseek-bandit is not installed: run `pip install -e .`"
    out = subprocess.run([str(path), "--lr", "-1", "--out-dir", ""], capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert out.returncode == 2
    assert "error: BanditConfig.lr" in out.stderr


def test_diagnose_script_takes_trl_spellings():
    """``modeseek-diagnose`` lists the HF/TRL aliases in --help and names the flag as typed in
    a one-line error (exit 2)."""
    path = BIN / "modeseek-diagnose"
    assert path.exists(), "modeseek-diagnose is not installed: run `pip install -e .`"
    out = subprocess.run([str(path), "--help"], capture_output=True, text=True, timeout=120)
    assert "--max_length = --max-len" in out.stdout and "--loss_type ipo" in out.stdout
    out = subprocess.run([str(path), "--max_length", "0"], capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert out.returncode == 2
    assert out.stderr.strip() == "error: --max_length: must be at least 1, got 0"
