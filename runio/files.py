"""Files of a run: atomic writes, a JSONL log that tolerates a torn last line, versions."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from errors import UserError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it onto
    ``path``: readers see the old file or the complete new one, never a partial write. The file
    gets the mode any new file gets (0666 less the umask), not the temporary file's 0600. An
    ``OSError`` without a file name (disk full, file size limit) is re-raised naming ``path``,
    so its one error line says which file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as e:  # a writer that failed without naming its file (disk full, size limit)
        if e.filename is None and e.errno is not None:
            raise OSError(e.errno, e.strerror or str(e), str(path)) from None
        raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def check_writable(directory: Path, what: str) -> None:
    """A ``UserError`` naming ``what`` (e.g. ``BanditConfig.out_dir``) unless files can be
    written in ``directory``, or, when it does not exist yet, it can be created there (the
    nearest existing directory above it is writable). Nothing is created or written: a probe
    file could look like a run's file to another process claiming the same directory. Checked
    before any work, so a bad place fails at once."""
    target = Path(directory).expanduser().absolute()
    if target.exists() and not target.is_dir():
        raise UserError(f"{what}: {target} exists and is not a directory")
    where = target
    while not (where.exists() or where.is_symlink()) and where.parent != where:
        where = where.parent
    why = "no write permission, or a read-only file system"
    if where == target:
        if not os.access(target, os.W_OK | os.X_OK):
            raise UserError(f"{what}: cannot write in {target} ({why})")
    elif not where.is_dir():
        raise UserError(f"{what}: cannot create {target} ({where} is not a directory)")
    elif not os.access(where, os.W_OK | os.X_OK):
        raise UserError(f"{what}: cannot create {target} (cannot write in {where}: {why})")


def append_jsonl(path: Path, record: dict) -> None:
    """Append one JSON line and flush it to disk (a kill can tear only this line)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: Path) -> list[dict]:
    """Records of a JSONL log. A last line without its newline that does not parse is the trace
    of a kill mid-write and is dropped; a bad line anywhere else is an error naming it."""
    path = Path(path)
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")
    torn = lines.pop() if lines else ""  # after the last newline: "" unless the write was torn
    records = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise UserError(f"{path}: line {i + 1} is not valid JSON ({e.msg})") from None
    if torn.strip():
        try:
            records.append(json.loads(torn))
        except json.JSONDecodeError:
            pass  # the torn tail of a killed write
    return records


def versions(*libs: str) -> dict[str, str]:
    """Python's version and those of the given installed distributions (absent ones skipped)."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for lib in ("torch", "numpy", "pandas", "matplotlib", *libs):
        try:
            out[lib] = md.version(lib)
        except md.PackageNotFoundError:
            pass
    return out


def git_sha() -> str | None:
    """The checkout's commit, or None outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None
