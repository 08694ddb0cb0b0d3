"""Run I/O shared by ``toy/`` and ``llm/``: atomic files, metrics logs that survive a kill, run
directories that are never silently overwritten, versions for reproducibility, and the CLI's
error contract (one line and exit code 2 for a user error; a traceback only with --debug).

Nothing here knows about bandits or language models.
"""

from errors import (
    EXIT_NONFINITE,
    EXIT_USER,
    NonFiniteError,
    UserError,
    cli_entry,
    deferred_validation,
    exit_on_error,
    validation_deferred,
)
from runio.files import append_jsonl, atomic_write, check_writable, git_sha, read_jsonl, versions
from runio.results import RunResult
from runio.rundir import (
    LOCK,
    claim_run_dir,
    config_hash,
    is_complete,
    mark_complete,
    release_run_dir,
    run_files,
)

__all__ = [
    "EXIT_NONFINITE",
    "EXIT_USER",
    "LOCK",
    "NonFiniteError",
    "RunResult",
    "UserError",
    "append_jsonl",
    "atomic_write",
    "check_writable",
    "claim_run_dir",
    "cli_entry",
    "config_hash",
    "deferred_validation",
    "exit_on_error",
    "git_sha",
    "is_complete",
    "mark_complete",
    "read_jsonl",
    "release_run_dir",
    "run_files",
    "validation_deferred",
    "versions",
]
