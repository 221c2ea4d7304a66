"""``fsx-stage check --probe``: what staging would find in S3 and on scratch, against the
real SeaweedFS, reading only."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.hooks.sitecfg import Site, make_site
from tests.transfer.conftest import settings_for

import fsx_stage.config
from fsx_stage.checkpoints.generations import Generations
from fsx_stage.cli import main
from fsx_stage.cli.check_probe import EXIT_FINDINGS
from fsx_stage.filters import Filter, FilterAction
from fsx_stage.transfer import TransferOptions, transfer

pytestmark = pytest.mark.s3

KiB = 1024


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, s3_server: Any) -> dict[str, str]:
    """The user's standard AWS environment, pointing at SeaweedFS; no site config."""
    monkeypatch.delenv("FSX_STAGE_CONFIG", raising=False)
    monkeypatch.setattr(fsx_stage.config, "DEFAULT_CONFIG_PATH", tmp_path / "absent.toml")
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    env: dict[str, str] = s3_server.env()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


class Probe:
    """One ``check --probe`` run: exit status, stdout, stderr, and the JSON when asked."""

    def __init__(self, status: int, out: str, err: str) -> None:
        self.status, self.out, self.err = status, out, err
        self.report: dict[str, Any] = json.loads(out) if out.startswith("{") else {}

    def entry(self, index: int, step: str = "before") -> dict[str, Any]:
        entries = self.report["probe"]["entries"]
        (found,) = [e for e in entries if e["index"] == index and e["step"] == step]
        return dict(found)


@pytest.fixture
def probe(tmp_path: Path, capsys: pytest.CaptureFixture[str], s3_server: Any) -> Iterator[Any]:
    """``probe(*directives, json=True)``: check a script holding those directives; every
    run is checked for the secret key in its output."""
    runs: list[Probe] = []

    def run(*directives: str, json: bool = True, extra: tuple[str, ...] = ()) -> Probe:
        script = tmp_path / f"job-{len(runs)}.sh"
        header = "".join(f"#SBATCH --fsx-stage={d}\n" for d in directives)
        script.write_text(f"#!/bin/bash\n{header}srun true\n")
        argv = ["check", str(script), "--probe", *(["--json"] if json else []), *extra]
        status = main(argv)
        captured = capsys.readouterr()
        result = Probe(status, captured.out, captured.err)
        runs.append(result)
        return result

    yield run
    for result in runs:
        for secret in (s3_server.secret_key, s3_server.access_key):
            assert secret not in result.out and secret not in result.err


def put(client: Any, bucket: str, objects: dict[str, int]) -> None:
    for key, size in objects.items():
        client.put_object(Bucket=bucket, Key=key, Body=b"x" * size)


# --- objects and bytes ---------------------------------------------------------------


def test_a_prefix_is_counted_exactly_objects_and_bytes(
    probe: Any, s3_client: Any, bucket: str, tmp_path: Path
) -> None:
    sizes = {"ds/a.h5": 1000, "ds/b.h5": 0, "ds/sub/c.h5": 70 * KiB, "ds/sub/deep/d": 1}
    put(s3_client, bucket, {**sizes, "ds2/not-under-the-prefix": 5, "dsx": 7})
    result = probe(f"in,s3://{bucket}/ds/,{tmp_path}/in/")
    assert result.status == 0, result.err
    entry = result.entry(1)
    assert (entry["objects"], entry["bytes"]) == (4, sum(sizes.values()))
    assert (entry["missing"], entry["problems"], entry["unknown"]) == (None, [], [])
    assert not (tmp_path / "in").exists()  # a probe creates nothing


def test_the_table_shows_objects_bytes_missing_and_room(
    probe: Any, s3_client: Any, bucket: str, tmp_path: Path
) -> None:
    put(s3_client, bucket, {f"t/{i}": 512 * KiB for i in range(3)})
    result = probe(f"in,s3://{bucket}/t/,{tmp_path}/in/", json=False)
    assert result.status == 0, result.err
    lines = result.out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("#  LINE  STEP"))
    assert lines[header].split() == [
        "#", "LINE", "STEP", "KIND", "S3", "OBJECTS", "BYTES", "MISSING", "ROOM"
    ]  # fmt: skip
    row = lines[header + 1].split()
    assert row[:9] == ["1", "2", "before", "in", f"s3://{bucket}/t/", "3", "1.5", "MiB", "-"]
    assert row[9] == "ok" and row[-1] == "free)"
    assert "credentials from env; reads only" in result.out


