"""POSIX metadata in the ``x-amz-meta-file-*`` keys FSx for Lustre uses.

``file-permissions`` is the octal ``st_mode`` (``0100664``), ``file-owner``/``file-group``
are numeric ids, ``file-atime``/``file-mtime`` are nanoseconds with an ``ns`` suffix.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass

PERMISSIONS = "file-permissions"
OWNER = "file-owner"
GROUP = "file-group"
ATIME = "file-atime"
MTIME = "file-mtime"

# Records what a download wrote, so a later sync can skip it without asking S3.
SYNC_XATTR = "user.fsx-stage.source"


@dataclass(frozen=True, slots=True)
class PosixMeta:
    mode: int | None = None  # full st_mode, file type bits included
    uid: int | None = None
    gid: int | None = None
    atime_ns: int | None = None
    mtime_ns: int | None = None

    @property
    def is_symlink(self) -> bool:
        return self.mode is not None and stat.S_ISLNK(self.mode)


def to_metadata(st: os.stat_result) -> dict[str, str]:
    return {
        PERMISSIONS: f"0{st.st_mode:o}",
        OWNER: str(st.st_uid),
        GROUP: str(st.st_gid),
        ATIME: f"{st.st_atime_ns}ns",
        MTIME: f"{st.st_mtime_ns}ns",
    }


def _int(text: str | None, base: int = 10, suffix: str = "") -> int | None:
    if text is None:
        return None
    text = text.strip()
    if suffix and text.endswith(suffix):
        text = text[: -len(suffix)]
    try:
        value = int(text, base)
    except ValueError:
        return None
    return value if value >= 0 else None


def from_metadata(metadata: Mapping[str, str]) -> PosixMeta:
    """Parse what is there; malformed values are ignored rather than trusted."""
    mode = _int(metadata.get(PERMISSIONS), 8)
    if mode is not None and mode > 0o177777:
        mode = None
    return PosixMeta(
        mode=mode,
        uid=_int(metadata.get(OWNER)),
        gid=_int(metadata.get(GROUP)),
        atime_ns=_int(metadata.get(ATIME), suffix="ns"),
        mtime_ns=_int(metadata.get(MTIME), suffix="ns"),
    )


def apply_to_fd(
    fd: int,
    meta: PosixMeta,
    *,
    default_mtime_ns: int | None,
    preserve_owner: bool,
    umask: int,
    directory: bool = False,
) -> None:
    """Apply mode, times and (only for a root admin restore) ownership to an open file.

    Set-id bits are kept only when ownership was restored too: a root-run download must
    never create a set-uid file owned by root from untrusted metadata. Without a mode in
    the metadata a file gets ``0o666 & ~umask``; a ``directory`` keeps the mode it has.
    """
    owned = False
    if preserve_owner and os.geteuid() == 0 and meta.uid is not None and meta.gid is not None:
        os.fchown(fd, meta.uid, meta.gid)
        owned = True
    if meta.mode is not None:
        mode = stat.S_IMODE(meta.mode)
        if not owned:
            mode &= ~(stat.S_ISUID | stat.S_ISGID)
        os.fchmod(fd, mode)
    elif not directory:
        os.fchmod(fd, 0o666 & ~umask)
    mtime = meta.mtime_ns if meta.mtime_ns is not None else default_mtime_ns
    if mtime is not None:
        atime = meta.atime_ns if meta.atime_ns is not None else mtime
        os.utime(fd, ns=(atime, mtime))


def record_source(fd: int, etag: str, st: os.stat_result) -> None:
    """Remember the ETag this file was downloaded from (best effort: needs user xattrs)."""
    value = f"{etag} {st.st_size} {st.st_mtime_ns}".encode()
    with contextlib.suppress(OSError):
        os.setxattr(fd, SYNC_XATTR, value)


def recorded_source(dir_fd: int, name: str) -> tuple[str, int, int] | None:
    """The (etag, size, mtime_ns) recorded by :func:`record_source` on ``name``, if any."""
    # Through an fd of our own, not /proc/self/fd: after a privilege drop /proc/self is
    # root's (the process is not dumpable) and a path there would be refused.
    try:
        fd = os.open(
            name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd
        )
    except OSError:
        return None
    try:
        raw = os.getxattr(fd, SYNC_XATTR)
    except OSError:
        return None
    finally:
        os.close(fd)
    parts = raw.decode(errors="replace").split(" ")
    if len(parts) != 3:
        return None
    try:
        return parts[0], int(parts[1]), int(parts[2])
    except ValueError:
        return None


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
