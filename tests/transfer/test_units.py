"""Pure units of the transfer core: path safety, filters, sizes, checksums, metadata."""

from __future__ import annotations

import json
import os
import pickle
import re
import stat
import zlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fsx_stage.cli import build_parser
from fsx_stage.cli.transfer import parse_size
from fsx_stage.filters import Filter, selects
from fsx_stage.transfer import (
    Encryption,
    S3Settings,
    Secret,
    StaticCredentials,
    StripeRule,
    TransferFailure,
    TransferOptions,
    TransferSummary,
)
from fsx_stage.transfer.errors import UnsafePath, classify
from fsx_stage.transfer.local.posixmeta import from_metadata, to_metadata
from fsx_stage.transfer.local.safefs import is_temp_name, split_relative, temp_name
from fsx_stage.transfer.s3.checksums import crc_combine, expected_from_response


@pytest.mark.parametrize(
    "relative",
    ["/etc/passwd", "a/../b", "..", "../x", "a/./b", "./a", "a//b", "a/", "", "a\x00b", "x" * 256],
)
def test_unsafe_relative_keys_are_refused(relative: str) -> None:
    with pytest.raises(UnsafePath):
        split_relative(relative)


@pytest.mark.parametrize("relative", ["a", "a/b c/d+e%f", "ünï/cødé", "...", "a..b/.hidden"])
def test_ordinary_relative_keys_split_into_components(relative: str) -> None:
    assert split_relative(relative) == relative.split("/")


def test_temp_names_are_hidden_bounded_and_recognised() -> None:
    assert temp_name("data.h5") == ".data.h5.fsxpart"
    long = temp_name("x" * 255)
    assert len(long) <= 255 and is_temp_name(long)
    assert not is_temp_name("data.h5")


def _cli_filters(*argv: str) -> tuple[Filter, ...]:
    args = build_parser().parse_args(["cp", "s3://bkt/p/", "/tmp/x", *argv])
    return tuple(Filter(action=action, pattern=glob) for action, glob in args.filters)


