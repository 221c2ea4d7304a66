"""Run a function as the job's user in a forked, privilege-dropped child.

The hooks run as root, but every filesystem read and write done for a job happens in a
child process that has the job user's uid, gid and supplementary groups: the kernel then
enforces exactly what the user could do themselves, symlinks and all. Nothing is written
as root and ``chown``-ed afterwards.

The child gets its arguments through ``fork`` (so in-memory credentials never touch disk or
the environment) and sends its result back through a pipe as JSON: a JSON value on
success, or the exception's type name, message (redacted) and errno. After ``setuid`` the
kernel marks the child non-dumpable, so the user cannot ptrace it to read the credentials.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import pwd
import select
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fsx_stage.redaction import redact

_PR_SET_PDEATHSIG = 1
_KILL_GRACE_S = 5.0
_PROGRESS = b'{"progress": '  # a progress line; the child's last line is its result
#: In a `run_as_user` child whose parent asked for progress: the pipe to the parent.
_progress_fd: int | None = None


def send_progress(record: dict[str, int]) -> None:
    """From inside a `run_as_user` child: hand ``record`` to the parent's ``on_progress``
    (one line, atomic on the pipe); a no-op when the parent asked for none."""
    if _progress_fd is not None:
        os.write(_progress_fd, _PROGRESS + json.dumps(record).encode() + b"}\n")


@dataclass(frozen=True)
class UserCredentials:
    """Who the child becomes."""

    user: str
    uid: int
    gid: int
    groups: tuple[int, ...] = field(default_factory=tuple)
    home: str = "/"

    @classmethod
    def lookup(cls, user: str, uid: int, gid: int, groups: Sequence[int] = ()) -> UserCredentials:
        """Complete the identity from the passwd/group databases (groups, home)."""
        try:
            entry = pwd.getpwuid(uid)
            home = entry.pw_dir or "/"
        except KeyError:
            home = "/"
        all_groups = set(groups)
        try:
            all_groups.update(os.getgrouplist(user, gid))
        except OSError:
            all_groups.add(gid)
        all_groups.add(gid)
        return cls(user=user, uid=uid, gid=gid, groups=tuple(sorted(all_groups)), home=home)


class WorkerError(Exception):
    """The function raised in the child, or the child failed; carries the child's error."""

    def __init__(self, type_name: str, message: str, errno: int | None = None) -> None:
        super().__init__(f"{type_name}: {message}" if message else type_name)
        self.type_name = type_name
        self.message = message
        self.errno = errno


class WorkerTimeout(WorkerError):
    """The child did not finish in time and was killed."""


class WorkerCrashed(WorkerError):
    """The child died without reporting (killed by a signal, or it could not report)."""


def _set_parent_death_signal() -> None:
    # If the hook is killed (PrologEpilogTimeout), the worker must not outlive it.
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)  # the C library Python runs on
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def drop_privileges(creds: UserCredentials, umask: int = 0o077) -> None:
    """Become ``creds`` for good (real, effective and saved ids), or raise."""
    if os.geteuid() == 0:
        os.setgroups(list(creds.groups) or [creds.gid])
        os.setresgid(creds.gid, creds.gid, creds.gid)
        os.setresuid(creds.uid, creds.uid, creds.uid)
        if creds.uid != 0:
            try:
                os.setuid(0)
            except PermissionError:
                pass
            else:
                raise PermissionError("privilege drop failed: the worker could regain root")
    elif os.geteuid() != creds.uid:
        raise PermissionError(
            f"cannot act as uid {creds.uid}: this process is uid {os.geteuid()}, not root"
        )
    os.umask(umask)
    os.environ["HOME"] = creds.home
    os.environ["USER"] = creds.user
    os.environ["LOGNAME"] = creds.user
    try:
        os.chdir(creds.home)
    except OSError:
        os.chdir("/")


def _child(
    write_fd: int,
    creds: UserCredentials,
    umask: int,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    progress: bool = False,
) -> None:
    global _progress_fd
    status = 0
    _progress_fd = write_fd if progress else None
    try:
        _set_parent_death_signal()
        drop_privileges(creds, umask)
        payload: dict[str, Any] = {"ok": True, "result": fn(*args, **kwargs)}
    except BaseException as exc:
        payload = {
            "ok": False,
            "type": type(exc).__name__,
            "message": redact(str(exc)),
            "errno": getattr(exc, "errno", None),
        }
    try:
        data = json.dumps(payload).encode("utf-8")
    except (TypeError, ValueError) as exc:
        data = json.dumps(
            {"ok": False, "type": "TypeError", "message": f"result is not JSON: {exc}"}
        ).encode("utf-8")
    try:
        view = memoryview(data)
        while view:
            written = os.write(write_fd, view)
            view = view[written:]
    except OSError:
        status = 1
    finally:
        os._exit(status)


def _read_until_eof(
    fd: int, deadline: float | None, on_progress: Callable[[dict[str, int]], None] | None
) -> bytes | None:
    """The child's result (its last line), None at ``deadline``; progress lines before it
    go to ``on_progress``."""
    data = b""
    while True:
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            return None
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return data
        data += chunk
        while on_progress is not None and data.startswith(_PROGRESS) and b"\n" in data:
            line, data = data.split(b"\n", 1)
            record = json.loads(line)["progress"]
            on_progress({str(k): int(v) for k, v in record.items()})


def _reap(pid: int, kill: bool) -> int:
    if kill:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        end = time.monotonic() + _KILL_GRACE_S
        while time.monotonic() < end:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return status
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    return status


def run_as_user(
    creds: UserCredentials,
    fn: Callable[..., Any],
    *args: Any,
    timeout: float | None = None,
    umask: int = 0o077,
    on_progress: Callable[[dict[str, int]], None] | None = None,
    **kwargs: Any,
) -> Any:
    """Call ``fn(*args, **kwargs)`` as ``creds`` in a child and return its JSON result.

    ``on_progress`` (in this process) receives what ``fn`` passes to `send_progress`.

    Raises `WorkerError` with the child's exception type/message/errno when ``fn`` raised,
    `WorkerTimeout` when ``timeout`` seconds passed (the child is terminated), and
    `WorkerCrashed` when the child died without a report.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child, reported through the pipe
        os.close(read_fd)
        _child(write_fd, creds, umask, fn, args, kwargs, on_progress is not None)
    os.close(write_fd)
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        data = _read_until_eof(read_fd, deadline, on_progress)
    finally:
        os.close(read_fd)
    status = _reap(pid, kill=data is None)
    if data is None:
        raise WorkerTimeout("WorkerTimeout", f"worker for {creds.user} exceeded {timeout:.0f}s")
    if not data:
        how = (
            f"killed by signal {os.WTERMSIG(status)}"
            if os.WIFSIGNALED(status)
            else f"exit status {os.waitstatus_to_exitcode(status)}"
        )
        raise WorkerCrashed(
            "WorkerCrashed", f"worker for {creds.user} died without a report ({how})"
        )
    payload = json.loads(data)
    if payload.get("ok"):
        return payload.get("result")
    raise WorkerError(
        str(payload.get("type", "Error")), str(payload.get("message", "")), payload.get("errno")
    )
