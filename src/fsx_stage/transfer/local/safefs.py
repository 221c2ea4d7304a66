"""Writing under a destination directory without ever leaving it.

Every path below the destination root is reached component by component relative to
a directory file descriptor, with ``O_NOFOLLOW``: a symlink planted inside the tree is
refused, never written through. Files are written to a temporary name in their final
directory and renamed into place, so a final name only ever holds a complete file.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
from pathlib import Path

from fsx_stage.transfer.errors import UnsafePath

TEMP_SUFFIX = ".fsxpart"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NAME_MAX = 255


def split_relative(relative: str) -> list[str]:
    """The path components of a key's relative part; raises UnsafePath if it could escape."""
    if not relative:
        raise UnsafePath("empty relative path")
    if "\x00" in relative:
        raise UnsafePath(f"key contains NUL: {relative!r}")
    if relative.startswith("/"):
        raise UnsafePath(f"absolute path in key: {relative!r}")
    parts = relative.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise UnsafePath(f"key has an empty, '.' or '..' component: {relative!r}")
        if len(part.encode("utf-8", "surrogateescape")) > _NAME_MAX:
            raise UnsafePath(f"key component longer than {_NAME_MAX} bytes: {part[:40]!r}...")
    return parts


def temp_name(name: str) -> str:
    """The deterministic temporary name of ``name``: a re-run reuses (replaces) it."""
    candidate = f".{name}{TEMP_SUFFIX}"
    if len(candidate.encode("utf-8", "surrogateescape")) <= _NAME_MAX:
        return candidate
    digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return f".{name[:100]}.{digest}{TEMP_SUFFIX}"


def is_temp_name(name: str) -> bool:
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


def _open_dir(name: str, dir_fd: int, create: bool, shown: str) -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        if not create:
            raise
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafePath(
                f"refusing to follow {shown!r}: it is a symlink or not a directory"
            ) from None
        raise
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, 0o777, dir_fd=dir_fd)
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafePath(
                f"refusing to follow {shown!r}: it is a symlink or not a directory"
            ) from None
        raise


def open_root(path: str, create: bool = True) -> int:
    """Open (and create) the destination root given by the user; it may itself be a symlink."""
    if create:
        Path(path).mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def open_parent(root_fd: int, parts: list[str], create: bool = True) -> int:
    """A new fd of the directory holding ``parts[-1]``, creating missing directories."""
    fd = os.dup(root_fd)
    try:
        for index, name in enumerate(parts[:-1]):
            child = _open_dir(name, fd, create, "/".join(parts[: index + 1]))
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_dir(root_fd: int, parts: list[str], create: bool = True) -> int:
    """A new fd of the directory ``parts`` itself (for directory marker keys)."""
    return open_parent(root_fd, [*parts, "x"], create)


def create_temp(dir_fd: int, name: str, mode: int = 0o600) -> tuple[str, int]:
    """Create the temporary file for ``name`` exclusively, replacing a dead run's leftover."""
    tmp = temp_name(name)
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC  # read back to verify
    try:
        return tmp, os.open(tmp, flags, mode, dir_fd=dir_fd)
    except FileExistsError:
        os.unlink(tmp, dir_fd=dir_fd)  # unlink never follows a symlink
        return tmp, os.open(tmp, flags, mode, dir_fd=dir_fd)


def discard_temp(dir_fd: int, tmp: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp, dir_fd=dir_fd)


def commit(dir_fd: int, tmp: str, name: str) -> None:
    """Atomically rename the finished temporary file to its final name."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        st = None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, "a directory is in the way", name)
    os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


def lstat_or_none(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