def test_filters_select_what_staging_copies(
    probe: Any, s3_client: Any, bucket: str, tmp_path: Path, s3_server: Any
) -> None:
    put(
        s3_client,
        bucket,
        {"f/a.h5": 10, "f/a.log": 20, "f/tmp/b.h5": 40, "f/x/c.h5": 80, "f/x/c.txt": 160},
    )
    result = probe(f"in,s3://{bucket}/f/,{tmp_path}/in/,exclude=*,include=*.h5,exclude=tmp/*")
    assert result.status == 0, result.err
    assert (result.entry(1)["objects"], result.entry(1)["bytes"]) == (2, 90)
    # The same filters through the transfer core, as the hooks run them, copy exactly that.
    filters = (
        Filter(FilterAction.EXCLUDE, "*"),
        Filter(FilterAction.INCLUDE, "*.h5"),
        Filter(FilterAction.EXCLUDE, "tmp/*"),
    )
    copied = transfer(
        f"s3://{bucket}/f/",
        str(tmp_path / "real") + "/",
        recursive=True,
        options=TransferOptions(filters=filters, workers=1),
        s3=settings_for(s3_server),
    )
    assert (copied.objects_done, copied.bytes_done) == (2, 90)


def test_objects_already_on_scratch_need_no_room(
    probe: Any, s3_client: Any, bucket: str, tmp_path: Path, s3_server: Any
) -> None:
    put(s3_client, bucket, {"s/a": 3000, "s/b": 5000})
    transfer(
        f"s3://{bucket}/s/a",
        str(tmp_path / "in") + "/",
        recursive=False,
        options=TransferOptions(workers=1),
        s3=settings_for(s3_server),
    )
    entry = probe(f"in,s3://{bucket}/s/,{tmp_path}/in/").entry(1)
    assert (entry["objects"], entry["bytes"]) == (2, 8000)
    assert (entry["unchanged_objects"], entry["to_copy_bytes"]) == (1, 5000)
    assert any("1 of 2 objects already up to date" in note for note in entry["notes"])


def test_a_single_object_is_counted_with_its_size(
    probe: Any, s3_client: Any, bucket: str, tmp_path: Path
) -> None:
    put(s3_client, bucket, {"one/ref.bin": 4321})
    entry = probe(f"in,s3://{bucket}/one/ref.bin,{tmp_path}/ref/").entry(1)
    assert (entry["objects"], entry["bytes"], entry["missing"]) == (1, 4321, None)
    assert entry["destination"] == f"{tmp_path}/ref/ref.bin"


def test_a_checkpoint_restore_counts_only_the_newest_generation(
    probe: Any, tmp_path: Path, bucket: str, s3_server: Any
) -> None:
    source = tmp_path / "ckpt"
    source.mkdir()
    generations = Generations(f"s3://{bucket}/ck/", settings_for(s3_server))
    (source / "old").write_bytes(b"o" * 100)
    generations.publish(str(source), TransferOptions(workers=1), keep=2)
    (source / "old").unlink()
    (source / "new").write_bytes(b"n" * 300)
    generations.publish(str(source), TransferOptions(workers=1), keep=2)
    result = probe(f"checkpoint,{tmp_path}/restored/,s3://{bucket}/ck/,keep=2")
    assert result.status == 0, result.err
    assert (result.entry(1)["objects"], result.entry(1)["bytes"]) == (1, 300)
    assert result.entry(1, "after")["bucket"] == {"name": bucket, "reachable": True, "error": None}


# --- what is missing -----------------------------------------------------------------


def test_a_missing_key_whose_prefix_exists_says_did_you_mean(
    probe: Any, s3_client: Any, bucket: str, tmp_path: Path
) -> None:
    put(s3_client, bucket, {"dataset/part-0": 10})
    result = probe(f"in,s3://{bucket}/dataset,{tmp_path}/dataset")
    assert result.status == EXIT_FINDINGS
    entry = result.entry(1)
    assert entry["missing"] == "object"
    (problem,) = entry["problems"]
    assert "not found" in problem
    hint = f"did you mean s3://{bucket}/dataset/ (a prefix: everything under it)?"
    assert problem.endswith(hint)
    assert f"job-0.sh:2: s3://{bucket}/dataset: " in result.err and hint in result.err


