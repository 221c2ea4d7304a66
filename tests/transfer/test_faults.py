"""Integrity and retries through the fault proxy: every transfer ends byte-identical or fails
with the key named, and nothing lands under a final name unverified."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from tests.testbed.faultproxy import FaultKind
from tests.transfer.conftest import Run, settings_for, tree

MiB = 1024 * 1024
SMALL_PARTS = {"part_size": 5 * MiB, "multipart_threshold": 5 * MiB}


@pytest.fixture
def proxied(s3_server: Any, fault_proxy: Any) -> Any:
    return settings_for(s3_server, fault_proxy.endpoint_url)


@pytest.fixture
def uploaded(run: Run, bucket: str, tmp_path: Path) -> dict[str, bytes]:
    """A small object and a 3-part multipart object under ``src/``."""
    source = tmp_path / "src"
    source.mkdir()
    (source / "small.bin").write_bytes(os.urandom(300_000))
    (source / "multi.bin").write_bytes(os.urandom(12 * MiB + 3))
    assert run(source, f"s3://{bucket}/src/", recursive=True, **SMALL_PARTS).ok
    return tree(source)


@pytest.mark.parametrize(
    "faults",
    [
        {"corrupt_count": 2},
        {"reset_count": 3},
        {"truncate_count": 3},
        {"slowdown_count": 3},
        {"error500_count": 2},
        {"reset_rate": 0.2, "truncate_rate": 0.1, "corrupt_rate": 0.1, "seed": 7},
    ],
    ids=["corrupt", "reset", "truncate", "slowdown", "error500", "mixed"],
)
def test_downloads_survive_faults_byte_identical(
    run: Run,
    bucket: str,
    tmp_path: Path,
    uploaded: dict[str, bytes],
    proxied: Any,
    fault_proxy: Any,
    faults: dict[str, Any],
) -> None:
    fault_proxy.set_faults(methods={"GET"}, **faults)
    summary = run(
        f"s3://{bucket}/src/", tmp_path / "dst", recursive=True, s3=proxied, **SMALL_PARTS
    )
    assert summary.ok, summary.failures
    assert tree(tmp_path / "dst") == uploaded


@pytest.mark.parametrize(
    "faults",
    [{"reset_count": 3}, {"slowdown_count": 3}, {"error500_count": 2}],
    ids=["reset", "slowdown", "error500"],
)
def test_uploads_survive_faults(
    run: Run,
    bucket: str,
    tmp_path: Path,
    proxied: Any,
    fault_proxy: Any,
    faults: dict[str, Any],
    s3_client: Any,
) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "small.bin").write_bytes(os.urandom(200_000))
    (source / "multi.bin").write_bytes(os.urandom(11 * MiB))
    fault_proxy.set_faults(methods={"PUT", "POST"}, **faults)
    summary = run(source, f"s3://{bucket}/up/", recursive=True, s3=proxied, **SMALL_PARTS)
    assert summary.ok, summary.failures
    fault_proxy.set_faults()
    for name in ("small.bin", "multi.bin"):
        body = s3_client.get_object(Bucket=bucket, Key=f"up/{name}")["Body"].read()
        assert body == (source / name).read_bytes()


@pytest.mark.parametrize("name", ["small.bin", "multi.bin"])
def test_persistent_corruption_is_reported_and_never_lands(
    run: Run,
    bucket: str,
    tmp_path: Path,
    uploaded: dict[str, bytes],
    s3_server: Any,
    fault_proxy: Any,
    name: str,
) -> None:
    fault_proxy.set_faults(methods={"GET"}, corrupt_rate=1.0)
    s3 = settings_for(s3_server, fault_proxy.endpoint_url, max_attempts=2)
    dst = tmp_path / "dst"
    summary = run(f"s3://{bucket}/src/{name}", f"{dst}/", s3=s3, **SMALL_PARTS)
    assert [(f.key, f.category) for f in summary.failures] == [(f"src/{name}", "checksum")], (
        summary.failures
    )
    assert os.listdir(dst) == []  # neither the final name nor a temporary


def test_an_upload_whose_checksum_s3_rejects_fails_and_stores_nothing(
    run: Run,
    bucket: str,
    tmp_path: Path,
    s3_client: Any,
    s3_server: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Upload success means S3 confirmed the checksum we sent; a wrong one never lands."""
    from fsx_stage.transfer.objects import upload

    source = tmp_path / "f.bin"
    source.write_bytes(b"payload")
    real = upload._crc32_b64
    monkeypatch.setattr(upload, "_crc32_b64", lambda data: real(bytes(data) + b"x"))
    summary = run(source, f"s3://{bucket}/bad.bin", s3=settings_for(s3_server, max_attempts=2))
    assert [(f.key, f.category) for f in summary.failures] == [("bad.bin", "checksum")]
    assert "Contents" not in s3_client.list_objects_v2(Bucket=bucket)


