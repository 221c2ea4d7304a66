"""The worker that acts for the job runs with the job user's uid, gid and groups."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import pwd
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fsx_stage.hooks.privileges import (
    UserCredentials,
    WorkerCrashed,
    WorkerError,
    WorkerTimeout,
    run_as_user,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")


@pytest.fixture
def creds(job_user: str) -> UserCredentials:
    entry = pwd.getpwnam(job_user)
    return UserCredentials.lookup(job_user, entry.pw_uid, entry.pw_gid)


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A root-owned directory everyone may traverse (pytest's tmp_path is root-only)."""
    path = Path(tempfile.mkdtemp(prefix="fsx-hooks-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@pytest.fixture
def shared_dir(open_dir: Path, creds: UserCredentials) -> Path:
    """A directory the job user owns (as scratch would be)."""
    path = open_dir / "scratch"
    path.mkdir()
    os.chown(path, creds.uid, creds.gid)
    return path


def _write(path: str, text: str) -> int:
    Path(path).write_text(text)
    return os.getuid()


def _ids() -> dict[str, object]:
    return {
        "ruid": os.getresuid(),
        "rgid": os.getresgid(),
        "groups": sorted(os.getgroups()),
        "home": os.environ.get("HOME"),
        "umask": os.umask(0o077),
    }


def test_files_written_belong_to_the_job_user(creds: UserCredentials, shared_dir: Path) -> None:
    target = shared_dir / "out.txt"
    uid = run_as_user(creds, _write, str(target), "hello")
    assert uid == creds.uid
    info = target.stat()
    assert (info.st_uid, info.st_gid) == (creds.uid, creds.gid)
    assert info.st_mode & 0o077 == 0  # umask 077 by default


def test_ids_and_groups_are_dropped_for_good(creds: UserCredentials) -> None:
    ids = run_as_user(creds, _ids)
    assert ids["ruid"] == [creds.uid] * 3
    assert ids["rgid"] == [creds.gid] * 3
    assert ids["groups"] == sorted(creds.groups)
    assert ids["home"] == pwd.getpwuid(creds.uid).pw_dir
    assert ids["umask"] == 0o077


def test_root_only_file_cannot_be_written(creds: UserCredentials, open_dir: Path) -> None:
    secret = open_dir / "root-only"
    secret.write_text("root")
    secret.chmod(0o600)
    with pytest.raises(WorkerError) as info:
        run_as_user(creds, _write, str(secret), "pwned")
    assert info.value.type_name == "PermissionError"
    assert info.value.errno == errno.EACCES
    assert secret.read_text() == "root"


def _raise() -> None:
    raise ValueError("the reason, AKIAABCDEFGHIJKLMNOP aws_secret_access_key=abc123xyz")


def test_exceptions_come_back_redacted(creds: UserCredentials) -> None:
    with pytest.raises(WorkerError) as info:
        run_as_user(creds, _raise)
    assert info.value.type_name == "ValueError"
    assert "the reason" in info.value.message
    assert "abc123xyz" not in info.value.message
    assert "ABCDEFGHIJKLMNOP" not in info.value.message


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_worker_killed_without_a_report(creds: UserCredentials) -> None:
    with pytest.raises(WorkerCrashed, match="signal 9"):
        run_as_user(creds, _die)


def _sleep() -> None:
    time.sleep(600)


def test_a_worker_past_its_timeout_is_stopped(creds: UserCredentials) -> None:
    with pytest.raises(WorkerTimeout):
        run_as_user(creds, _sleep, timeout=0.5)


def _unserialisable() -> object:
    return object()


def test_a_result_must_be_json(creds: UserCredentials) -> None:
    with pytest.raises(WorkerError, match="not JSON"):
        run_as_user(creds, _unserialisable)


def _dumpable() -> int:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    return int(libc.prctl(3, 0, 0, 0, 0))  # PR_GET_DUMPABLE


def test_the_worker_cannot_be_inspected_by_the_user(creds: UserCredentials) -> None:
    # After the uid change the kernel marks the process non-dumpable: the job user may
    # not ptrace it or read /proc/PID/mem, where the S3 credentials live.
    assert run_as_user(creds, _dumpable) == 0