def test_a_missing_key_without_such_prefix_has_no_hint(
    probe: Any, bucket: str, tmp_path: Path
) -> None:
    result = probe(f"in,s3://{bucket}/absent.dat,{tmp_path}/in/")
    assert result.status == EXIT_FINDINGS
    (problem,) = result.entry(1)["problems"]
    assert "not found" in problem and "did you mean" not in problem


def test_an_empty_prefix_is_missing_data_unless_optional(
    probe: Any, bucket: str, tmp_path: Path
) -> None:
    result = probe(f"in,s3://{bucket}/nothing/,{tmp_path}/in/")
    assert result.status == EXIT_FINDINGS
    assert result.entry(1)["missing"] == "prefix"
    assert result.entry(1)["problems"] == [f"no objects under s3://{bucket}/nothing/"]
    optional = probe(f"in,s3://{bucket}/nothing/,{tmp_path}/in/,optional=yes")
    assert optional.status == 0, optional.err
    assert optional.entry(1)["missing"] == "prefix" and optional.entry(1)["problems"] == []
    assert "staging skips it" in optional.entry(1)["notes"][0]


def test_filters_that_exclude_everything_leave_nothing_to_stage(
    probe: Any, s3_client: Any, bucket: str, tmp_path: Path
) -> None:
    put(s3_client, bucket, {"logs/a.log": 1, "logs/b.log": 2})
    result = probe(f"in,s3://{bucket}/logs/,{tmp_path}/in/,exclude=*.log")
    assert result.status == EXIT_FINDINGS
    assert result.entry(1)["objects"] == 0 and result.entry(1)["missing"] == "prefix"


def test_a_first_checkpoint_has_nothing_to_restore_and_that_is_fine(
    probe: Any, bucket: str, tmp_path: Path
) -> None:
    result = probe(f"checkpoint,{tmp_path}/ck/,s3://{bucket}/ck/", json=False)
    assert result.status == 0, result.err
    assert "nothing to restore yet" in result.out


def test_a_flush_to_a_missing_bucket_is_a_finding(probe: Any, bucket: str, tmp_path: Path) -> None:
    gone = f"gone-{uuid.uuid4().hex[:12]}"
    result = probe(f"out,{tmp_path}/r/,s3://{bucket}/r/", f"out,{tmp_path}/r/,s3://{gone}/r/")
    assert result.status == EXIT_FINDINGS
    assert result.entry(1, "after")["problems"] == []
    assert result.entry(1, "after")["bucket"]["reachable"] is True
    missing = result.entry(2, "after")
    assert missing["missing"] == "bucket" and missing["bucket"]["reachable"] is False
    assert missing["problems"] == [f"bucket {gone} does not exist: the flush would fail"]


# --- room on scratch -----------------------------------------------------------------


@pytest.fixture
def tiny_scratch(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs: a scratch file system with too little room."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    point = tmp_path / "tiny"
    point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(point)], check=True)
    try:
        yield point
    finally:
        subprocess.run(["umount", str(point)], check=False)


def test_too_little_room_on_scratch_is_a_finding(
    probe: Any, s3_client: Any, bucket: str, tiny_scratch: Path
) -> None:
    put(s3_client, bucket, {"big/a": 700 * KiB, "big/b": 700 * KiB})
    result = probe(f"in,s3://{bucket}/big/,{tiny_scratch}/not/yet/there/")
    assert result.status == EXIT_FINDINGS
    room = result.entry(1)["room"]
    info = os.statvfs(tiny_scratch)
    assert room["path"] == str(tiny_scratch)  # the nearest existing ancestor
    assert room["free_bytes"] == info.f_bavail * info.f_frsize <= 1024 * KiB
    assert room["needed_bytes"] >= 1400 * KiB and room["enough"] is False
    (problem,) = result.entry(1)["problems"]
    assert problem.startswith(f"not enough room on scratch at {tiny_scratch}: ")