def test_a_cancelled_ranged_download_stops_its_range_threads_and_leaves_nothing(
    bucket: str, tmp_path: Path, s3_client: Any, proxied: Any, fault_proxy: Any
) -> None:
    """Ranges run on threads: a cancel stops them before the file is closed and removed."""
    import threading

    from fsx_stage.transfer import TransferOptions, transfer

    s3_client.put_object(Bucket=bucket, Key="big.bin", Body=os.urandom(24 * MiB))
    fault_proxy.set_faults(methods={"GET"}, key_pattern="big", latency_s=5.0, latency_rate=1.0)
    cancel = threading.Event()

    def cancel_once_a_range_waits() -> None:
        while not any(m == "GET" and "big.bin" in p for m, p, _ in fault_proxy.log):
            cancel.wait(0.01)
        cancel.set()

    threading.Thread(target=cancel_once_a_range_waits, daemon=True).start()
    dst = tmp_path / "dst"
    dst.mkdir()
    summary = transfer(
        f"s3://{bucket}/big.bin",
        f"{dst}/",
        recursive=False,
        options=TransferOptions(**SMALL_PARTS),
        s3=proxied,
        cancel=cancel,
    )
    assert summary.cancelled and not summary.failures
    assert os.listdir(dst) == []  # neither the final name nor a temporary
    assert not [t for t in threading.enumerate() if t.name.startswith("fsx-range")]


def test_a_worker_sets_up_its_client_only_when_it_gets_jobs(
    run: Run, bucket: str, tmp_path: Path, s3_client: Any, proxied: Any, fault_proxy: Any
) -> None:
    """The listing process moves objects itself: one object never starts a second client."""
    s3_client.put_object(Bucket=bucket, Key="one/a.bin", Body=b"x" * 1000)
    fault_proxy.set_faults()  # count the requests
    summary = run(f"s3://{bucket}/one/", tmp_path / "dst", recursive=True, s3=proxied, workers=2)
    assert summary.ok and summary.objects_done == 1
    probes = [path for _, path, _ in fault_proxy.log if "does-not-exist" in path]
    assert len(probes) == 1  # one client's fast-path probe: no worker set one up


ALGORITHMS = ["MD5", "SHA256", "CRC32C", "CRC64NVME"]
SIZES = {"whole": 300_000, "ranged": 6 * MiB + 5, "multipart": 11 * MiB}  # SMALL_PARTS


@pytest.fixture
def checksummed(bucket: str, s3_server: Any) -> dict[str, bytes]:
    """Objects with each kind of checksum S3 keeps (``MD5``: none, only the ETag that is
    the MD5, as s5cmd or an older SDK writes them): small enough for one GET, fetched in
    ranges, and uploaded in 5 MiB parts (composite SHA-256 and CRC32C, full-object
    CRC64NVME; their ETag is no MD5, so only the checksum can catch a bad byte)."""
    import io

    from boto3.s3.transfer import TransferConfig
    from tests.testbed.server import s3_client

    client = s3_client(
        s3_server.endpoint_url, s3_server, request_checksum_calculation="when_required"
    )
    parts = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    bodies = {}
    for algorithm in ALGORITHMS:
        extra = {} if algorithm == "MD5" else {"ChecksumAlgorithm": algorithm}
        for shape, size in SIZES.items():
            key = f"ck/{algorithm}-{shape}"
            bodies[key] = os.urandom(size)
            if shape == "multipart":
                stream = io.BytesIO(bodies[key])
                client.upload_fileobj(stream, bucket, key, ExtraArgs=extra, Config=parts)
            else:
                client.put_object(Bucket=bucket, Key=key, Body=bodies[key], **extra)
            head = client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
            stored = {n for n in head if n.startswith("Checksum") and n != "ChecksumType"}
            assert stored == (set() if algorithm == "MD5" else {f"Checksum{algorithm}"})
    return bodies


@pytest.mark.parametrize(
    ("algorithm", "shape"),
    # a multipart object without a checksum can only be checked for its size
    [(a, shape) for a in ALGORITHMS for shape in SIZES if (a, shape) != ("MD5", "multipart")],
)
def test_every_checksum_s3_keeps_is_verified(
    run: Run,
    bucket: str,
    tmp_path: Path,
    checksummed: dict[str, bytes],
    s3_server: Any,
    fault_proxy: Any,
    algorithm: str,
    shape: str,
) -> None:
    """A corrupted body is retried and the file lands intact; a body corrupted every time
    fails the object as "checksum" and nothing lands. Objects fetched in ranges whose
    checksum cannot be combined from the ranges (the MD5 ETag, a full-object SHA-256 or
    CRC64NVME) are checked as they are written, in order, on a thread."""
    key = f"ck/{algorithm}-{shape}"
    s3 = settings_for(s3_server, fault_proxy.endpoint_url, max_attempts=2)
    fault_proxy.set_faults(methods={"GET"}, corrupt_count=1)
    summary = run(f"s3://{bucket}/{key}", f"{tmp_path}/ok/", s3=s3, **SMALL_PARTS)
    assert summary.ok, summary.failures
    assert fault_proxy.injected[FaultKind.CORRUPT] == 1
    assert (tmp_path / "ok" / key.rsplit("/", 1)[-1]).read_bytes() == checksummed[key]

    fault_proxy.set_faults(methods={"GET"}, corrupt_rate=1.0)
    summary = run(f"s3://{bucket}/{key}", f"{tmp_path}/bad/", s3=s3, **SMALL_PARTS)
    assert [(f.key, f.category) for f in summary.failures] == [(key, "checksum")]
    assert os.listdir(tmp_path / "bad") == []
