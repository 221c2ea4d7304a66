"""From the transfer core's summary to an entry's status and the fault that decides."""

from __future__ import annotations

import dataclasses
import errno
import os
from pathlib import Path

import botocore.session
import pytest

from fsx_stage.hooks.outcome import Fault
from fsx_stage.hooks.staging import interpret, isolate_aws_settings, representative_failures
from fsx_stage.hooks.state import EntryState, EntryStatus, Phase
from fsx_stage.transfer import TransferFailure, TransferSummary


def _entry(source: str = "s3://b/data/", *, optional: bool = False) -> EntryState:
    return EntryState(
        index=1,
        phase=Phase.STAGE_IN,
        kind="in",
        source=source,
        destination="/fsx/u/data/",
        recursive=source.endswith("/"),
        optional=optional,
    )


def _failed(*categories: str, reason: str = "boom") -> TransferSummary:
    return TransferSummary(
        objects_done=1,
        bytes_done=10,
        failures=[
            TransferFailure(key=f"k{i}", reason=reason, category=c)  # type: ignore[arg-type]
            for i, c in enumerate(categories)
        ],
    )


def test_done() -> None:
    result = interpret(_entry(), TransferSummary(objects_done=3, objects_skipped=1, bytes_done=9))
    assert (result.status, result.fault, result.objects, result.skipped, result.bytes) == (
        EntryStatus.DONE,
        None,
        3,
        1,
        9,
    )


def test_user_errors_fail_the_entry() -> None:
    result = interpret(_entry(), _failed("not_found", "access_denied"))
    assert (result.status, result.fault) == (EntryStatus.FAILED, Fault.USER)
    assert result.category == "access_denied,not_found"
    assert result.error is not None and result.error.startswith("2 objects failed: k0: boom")


def test_s3_trouble_is_pending() -> None:
    result = interpret(_entry(), _failed("network", "throttled"))
    assert (result.status, result.fault) == (EntryStatus.PENDING, Fault.S3)


def test_a_full_disk_is_full_scratch_not_the_node() -> None:
    for category, code in (("no_space", errno.ENOSPC), ("local_io", errno.ENOSPC)):
        reason = f"{os.strerror(code)} (/fsx/u/data/x)"
        result = interpret(_entry(), _failed(category, reason=reason))
        assert (result.status, result.fault) == (EntryStatus.PENDING, Fault.SCRATCH_FULL)
        assert result.error is not None and result.error.endswith(
            "is full (no space left on device)"
        )
    quota = interpret(_entry(), _failed("no_space", reason=os.strerror(errno.EDQUOT)))
    assert quota.error is not None and "your disk quota is exceeded" in quota.error


def test_an_io_error_is_the_node() -> None:
    reason = f"{os.strerror(errno.EIO)} (/fsx/u/data/x)"
    result = interpret(_entry(), _failed("local_io", reason=reason))
    assert (result.status, result.fault) == (EntryStatus.PENDING, Fault.NODE)


def test_an_optional_missing_source_is_skipped() -> None:
    result = interpret(_entry("s3://b/k", optional=True), _failed("not_found"))
    assert result.status is EntryStatus.SKIPPED


def test_a_cancelled_transfer_ran_out_of_time() -> None:
    result = interpret(_entry(), TransferSummary(objects_done=5, cancelled=True))
    assert (result.status, result.fault, result.category) == (
        EntryStatus.PENDING,
        Fault.S3,
        "timeout",
    )


def test_an_empty_prefix_is_missing_unless_optional() -> None:
    empty = TransferSummary()
    assert interpret(_entry(), empty).status is EntryStatus.FAILED
    assert interpret(_entry(optional=True), empty).status is EntryStatus.DONE


def test_many_failures_are_sampled_but_keep_every_kind() -> None:
    summary = _failed(*(["network"] * 5000), "access_denied", "local_io")
    kept = representative_failures(summary)
    assert len(kept) == 22
    assert {f.category for f in kept} == {"network", "access_denied", "local_io"}
    sampled = dataclasses.replace(summary, failures=kept)
    result = interpret(_entry(), sampled, failure_count=5002)
    assert result.fault is Fault.USER  # the access_denied among them decides
    assert result.error is not None and "5002 objects failed" in result.error
    assert "(and 4999 more)" in result.error


def test_the_worker_ignores_the_users_aws_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    aws = tmp_path / ".aws"
    aws.mkdir()
    (aws / "config").write_text("[default]\nendpoint_url = http://evil.example\nca_bundle = /x\n")
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    assert botocore.session.Session().get_scoped_config()["endpoint_url"] == "http://evil.example"
    monkeypatch.setenv("AWS_PROFILE", "mine")
    isolate_aws_settings()
    session = botocore.session.Session()
    assert session.get_scoped_config() == {}
    assert session.get_config_variable("ca_bundle") != "/x"
