"""Who is on the other end of the socket: SO_PEERCRED, and whether that process belongs
to a given job on this node (its job cgroup, else its ancestry up to the job's
slurmstepd). Environment variables such as SLURM_JOB_ID are forgeable and never used."""

from __future__ import annotations

import contextlib
import re
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
_MAX_DEPTH = 64


@dataclass(frozen=True)
class Peer:
    pid: int
    uid: int
    gid: int


def peer_of(conn: socket.socket) -> Peer:
    raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return Peer(pid, uid, gid)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def _parent(pid: int, proc: Path) -> int | None:
    stat = _read(proc / str(pid) / "stat")
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    tail = stat.rpartition(b")")[2].split()
    return int(tail[1]) if len(tail) > 1 else None


def in_job_cgroup(pid: int, job_id: int, proc: Path = PROC) -> bool:
    text = _read(proc / str(pid) / "cgroup").decode("utf-8", "replace")
    return re.search(rf"/job_{int(job_id)}(/|$)", text, re.MULTILINE) is not None


def under_job_stepd(pid: int, job_id: int, proc: Path = PROC) -> bool:
    """An ancestor of ``pid`` is a slurmstepd of ``job_id`` (title ``slurmstepd: [N.x]``).

    A user cannot start a root-owned process, so only root's checks can be fooled by a
    process title; the ancestor must also be owned by root."""
    wanted = f"[{int(job_id)}.".encode()
    current: int | None = pid
    for _ in range(_MAX_DEPTH):
        current = _parent(current, proc) if current is not None else None
        if current is None or current <= 1:
            return False
        base = proc / str(current)
        cmdline = _read(base / "cmdline")
        if cmdline.startswith(b"slurmstepd") and wanted in cmdline:
            try:
                return base.stat().st_uid == 0
            except OSError:
                return False
    return False


def belongs_to_job(pid: int, job_id: int, proc: Path = PROC) -> bool:
    return in_job_cgroup(pid, job_id, proc) or under_job_stepd(pid, job_id, proc)


def job_alive(job_id: int, proc: Path = PROC) -> bool:
    """A root-owned ``slurmstepd: [N.*]`` of ``job_id`` runs on this node (its job cgroup
    alone is not enough: an empty one can outlive the job)."""
    wanted = f"[{int(job_id)}.".encode()
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        cmdline = _read(entry / "cmdline")
        if cmdline.startswith(b"slurmstepd") and wanted in cmdline:
            with contextlib.suppress(OSError):
                if entry.stat().st_uid == 0:
                    return True
    return False
