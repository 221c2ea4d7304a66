"""Whose fault a failure is decides whether the job fails, waits, or the node drains."""

from __future__ import annotations

import errno
import os

import pytest

from fsx_stage.hooks.outcome import Fault, classify_failure, worst


@pytest.mark.parametrize("category", ["not_found", "access_denied", "unsafe_key", "invalid"])
def test_user_errors(category: str) -> None:
    assert classify_failure(category, "x") is Fault.USER


@pytest.mark.parametrize("category", ["network", "throttled", "checksum", "other", "timeout"])
def test_s3_faults(category: str) -> None:
    assert classify_failure(category, "x") is Fault.S3


@pytest.mark.parametrize("code", [errno.EIO, errno.EROFS])
def test_local_disk_trouble_is_the_node(code: int) -> None:
    assert classify_failure("local_io", f"{os.strerror(code)} (/fsx/u/f)") is Fault.NODE
    assert classify_failure("local_io", "", code) is Fault.NODE


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_full_scratch_is_neither_the_node_nor_s3(code: int) -> None:
    # Scratch is shared: one user filling it must not drain every node that stages.
    assert classify_failure("no_space", f"{os.strerror(code)} (/fsx/u/f)") is Fault.SCRATCH_FULL
    assert classify_failure("local_io", "", code) is Fault.SCRATCH_FULL


def test_local_permission_problems_are_the_user() -> None:
    reason = f"{os.strerror(errno.EACCES)} (/fsx/other/f)"
    assert classify_failure("local_io", reason, errno.EACCES) is Fault.USER
    assert classify_failure("local_io", "Too many levels of symbolic links (x)") is Fault.USER


def test_the_decisive_fault() -> None:
    assert worst([]) is None
    assert worst([Fault.S3, Fault.USER]) is Fault.USER  # retrying cannot fix it
    assert worst([Fault.USER, Fault.NODE, Fault.S3]) is Fault.NODE
    assert worst([Fault.S3]) is Fault.S3
    assert worst([Fault.S3, Fault.SCRATCH_FULL]) is Fault.SCRATCH_FULL