def test_entries_that_fit_alone_but_not_together_are_both_findings(
    probe: Any, s3_client: Any, bucket: str, tiny_scratch: Path
) -> None:
    put(s3_client, bucket, {"p/a": 600 * KiB, "q/b": 600 * KiB})
    alone = probe(f"in,s3://{bucket}/p/,{tiny_scratch}/p/")
    assert alone.status == 0, alone.err
    result = probe(
        f"in,s3://{bucket}/p/,{tiny_scratch}/p/", f"in,s3://{bucket}/q/b,{tiny_scratch}/q/"
    )
    assert result.status == EXIT_FINDINGS
    for index, other in ((1, [2]), (2, [1])):
        room = result.entry(index)["room"]
        assert (room["shared_with"], room["enough"]) == (other, False)
        assert "on the same file system" in result.entry(index)["problems"][0]


def test_room_is_the_real_free_space_of_the_nearest_existing_directory(
    probe: Any, s3_client: Any, bucket: str, tmp_path: Path
) -> None:
    put(s3_client, bucket, {"r/a": 10 * KiB})
    result = probe(f"in,s3://{bucket}/r/,{tmp_path}/a/b/c/")
    room = result.entry(1)["room"]
    info = os.statvfs(tmp_path)
    assert room["path"] == str(tmp_path) and room["enough"] is True
    assert abs(room["free_bytes"] - info.f_bavail * info.f_frsize) < 64 * 1024**2
    assert room["needed_bytes"] >= 10 * KiB + 512  # the bytes, the margin, a block
    assert room["free_inodes"] is None or room["free_inodes"] > 0


# --- exit status, credentials, the site config ---------------------------------------


def test_invalid_directives_exit_2_and_probe_nothing(probe: Any, tmp_path: Path) -> None:
    result = probe(f"in,s3://bkt/x/,{tmp_path}/in/,when=sucess")
    assert result.status == 2
    assert "probe" not in result.report and result.report["valid"] is False


def test_without_credentials_the_probe_cannot_run_exit_1(
    probe: Any, monkeypatch: pytest.MonkeyPatch, bucket: str, tmp_path: Path
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    result = probe(f"in,s3://{bucket}/x/,{tmp_path}/in/")
    assert result.status == 1
    assert result.report["probe"]["entries"] == []
    assert "no AWS credentials found" in result.report["probe"]["error"]
    assert "--probe: no AWS credentials found" in result.err


def test_an_unreachable_s3_is_not_a_finding_but_cannot_tell_exit_1(
    probe: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import socket

    with contextlib.closing(socket.socket()) as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    result = probe(f"in,s3://bkt/x/,{tmp_path}/in/", json=False)
    assert result.status == 1, (result.out, result.err)
    assert "cannot tell: " in result.err and "S3" in result.err and "could not" in result.err
    (row,) = [
        line.split() for line in result.out.splitlines() if line.split()[:3] == ["1", "2", "before"]
    ]
    assert row[5:9] == ["-", "-", "-", "-"]  # nothing counted, no room to judge
    assert f"127.0.0.1:{port}" in result.out  # where it looked; never a credential


@pytest.fixture
def site(s3_server: Any, bucket: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    s = make_site(s3_server.access_key, s3_server.secret_key)
    s.write_config(s3_server.endpoint_url, [bucket])
    s.user_dir("root")
    monkeypatch.setenv("FSX_STAGE_CONFIG", str(s.config))
    yield s
    s.cleanup()


def test_with_a_site_config_s3_is_reached_as_the_hooks_reach_it(
    probe: Any, site: Site, s3_client: Any, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if os.geteuid() != 0:
        pytest.skip("the site's scratch root is for the user root here")
    # The user's own environment points elsewhere and has no keys: the config decides.
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    put(s3_client, bucket, {"u/a": 11, "u/b": 22})
    result = probe(f"in,s3://{bucket}/u/,{site.scratch}/root/in/", extra=("--user", "root"))
    assert result.status == 0, result.err
    assert result.report["probe"]["s3"] == {
        "origin": "site config",
        "endpoint": site_endpoint(site),
        "credentials": "shared-credentials-file",
    }
    assert (result.entry(1)["objects"], result.entry(1)["bytes"]) == (2, 33)
    assert result.entry(1)["room"]["path"] == f"{site.scratch}/root"


def site_endpoint(site: Site) -> str:
    for line in site.config.read_text().splitlines():
        if line.startswith("endpoint_url"):
            return line.split('"')[1]
    raise AssertionError("no endpoint_url in the site config")
