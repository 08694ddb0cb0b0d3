"""The error contract of every command-line entry point (part of the core: the objectives, the
rounds, run I/O and both worlds import it; it imports nothing of the project).

- ``UserError`` (a ``ValueError``): the user's input is wrong (config value, data row, file,
  path). The CLI prints ``error: <message>`` on one line and exits with code 2, before anything
  heavy has run wherever the check can be made up front.
- ``NonFiniteError``: training produced a NaN/inf loss or gradient norm. The run stops without
  writing a checkpoint of the bad weights; exit code 3.
- A disk fault (``DISK_FAULTS``: disk full, file size limit, no permission, read-only file
  system) is one ``error: cannot write <file>: ...`` line, exit code 2.
- Anything else is a bug: its traceback is printed as usual.

``--debug`` on the command line (or ``MODESEEK_DEBUG=1``) re-raises user errors with their
traceback.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import gc
import io
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")

EXIT_USER = 2
EXIT_NONFINITE = 3


class UserError(ValueError):
    """A problem with the user's input, reported as one line (no traceback) by the CLIs."""


class NonFiniteError(RuntimeError):
    """A non-finite loss or gradient norm: the run was stopped before the update was saved."""


DISK_FAULTS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS)
"""OSError numbers that are the machine's state, not a bug: disk full, file size limit, quota,
no permission, read-only file system. The CLIs report them as one line (exit 2)."""


def is_disk_fault(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in DISK_FAULTS


_DEFERRED = contextvars.ContextVar("modeseek_validation_deferred", default=False)


@contextlib.contextmanager
def deferred_validation() -> Iterator[None]:
    """Inside this block, configs skip validation in ``__post_init__`` (``validation_deferred``
    tells them): a CLI parses with tyro, whose error box would wrap our one-line message, then
    validates the parsed config itself."""
    token = _DEFERRED.set(True)
    try:
        yield
    finally:
        _DEFERRED.reset(token)


def validation_deferred() -> bool:
    return _DEFERRED.get()


def _one_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def cli_entry(main: Callable[[list[str]], object], argv: Sequence[str] | None = None) -> int:
    """Run ``main(argv)`` under the error contract; returns the process exit code.

    ``--debug`` is removed from ``argv`` before ``main`` sees it. With ``argv`` None (a real
    command line, whose process ends next) the objects still alive are moved out of the cyclic
    garbage collector's reach (``gc.freeze``) before returning: interpreter shutdown otherwise
    runs full collections over torch's object graph (tenths of a second of a 3 s bandit
    command on this machine). Shutdown is otherwise unchanged (atexit handlers, buffers,
    reference counting).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("MODESEEK_DEBUG", "") not in ("", "0")
    args = [a for a in args if a != "--debug"]
    try:
        main(args)
    except (UserError, FileNotFoundError, NotADirectoryError, IsADirectoryError) as e:
        if debug:
            raise
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return EXIT_USER
    except NonFiniteError as e:
        if debug:
            raise
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return EXIT_NONFINITE
    except OSError as e:
        if debug or not is_disk_fault(e):
            raise
        where = f" {e.filename}" if e.filename else ""
        print(f"error: cannot write{where}: {e.strerror or e}", file=sys.stderr)
        return EXIT_USER
    finally:
        if argv is None:
            gc.freeze()
    return 0


def one_line_cli(parse: Callable[[], T]) -> T:
    """``parse()`` (a tyro parser call) with tyro's error box, printed when a flag's value
    cannot be read (``--rounds 2.5``, ``--mode sideways``, an unknown flag), turned into one
    ``UserError`` line (exit code 2 under ``cli_entry``) like every other bad value;
    ``--help`` and what tyro prints on success pass through."""
    buf = io.StringIO()
    try:
        with contextlib.redirect_stderr(buf):
            result = parse()
    except SystemExit as e:
        if e.code in (0, None):
            sys.stderr.write(buf.getvalue())
            raise
        text = _box_text(buf.getvalue()) or f"cannot parse the command line ({e})"
        raise UserError(text) from None
    sys.stderr.write(buf.getvalue())
    return result


def _box_text(text: str) -> str:
    """The message of a rich error box: the lines between its title and first rule, joined
    (rich draws the box in ASCII, with a rule under the title, where stderr is not UTF-8)."""
    lines = [line.strip().strip("│╭╮╰╯").strip() for line in text.splitlines()]
    body = []
    for line in lines[1:]:
        if line and set(line) <= {"─", "-"}:
            if body:
                break
            continue  # the ASCII box's rule under its title
        body.append(line)
    return " ".join(" ".join(body or lines).split())


def exit_on_error(main: Callable[[list[str]], object], argv: Sequence[str] | None = None) -> None:
    """``cli_entry(main, argv)`` for a ``main`` that returns normally: exits the process with
    the error contract's code (2 or 3) when it is not 0."""
    code = cli_entry(main, argv)
    if code:
        sys.exit(code)
