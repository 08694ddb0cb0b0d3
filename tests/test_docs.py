"""The documentation runs: every ``python`` block of README and of the pages under ``docs/`` is
executed (page by page, in order, one namespace per page), README's quick-start commands run,
every relative link of README points at a file (and anchor), and README stays short.

A block too slow for the suite is opted out, visibly, by this line right before its fence::

    <!-- docs-test: skip (why it cannot run here) -->

and the number of such blocks is held small (``MAX_SKIPPED``).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").rglob("*.md"))]
README_MAX_LINES = 220

SKIP = re.compile(r"^<!--\s*docs-test:\s*skip\s*\((?P<why>[^)]+)\)\s*-->$")
MAX_SKIPPED = 3
"""Opted-out blocks allowed over all pages: a page whose examples cannot run is a page to fix."""
SLOW_BLOCK_S = 60.0
"""A block slower than this fails, naming itself: make it faster or opt it out."""

FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<lang>[\w+-]*)[^\n]*$")

# README's shell commands that the test does not run, by the start of the command, and why
NOT_RUN = {
    "make figures": "the project's main job (minutes); tests/test_figures_quick.py runs every "
    "figure script with --quick",
    "make test": "runs this suite (lint, docs build, pytest): it would call itself",
    "make test-fast": "runs this suite without the slow tests: it would call itself",
    "python -m toy.playground": "a server that runs until stopped; the playground has its own "
    "browser test",
}


def code_blocks(text: str, lang: str) -> list[tuple[int, str, str | None]]:
    """The fenced blocks of ``lang`` in a markdown text: (line number, code, skip reason or None).
    A block's skip reason comes from a ``docs-test: skip`` comment on the line before its fence
    (blank lines between them allowed)."""
    lines = text.splitlines()
    out = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, indent = m["fence"], len(m["indent"])
        end = i + 1
        while end < len(lines) and not lines[end].strip().startswith(fence):
            end += 1
        if m["lang"] == lang:
            body = "\n".join(line[indent:] for line in lines[i + 1 : end])
            prev = i - 1
            while prev >= 0 and not lines[prev].strip():
                prev -= 1
            why = SKIP.match(lines[prev].strip()) if prev >= 0 else None
            out.append((i + 1, body, why["why"].strip() if why else None))
        i = end + 1
    return out


def _pages_with_python() -> list[Path]:
    return [p for p in PAGES if code_blocks(p.read_text(encoding="utf-8"), "python")]


def _id(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.fixture
def docs_cwd(tmp_path, monkeypatch):
    """A scratch working directory in which the shipped ``data/`` resolves (examples use the
    default relative paths) and the repository imports, as from the clone's root."""
    (tmp_path / "data").symlink_to(ROOT / "data", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.syspath_prepend(str(ROOT))
    return tmp_path


@pytest.mark.parametrize("page", _pages_with_python(), ids=_id)
def test_python_blocks_run(page, docs_cwd):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    namespace: dict = {"__name__": "__docs__"}
    try:
        for line, code, why in code_blocks(page.read_text(encoding="utf-8"), "python"):
            if why:
                continue
            start = time.perf_counter()
            try:
                exec(compile(code, f"{_id(page)}:{line}", "exec"), namespace)
            except Exception as e:
                raise AssertionError(f"{_id(page)}, block at line {line}: {e!r}") from e
            took = time.perf_counter() - start
            assert took < SLOW_BLOCK_S, (
                f"{_id(page)}, block at line {line} took {took:.0f} s: make it faster or put "
                "<!-- docs-test: skip (why) --> before its fence"
            )
    finally:
        plt.close("all")


def test_opted_out_blocks_are_few_and_say_why():
    skipped = [
        (_id(page), line, why)
        for page in PAGES
        for line, _, why in code_blocks(page.read_text(encoding="utf-8"), "python")
        if why
    ]
    assert len(skipped) <= MAX_SKIPPED, skipped
    assert all(len(why) >= 10 for _, _, why in skipped), skipped


def test_the_skip_marker_is_read():
    text = (
        "```python\nrun = 1\n```\n\n<!-- docs-test: skip (needs a GPU for minutes) -->\n"
        "```python\nslow()\n```\n  ```python\n  x = 2\n  ```\n```bash\nls\n```\n"
    )
    assert code_blocks(text, "python") == [
        (1, "run = 1", None),
        (6, "slow()", "needs a GPU for minutes"),
        (9, "x = 2", None),
    ]


# ---- README's commands -----------------------------------------------------------------------


def readme_commands() -> list[str]:
    """Every command of README's ``bash`` blocks (continuation lines joined, comments dropped)."""
    commands = []
    for _, code, _ in code_blocks(README.read_text(encoding="utf-8"), "bash"):
        joined = re.sub(r"\\\n\s*", " ", code)
        for raw in joined.splitlines():
            words = shlex.split(raw, comments=True)
            if words:
                commands.append(shlex.join(words))
    return commands


def _not_run_reason(command: str) -> str | None:
    for start, why in NOT_RUN.items():
        if command == start or command.startswith(start + " "):
            return why
    return None


def test_readme_commands_are_run_or_excluded_by_name():
    commands = readme_commands()
    run = [c for c in commands if _not_run_reason(c) is None]
    assert any(c.startswith("python -m llm.train") for c in run), commands
    assert {"make figures", "make test", "python -m toy.playground"} <= set(commands) - set(run)


@pytest.mark.parametrize(
    "command", [c for c in readme_commands() if _not_run_reason(c) is None], ids=lambda c: c[:60]
)
def test_readme_command_runs(command, tmp_path):
    (tmp_path / "data").symlink_to(ROOT / "data", target_is_directory=True)
    words = shlex.split(command)
    assert words[0] == "python", f"README's commands run with the environment's python: {command}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    done = subprocess.run(
        [sys.executable, *words[1:]],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"{command}\n{done.stderr[-3000:]}"


# ---- README's links and length ---------------------------------------------------------------

LINK = re.compile(r"\]\((?P<md>[^)\s]+)(?:\s+\"[^\"]*\")?\)|(?:href|src)=\"(?P<html>[^\"]+)\"")


def slug(heading: str) -> str:
    """A heading's anchor as mkdocs (Python-Markdown's toc) and GitHub make it for ASCII text."""
    text = re.sub(r"`|\*|\[|\]\([^)]*\)", "", heading)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(page: Path) -> set[str]:
    text = page.read_text(encoding="utf-8")
    ids = set(re.findall(r"\bid=\"([^\"]+)\"", text))
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*$", text, flags=re.M)
    return ids | {slug(h) for h in headings}


def readme_links() -> list[str]:
    found = []
    for m in LINK.finditer(README.read_text(encoding="utf-8")):
        target = m["md"] or m["html"]
        if not re.match(r"^[a-z][a-z0-9+.-]*:", target) and not target.startswith("#"):
            found.append(target)
    return found


def test_readme_relative_links_resolve():
    links = readme_links()
    assert any(link.startswith("figures/") for link in links)
    broken = []
    for link in links:
        path, _, anchor = link.partition("#")
        target = (ROOT / path).resolve()
        if not target.exists():
            broken.append(link)
        elif anchor and target.suffix == ".md" and anchor not in anchors(target):
            broken.append(link)
    assert not broken, broken


def test_readme_is_short():
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert n <= README_MAX_LINES, f"README has {n} lines; move detail into docs/"
