"""Striping large files before writing them, where the destination is Lustre."""

from __future__ import annotations

import ctypes
import functools
import math
import os
import shutil
import subprocess

from fsx_stage.transfer.models import StripeRule

LUSTRE_SUPER_MAGIC = 0x0BD00BD0


class _Statfs(ctypes.Structure):
    _fields_ = [("f_type", ctypes.c_long), ("_rest", ctypes.c_byte * 112)]


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library Python runs on (``dlopen(NULL)``; ``find_library`` would fork
    ``ldconfig -p``, ~5 ms, for every large download)."""
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def fs_magic(fd: int) -> int | None:
    """``f_type`` of the filesystem holding ``fd`` (fstatfs(2)), None if unknown."""
    libc = _libc()
    if libc is None:
        return None
    buf = _Statfs()
    if libc.fstatfs(fd, ctypes.byref(buf)) != 0:
        return None
    return int(buf.f_type) & 0xFFFFFFFF


def is_lustre(fd: int) -> bool:
    return fs_magic(fd) == LUSTRE_SUPER_MAGIC and shutil.which("lfs") is not None


def stripe_count(size: int, rule: StripeRule) -> int | None:
    """The stripe count the rule gives a file of ``size`` bytes; None: leave the default."""
    if not rule.enabled or size < rule.min_size:
        return None
    count = max(1, math.ceil(size / rule.bytes_per_stripe))
    if rule.max_count == -1:
        return count
    return min(count, max(1, rule.max_count))


def create_striped(dir_fd: int, name: str, size: int, rule: StripeRule) -> bool:
    """Create empty ``name`` in ``dir_fd`` with ``lfs setstripe``; False if not applicable."""
    count = stripe_count(size, rule)
    if count is None or not is_lustre(dir_fd):
        return False
    path = f"/proc/self/fd/{dir_fd}/{name}"
    result = subprocess.run(
        ["lfs", "setstripe", "-c", str(count), "-S", str(rule.stripe_size), path],
        capture_output=True,
        check=False,
        timeout=60,
        pass_fds=(dir_fd,),
    )
    return result.returncode == 0 and os.path.lexists(path)
