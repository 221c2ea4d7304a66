"""Whose fault is a failure: the user's, S3's (try again later), or the node's.

This decides what a hook does about it:

- `Fault.USER`: a bad directive, a policy refusal, a missing object, AccessDenied, an
  unsafe key, a file the user cannot read or write. The job fails with a reason the user
  can read; the node stays in service (the hook exits 0).
- `Fault.S3`: S3 unreachable, throttling, checksum mismatches after retries, 5xx, the time
  budget spent. At stage-in the job is held (the user or an admin releases it); at flush
  the data stays on scratch and the flush is queued for ``fsx-stage flush --pending``.
- `Fault.SCRATCH_FULL`: scratch has no space left (ENOSPC) or the user's quota on it is
  spent (EDQUOT). Scratch is shared by every node, so draining this one would not help
  (and one user filling it would drain every node that starts a staged job): the job is
  held with the reason, to be released once there is room.
- `Fault.NODE`: scratch not mounted or read-only, I/O errors, no S3 credentials on the
  node, a broken site config or state directory. Only these make a hook exit non-zero,
  which drains the node (and, at the Prolog, requeues the job).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable
from enum import StrEnum


class Fault(StrEnum):
    USER = "user"
    S3 = "s3"
    SCRATCH_FULL = "scratch_full"
    NODE = "node"


USER_CATEGORIES = frozenset({"not_found", "access_denied", "unsafe_key", "invalid"})
S3_CATEGORIES = frozenset({"network", "throttled", "checksum", "other", "timeout"})
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_FULL_STRERRORS = tuple(os.strerror(code) for code in _FULL_ERRNOS)
_NODE_ERRNOS = (errno.EIO, errno.EROFS, errno.ENODEV, errno.ESTALE, errno.ENXIO)
_NODE_STRERRORS = tuple(os.strerror(code) for code in _NODE_ERRNOS)


class HookFault(Exception):
    """A failure that decides the hook's outcome; ``message`` is safe to show the user."""

    def __init__(self, fault: Fault, message: str) -> None:
        super().__init__(message)
        self.fault = fault
        self.message = message


def classify_failure(category: str, reason: str = "", err: int | None = None) -> Fault:
    """The fault behind one failed object/file of the transfer core."""
    if category == "no_space":
        return Fault.SCRATCH_FULL
    if category == "local_io":
        if err in _FULL_ERRNOS or any(text in reason for text in _FULL_STRERRORS):
            return Fault.SCRATCH_FULL
        if err in _NODE_ERRNOS or any(text in reason for text in _NODE_STRERRORS):
            return Fault.NODE
        return Fault.USER
    if category in USER_CATEGORIES:
        return Fault.USER
    return Fault.S3


def worst(faults: Iterable[Fault]) -> Fault | None:
    """The fault that decides: a node fault, else a user error (retrying cannot fix it),
    else full scratch, else an S3 fault."""
    found = set(faults)
    for fault in (Fault.NODE, Fault.USER, Fault.SCRATCH_FULL, Fault.S3):
        if fault in found:
            return fault
    return None
