"""The docs' shell commands cannot rot: every ``python -m`` line of the library's entry points in a
shell block of docs/ (``toy.train``, ``llm.train`` — also behind ``accelerate launch -m`` —,
``toy.gradients``, ``llm.diagnose``, ``toy.playground``) parses with today's flags. Running them is
another matter: most train for minutes (the python blocks and README's quick start are run by
tests/test_docs.py); parsing is what catches a renamed flag, a removed choice or a bad value."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHELL_BLOCK = re.compile(r"```(?:bash|sh|console)\n(.*?)```", re.S)
ENTRY = re.compile(
    r"(?:^|\s)-m (toy\.train|llm\.train|toy\.gradients|llm\.diagnose|toy\.playground)(?:\s|$)"
)
PLACEHOLDER = re.compile(r"\.\.\.|<[^>]+>|\$\(|\$\{?[A-Z]")  # an elided or templated argument


def _commands() -> list[tuple[str, str, list[str]]]:
    found = []
    for page in sorted((ROOT / "docs").rglob("*.md")):
        for block in SHELL_BLOCK.findall(page.read_text()):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.split(" #")[0].strip()
                m = ENTRY.search(line)
                if not m or PLACEHOLDER.search(line):
                    continue
                argv = shlex.split(line[m.end() :])
                found.append((str(page.relative_to(ROOT)), m.group(1), argv))
    return found


COMMANDS = _commands()


def test_the_docs_have_commands_to_check():
    modules = {module for _, module, _ in COMMANDS}
    assert {"toy.train", "llm.train", "toy.gradients", "llm.diagnose"} <= modules, modules
    assert len(COMMANDS) >= 15


def _parse(module: str, argv: list[str]) -> object:
    if module == "toy.train":
        from toy.train import parse
    elif module == "llm.train":
        from llm.train import parse
    elif module == "toy.gradients":
        from toy.gradients import parse
    elif module == "llm.diagnose":
        from llm.diagnose.cli import parse
    else:
        from toy.playground import parser

        return parser().parse_args(argv)
    return parse(argv)


IDS = [f"{page}:{module}:{i}" for i, (page, module, _) in enumerate(COMMANDS)]


@pytest.mark.parametrize(("page", "module", "argv"), COMMANDS, ids=IDS)
def test_docs_command_parses(page, module, argv):
    try:
        assert _parse(module, argv) is not None
    except SystemExit as e:  # argparse/tyro: a bad flag exits
        if (argv and argv[0] in ("-h", "--help")) or "--summary-of" in argv:
            return
        pytest.fail(f"{page}: python -m {module} {shlex.join(argv)} does not parse (exit {e.code})")
