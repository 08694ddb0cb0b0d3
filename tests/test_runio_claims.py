"""Run I/O's guarantees: one live run per directory (an atomic ``flock`` claim that a killed
holder gives up), outputs that follow the umask, unwritable places found before any work, and
disk faults reported as one line."""

import errno
import os
import stat
import subprocess
import sys
import textwrap

import pytest

from errors import EXIT_USER, UserError, cli_entry
from runio import LOCK, atomic_write, check_writable, claim_run_dir, release_run_dir, run_files

HOLD = textwrap.dedent(
    """
    import sys, time
    from runio import claim_run_dir
    claim_run_dir(sys.argv[1])
    print("claimed", flush=True)
    time.sleep(60)
    """
)


def test_a_second_process_cannot_claim_a_live_run_and_a_killed_holder_releases(tmp_path):
    run_dir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE,
                              text=True, cwd=os.getcwd())  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "claimed"
        with pytest.raises(UserError, match="being written by another process"):
            claim_run_dir(run_dir, overwrite=True)
    finally:
        holder.kill()
        holder.wait()
    assert claim_run_dir(run_dir) is False  # the kernel dropped the killed holder's lock
    (run_dir / "config.json").write_text("{}")
    release_run_dir(run_dir)
    assert not (run_dir / LOCK).exists() and run_files(run_dir) == [run_dir / "config.json"]
    with pytest.raises(UserError, match="already holds a run"):
        claim_run_dir(run_dir)
    assert not (run_dir / LOCK).exists()  # a refused claim leaves nothing behind
    assert claim_run_dir(run_dir, resume=True) is True
    release_run_dir(run_dir)


def test_atomic_writes_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "a.json", lambda p: p.write_text("{}"))
        assert stat.S_IMODE(os.stat(tmp_path / "a.json").st_mode) == 0o644
        os.umask(0o077)
        atomic_write(tmp_path / "b.json", lambda p: p.write_text("{}"))
        assert stat.S_IMODE(os.stat(tmp_path / "b.json").st_mode) == 0o600
    finally:
        os.umask(old)


def test_unwritable_places_are_found_before_any_work(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match=r"X.out_dir: .*file exists and is not a directory"):
        check_writable(tmp_path / "file", "X.out_dir")
    with pytest.raises(UserError, match=r"X.out_dir: cannot create .*sub \(.*file is not a dir"):
        check_writable(tmp_path / "file" / "sub", "X.out_dir")
    check_writable(tmp_path / "new" / "dir", "X.out_dir")
    assert not (tmp_path / "new").exists()  # nothing is created or written by the check
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if not os.access(ro, os.W_OK):  # as root, permissions do not bind (the CLI tests drop
            with pytest.raises(UserError, match=r"cannot create .*ro/x \(cannot write in"):
                check_writable(ro / "x", "X.out_dir")  # them with setpriv)
    finally:
        ro.chmod(0o755)


def test_a_disk_fault_is_one_line(capsys):
    def full(argv):
        raise OSError(errno.ENOSPC, "No space left on device", "runs/x/metrics.jsonl")

    assert cli_entry(full, []) == EXIT_USER
    err = capsys.readouterr().err.strip()
    assert err == "error: cannot write runs/x/metrics.jsonl: No space left on device"

    def bug(argv):
        raise OSError(errno.EBADF, "Bad file descriptor")

    with pytest.raises(OSError):  # not a disk fault: a bug keeps its traceback
        cli_entry(bug, [])
