"""The command lines of ``llm.train`` and ``llm.diagnose`` with HF/TRL spellings
(``llm.flags``): parsed by tyro (``parse_config``) with the aliases listed in ``--help``, and
every ``UserError`` naming the flag the user typed (``--max_length``, not ``max_len``:
``spoken_errors``), also the errors raised later, while the run reads its data."""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence

from errors import one_line_cli
from llm.flag_tables import help_section
from llm.flags import TRAIN, Tool, translate_all
from runio import NonFiniteError, UserError, deferred_validation


def respell(message: str, spelled: dict[str, str]) -> str:
    """``message`` naming the flags the user typed: ``TrainConfig.max_len``, ``--max-len`` and
    the identifier ``max_len`` become ``--max_length`` where the user wrote that; an error
    about a hyperparameter a flag set (``--beta``) is prefixed with that flag."""
    for field, flag in spelled.items():
        if field.startswith("hp:"):
            continue
        message = re.sub(rf"\b(Train|Diagnose)Config\.{field}\b", flag, message)
        message = re.sub(rf"--{field.replace('_', '-')}(?![\w-])", flag, message)
        if "_" in field:  # a bare identifier (max_len=256), not a plain word such as "data"
            message = re.sub(rf"(?<![\w.-]){field}(?![\w-])", flag, message)
    for field, flag in spelled.items():
        key = field[3:]
        if field.startswith("hp:") and message.startswith("objective '"):
            if re.search(rf"(?<![\w.]){re.escape(key)}(?!\w)", message):
                return f"{flag}: {message}"
    return message


@contextlib.contextmanager
def spoken_errors(spelled: dict[str, str]) -> Iterator[None]:
    """A ``UserError`` or ``NonFiniteError`` raised inside names the flags the user typed
    (``respell``; ``spelled``: ``llm.flags.Translation.spelled``)."""
    try:
        yield
    except (UserError, NonFiniteError) as e:
        if spelled and e.args and isinstance(e.args[0], str):
            e.args = (respell(e.args[0], spelled), *e.args[1:])
        raise


def spelled_flags(argv: Sequence[str], tool: Tool = TRAIN) -> dict[str, str]:
    """Which flag the user typed for each field ``argv``'s aliases set."""
    return translate_all(list(argv), tool).spelled


def print_notes(notes: list[str]) -> None:
    """A translation's notes, one line each on stderr (the main process only)."""
    if int(os.environ.get("RANK", "0")) == 0:
        for note in notes:
            print(f"[llm] note: {note}", file=sys.stderr)


def parse_config(argv: Sequence[str], tool: Tool, description: str, validate: Callable):
    """``tool``'s validated config of a command line: HF/TRL spellings translated
    (``llm.flags``), parsed by tyro (its errors one line), then ``validate``d; ``--help`` lists
    the aliases; errors name the flags as typed."""
    import tyro

    t = translate_all(list(argv), tool)
    section = help_section(set(tool.fields()), tool.name, mismatched=not tool.several)
    text = f"{description}\n\n{section}"
    with spoken_errors(t.spelled):
        with deferred_validation():  # our one-line errors, not tyro's box around them
            cfg = one_line_cli(lambda: tyro.cli(tool.cls(), args=t.argv, description=text))
        validate(cfg)
    print_notes(t.notes)
    return cfg