def test_cli_filters_keep_their_order_and_the_last_match_wins() -> None:
    assert _cli_filters() == ()
    only_txt = _cli_filters("--exclude", "*", "--include", "*.txt")
    assert selects("deep/dir/b.txt", only_txt) and not selects("b.bin", only_txt)
    nothing = _cli_filters("--include", "*.txt", "--exclude", "*")
    assert not selects("b.txt", nothing)
    no_logs = _cli_filters("--exclude", "logs/*")
    assert not selects("logs/x/y.log", no_logs) and selects("data/logs.txt", no_logs)
    include_alone = _cli_filters("--include", "*.txt")
    assert selects("b.bin", include_alone)  # as aws: --include alone excludes nothing


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("8MiB", 8 << 20),
        ("64M", 64 << 20),
        ("1048576", 1 << 20),
        ("2g", 2 << 30),
        ("16KB", 16 << 10),
    ],
)
def test_sizes(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "8 parsecs", "-1", "1.5M", "MiB"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(Exception, match="expected a size"):
        parse_size(text)


@given(st.binary(max_size=3000), st.binary(max_size=3000))
def test_crc32_combine_equals_crc_of_concatenation(a: bytes, b: bytes) -> None:
    assert crc_combine("CRC32", zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)


def test_composite_checksums_carry_their_part_count() -> None:
    expected = expected_from_response({"ChecksumCRC32": "XFX2sg==-3", "ChecksumType": "COMPOSITE"})
    assert expected is not None and (expected.value, expected.parts) == ("XFX2sg==", 3)
    assert expected_from_response({"ETag": '"abc"'}) is None


def test_posix_metadata_uses_fsx_conventions(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "f")
    with open(path, "w") as handle:
        handle.write("x")
    os.chmod(path, 0o640)
    os.utime(path, ns=(1_000_000_001, 2_000_000_002))
    meta = to_metadata(os.lstat(path))
    assert meta["file-permissions"] == "0100640"
    assert meta["file-mtime"] == "2000000002ns" and meta["file-atime"] == "1000000001ns"
    assert meta["file-owner"] == str(os.getuid())
    parsed = from_metadata(meta)
    assert parsed.mode == stat.S_IFREG | 0o640 and parsed.mtime_ns == 2_000_000_002


def test_malformed_metadata_is_ignored_not_trusted() -> None:
    parsed = from_metadata(
        {"file-permissions": "rwxrwxrwx", "file-mtime": "-5ns", "file-owner": "root"}
    )
    assert (parsed.mode, parsed.mtime_ns, parsed.uid) == (None, None, None)


def test_sse_c_key_must_be_base64_of_32_bytes() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        Encryption(mode="sse-c", customer_key="c2hvcnQ=")
    with pytest.raises(ValueError, match="needs customer_key"):
        Encryption(mode="sse-c")


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: TransferOptions(concurrency=0),
            "TransferOptions.concurrency: expected an integer >= 1 <= 1024, got 0",
        ),
        (
            lambda: TransferOptions(part_size=1024),
            "TransferOptions.part_size: expected an integer >= 5242880",
        ),
        (lambda: TransferOptions(workers=True), "TransferOptions.workers: expected an integer"),
        (
            lambda: S3Settings(addressing_style="sideways"),
            "S3Settings.addressing_style: expected one of auto, path, virtual, got 'sideways'",
        ),
        (lambda: S3Settings(read_timeout_s=0), "S3Settings.read_timeout_s: expected a number > 0"),
        (
            lambda: StripeRule(bytes_per_stripe=0),
            "StripeRule.bytes_per_stripe: expected an integer >= 1",
        ),
        (
            lambda: Encryption(mode="sse-x"),
            "Encryption.mode: expected one of none, sse-s3, sse-kms, sse-c",
        ),
        (lambda: Filter(action="keep", pattern="*"), "'keep' is not a valid FilterAction"),
    ],
)
def test_bad_settings_are_refused_naming_the_field(build: Any, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        build()


def test_secrets_never_show_and_survive_the_trip_to_a_worker() -> None:
    creds = StaticCredentials(
        access_key_id="AKID", secret_access_key="s3cr3t", session_token="t0k3n"
    )
    settings = S3Settings(endpoint_url="http://e:1", credentials=creds)
    assert "s3cr3t" not in repr(settings) and "t0k3n" not in repr(settings)
    assert "s3cr3t" not in f"{creds.secret_access_key}"
    assert creds.secret_access_key == Secret("s3cr3t")
    copy = pickle.loads(pickle.dumps(settings))
    assert copy == settings
    assert copy.credentials is not None
    assert copy.credentials.secret_access_key.get_secret_value() == "s3cr3t"


def test_a_summary_round_trips_through_json() -> None:
    summary = TransferSummary(objects_done=2, bytes_done=9, elapsed_s=0.5, cancelled=True)
    summary.failures.append(TransferFailure(key="k", reason="NoSuchKey", category="not_found"))
    assert TransferSummary.from_json(json.loads(json.dumps(summary.to_json()))) == summary


def test_failure_reasons_name_the_category_and_the_service_s_words() -> None:
    from botocore.exceptions import ClientError

    error = ClientError(
        {
            "Error": {"Code": "SlowDown", "Message": "Reduce your request rate"},
            "ResponseMetadata": {"HTTPStatusCode": 503},
        },
        "GetObject",
    )
    assert classify(error) == ("throttled", "SlowDown (HTTP 503): Reduce your request rate")
    denied = ClientError(
        {"Error": {"Code": "AccessDenied"}, "ResponseMetadata": {"HTTPStatusCode": 403}},
        "GetObject",
    )
    assert classify(denied)[0] == "access_denied"
    assert classify(UnsafePath("bad"))[0] == "unsafe_key"


def test_failure_reasons_never_carry_the_secret() -> None:
    from botocore.exceptions import (
        ConnectTimeoutError,
        EndpointConnectionError,
        ReadTimeoutError,
        SSLError,
    )
    from botocore.exceptions import HTTPClientError as BotoHTTPClientError

    key_id, signature = "AKIAIOSFODNN7EXAMPLE", "9f0e8d7c6b5a" * 5
    url = (
        "https://bkt.s3.eu-west-1.amazonaws.com/run/out.h5?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        f"&X-Amz-Credential={key_id}%2F20261203%2Feu-west-1%2Fs3%2Faws4_request"
        f"&X-Amz-Signature={signature}"
    )
    failures: list[BaseException] = [
        EndpointConnectionError(endpoint_url=url),
        ConnectTimeoutError(endpoint_url=url),
        ReadTimeoutError(endpoint_url=url),
        SSLError(endpoint_url=url, error="certificate verify failed"),
        BotoHTTPClientError(error=f"connection reset while sending to {url}"),
        ExceptionGroup("ranges", [ReadTimeoutError(endpoint_url=url)]),
    ]
    for failure in failures:
        _category, reason = classify(failure)
        assert key_id not in reason and signature not in reason, (type(failure), reason)
        assert "amazonaws.com" not in reason, reason  # nor the endpoint URL


def test_disk_full_is_no_space_even_inside_a_task_group() -> None:
    import errno

    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    quota = OSError(errno.EDQUOT, os.strerror(errno.EDQUOT), "/fsx/u/f")
    assert classify(full) == ("no_space", "No space left on device")
    assert classify(quota) == ("no_space", "Disk quota exceeded (/fsx/u/f)")
    # The ranges of one object run in a TaskGroup: the group's failure is its cause.
    group = ExceptionGroup("ranges", [TimeoutError("read"), ExceptionGroup("inner", [full])])
    assert classify(group) == ("no_space", "No space left on device")
    assert classify(ExceptionGroup("ranges", [UnsafePath("bad")]))[0] == "unsafe_key"


def test_network_failures_are_worded_without_endpoint_urls() -> None:
    from botocore.exceptions import ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError

    url = "http://10.1.2.3:8333/bkt/data/x"
    assert classify(EndpointConnectionError(endpoint_url=url)) == (
        "network",
        "could not connect to S3",
    )
    assert classify(ConnectTimeoutError(endpoint_url=url))[1] == (
        "could not connect to S3 (connect timeout)"
    )
    assert classify(ReadTimeoutError(endpoint_url=url))[1] == (
        "S3 did not answer in time (read timeout)"
    )
    refused = ConnectionRefusedError(111, "Connection refused")
    assert classify(refused) == ("network", "could not reach S3 (connection refused)")


def test_a_garbled_reply_is_a_network_failure() -> None:
    from xml.etree import ElementTree

    from botocore.parsers import ResponseParserError

    assert classify(ResponseParserError("cut short"))[0] == "network"
    assert classify(ElementTree.ParseError("bad xml"))[0] == "network"


def test_stripe_rule_scales_with_size_and_is_capped() -> None:
    from fsx_stage.transfer import StripeRule
    from fsx_stage.transfer.local.lustre import stripe_count

    rule = StripeRule(min_size=1 << 30, bytes_per_stripe=1 << 30, max_count=4)
    assert stripe_count(100, rule) is None
    assert stripe_count(1 << 30, rule) == 1
    assert stripe_count(3 * (1 << 30) + 1, rule) == 4
    assert stripe_count(100 << 30, rule) == 4
    assert stripe_count(5 << 30, StripeRule(enabled=False)) is None


def test_lustre_is_recognised_by_its_statfs_magic_only(tmp_path: os.PathLike[str]) -> None:
    from fsx_stage.transfer.local.lustre import LUSTRE_SUPER_MAGIC, fs_magic, is_lustre

    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        magic = fs_magic(fd)
        assert magic is not None and magic != LUSTRE_SUPER_MAGIC
        assert not is_lustre(fd)
    finally:
        os.close(fd)


def test_an_unreadable_directory_is_reported_not_skipped(
    tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from fsx_stage.transfer.objects import sources

    root = os.fspath(tmp_path)
    os.makedirs(os.path.join(root, "sub"))
    for name in ("a.txt", "sub/b.txt"):
        with open(os.path.join(root, name), "w") as handle:
            handle.write(name)
    real_scandir = os.scandir
    calls = []

    def scandir(fd: int) -> object:
        calls.append(fd)
        if len(calls) == 2:  # the root is read first, then "sub/"
            raise PermissionError(13, "Permission denied")
        return real_scandir(fd)

    monkeypatch.setattr(sources.os, "scandir", scandir)
    errors: list[tuple[str, str]] = []
    items = list(
        sources.walk_tree(
            root, "p/", lambda _relative: True, lambda k, e: errors.append((k, str(e)))
        )
    )
    assert [item.key for item in items] == ["p/a.txt"]
    assert errors == [("p/sub/", "[Errno 13] Permission denied")]


def test_a_wrong_composite_checksum_is_caught() -> None:
    from fsx_stage.transfer.errors import ChecksumMismatch
    from fsx_stage.transfer.objects.upload import _check_composite, _crc32_b64
    from fsx_stage.transfer.s3.store import PutResult, UploadedPart

    parts = [
        UploadedPart(1, '"e1"', _crc32_b64(b"part one")),
        UploadedPart(2, '"e2"', _crc32_b64(b"two")),
    ]
    import base64

    good = _crc32_b64(b"".join(base64.b64decode(p.crc32) for p in parts)) + "-2"
    _check_composite(PutResult('"e"', good), parts)
    _check_composite(PutResult('"e"'), parts)  # not reported: nothing to compare
    with pytest.raises(ChecksumMismatch):
        _check_composite(PutResult('"e"', "AAAAAA==-2"), parts)
