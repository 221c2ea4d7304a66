"""Faults between fsx-stage and S3, and on the destination filesystem.

The stager (``fsx-stage cp``/``sync``, a separate process) talks to SeaweedFS through the
loopback fault proxy. Whatever breaks, a file appears only complete, and a re-run
finishes the job.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.chaos.conftest import scaled
from tests.chaos.invariants import Checker, InvariantBroken, sha256, temporaries
from tests.chaos.results import ScenarioResult
from tests.chaos.tools import MiB, cli, leftovers, payloads, put_all, spawn, summary_of
from tests.testbed.faultproxy import FaultProxy
from tests.testbed.seaweed import SeaweedServer

GROUP = "faults"
# Rates per eligible request of each fault kind in a storm round.
STORM = {
    "reset_rate": 0.04,
    "slowdown_rate": 0.06,
    "truncate_rate": 0.03,
    "corrupt_rate": 0.02,
    "latency_rate": 0.1,
    "latency_s": 0.2,
}
STORM_BURST = 40  # consecutive 503 SlowDown answers at the start of odd rounds


def _env(server: Any, endpoint: str) -> dict[str, str]:
    return {**server.env(), "AWS_ENDPOINT_URL": endpoint}


def _converge(
    args: list[str], env: dict[str, str], result: ScenarioResult, attempts: int = 3
) -> None:
    """Re-run ``sync`` until it reports success (a fault may outlast the retries)."""
    for _ in range(attempts):
        run = cli(["sync", *args], env)
        result.add_transfer(run.objects, run.bytes, run.seconds)
        if run.returncode == 0:
            return
        result.expected_failures += 1
    result.failures += 1
    raise AssertionError(f"sync never converged: {run.stderr[-2000:]}")


def test_fault_proxy_storms(
    scale: float,
    result: ScenarioResult,
    checker: Checker,
    s3_server: Any,
    s3_client: Any,
    bucket: str,
    fault_proxy: FaultProxy,
    tmp_path: Path,
) -> None:
    """Rounds of upload and download through the fault proxy injecting connection resets
    mid-body, 503 SlowDown storms, truncated and corrupted bodies and latency at set rates.
    A round may end with failed objects (exit 1, listed); never with a torn or wrong file;
    a plain re-run completes it."""
    rng = random.Random(5)
    env = _env(s3_server, fault_proxy.endpoint_url)
    rounds = scaled(scale, 10)
    for n in range(rounds):
        contents = payloads(rng, scaled(scale, 60, 8), big=1 if n % 2 == 0 else 0)
        src, dst = tmp_path / f"src{n}", tmp_path / f"dst{n}"
        for relative, body in contents.items():
            (src / relative).parent.mkdir(parents=True, exist_ok=True)
            (src / relative).write_bytes(body)
        prefix = f"storm{n}/"
        for direction, args in (
            ("up", [str(src), f"s3://{bucket}/{prefix}"]),
            ("down", [f"s3://{bucket}/{prefix}", str(dst)]),
        ):
            fault_proxy.set_faults(
                **STORM,
                slowdown_count=STORM_BURST if n % 2 else 0,  # a 503 storm opens odd rounds
                seed=n,
                methods={"PUT", "POST"} if direction == "up" else {"GET"},
            )
            run = cli(["cp", "--recursive", *args], env)
            result.runs += 1
            result.add_faults(fault_proxy.injected)
            result.add_transfer(run.objects, run.bytes, run.seconds)
            assert run.returncode in (0, 1), run.stderr
            if run.returncode == 1:
                result.expected_failures += 1
            if direction == "down":
                checker.no_torn_files(dst, contents)
            else:
                objects = {}
                for key, digest in _objects(checker, bucket, prefix).items():
                    objects[key] = digest
                    if digest != sha256(contents[key]):
                        raise InvariantBroken(f"s3://{bucket}/{prefix}{key} is torn")
            fault_proxy.set_faults()
            _converge(args, env, result)
        checker.staged_in(bucket, prefix, dst)
        checker.no_secrets([tmp_path], [run.stdout, run.stderr])
    result.notes.append(
        "per round: cp -r up (PUT/POST faulted), cp -r down (GET faulted), then sync until"
        f" clean; rates {', '.join(f'{k}={v}' for k, v in STORM.items())}; odd rounds open"
        f" with {STORM_BURST} consecutive 503 SlowDown answers"
    )
    assert result.faults, "the proxy injected nothing"


def _objects(checker: Checker, bucket: str, prefix: str) -> dict[str, str]:
    from tests.chaos.invariants import s3_objects

    return {
        k.removeprefix(prefix): h for k, h in s3_objects(checker.client, bucket, prefix).items()
    }


@pytest.fixture
def restartable_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    server = SeaweedServer(tmp_path_factory.mktemp("weed-restart"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _kill9_weed(server: SeaweedServer) -> None:
    pid = server.running_pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
    server.pid_file.unlink(missing_ok=True)


def test_seaweedfs_killed_and_restarted_mid_transfer(
    scale: float, result: ScenarioResult, restartable_s3: SeaweedServer, tmp_path: Path
) -> None:
    """SeaweedFS is killed (SIGKILL) while a download and an upload run, and restarted
    on the same data a few seconds later behind the same proxy address. The transfer either
    rides it out (retries) or fails cleanly; no torn file; a re-run completes."""
    server = restartable_s3
    client = server.client()
    checker = result.track(Checker(client, secrets=(server.secret_key,)))
    rng = random.Random(7)
    bucket = f"restart-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket)
    with FaultProxy.for_endpoint(server.endpoint_url) as proxy:
        env = _env(server, proxy.endpoint_url)
        for n in range(scaled(scale, 4)):
            contents = payloads(rng, scaled(scale, 200, 20), big=2, big_size=24 * MiB)
            put_all(client, bucket, f"in{n}/", contents)
            dst = tmp_path / f"dst{n}"
            for args in (
                [f"s3://{bucket}/in{n}/", str(dst)],
                [str(dst), f"s3://{bucket}/back{n}/"],
            ):
                proc = spawn(["cp", "--recursive", "--concurrency", "4", *args], env)
                time.sleep(rng.uniform(0.3, 1.0))
                _kill9_weed(server)
                result.faults["seaweedfs kill -9"] += 1
                time.sleep(rng.uniform(1.0, 3.0))
                server.start()
                client = server.client()
                checker.client = client
                proxy.upstream = ("127.0.0.1", server.s3_port)
                out, err = proc.communicate(timeout=600)
                summary = summary_of(out)
                result.add_transfer(
                    int(summary.get("objects_done", 0)),
                    int(summary.get("bytes_done", 0)),
                    float(summary.get("elapsed_s", 0)),
                )
                result.runs += 1
                assert proc.returncode in (0, 1), err
                if proc.returncode == 1:
                    result.expected_failures += 1
                checker.no_torn_files(dst, contents)
                _converge(args, env, result, attempts=5)
                checker.no_secrets([server.log_file], [out, err])
            checker.staged_in(bucket, f"in{n}/", dst)
            checker.staged_in(bucket, f"back{n}/", dst)
    result.notes.append("SIGKILL 0.3-1 s into each transfer; restart after 1-3 s; same data dir")


def test_stager_kill9_and_resume(
    scale: float,
    result: ScenarioResult,
    checker: Checker,
    s3_server: Any,
    s3_client: Any,
    bucket: str,
    tmp_path: Path,
) -> None:
    """The stager is killed with SIGKILL at random points of a download and of an upload,
    several times in a row, then re-run: after every kill each final-named file and object
    is complete; the re-run (``sync``) finishes and the trees are identical."""
    rng = random.Random(9)
    env = s3_server.env()
    contents = payloads(rng, scaled(scale, 400, 30), big=3, big_size=18 * MiB)
    put_all(s3_client, bucket, "src/", contents)
    dst = tmp_path / "dst"
    kills = scaled(scale, 20, 2)
    mid_transfer = 0
    for direction, args, check in (
        ("down", [f"s3://{bucket}/src/", str(dst)], lambda: checker.no_torn_files(dst, contents)),
        (
            "up",
            [str(dst), f"s3://{bucket}/back/"],
            lambda: _no_torn_objects(checker, bucket, "back/", contents),
        ),
    ):
        for _ in range(kills):
            _forget_some(rng, direction, dst, s3_client, bucket, contents)
            proc = spawn(["sync", *args], env)
            time.sleep(rng.uniform(0.05, 1.5))
            mid_transfer += proc.poll() is None
            proc.send_signal(signal.SIGKILL)
            orphans = leftovers(proc)
            result.faults["stager kill -9"] += 1
            result.runs += 1
            if orphans:
                raise InvariantBroken(
                    f"{len(orphans)} worker processes outlived the killed stager by 10 s"
                )
            check()
        _converge(args, env, result)
    checker.staged_in(bucket, "src/", dst)
    checker.staged_in(bucket, "back/", dst)
    left = len(temporaries(dst))
    result.notes.append(
        f"{kills} kills per direction at 0.05-1.5 s, {mid_transfer} of them while the stager"
        f" still ran; before each run a random third of the tree ({len(contents)} objects,"
        f" {sum(map(len, contents.values())) / MiB:.0f} MiB) is deleted on the receiving"
        f" side so every run has work; {left} temporaries left by kills"
    )


def _forget_some(
    rng: random.Random,
    direction: str,
    dst: Path,
    client: Any,
    bucket: str,
    contents: dict[str, bytes],
) -> None:
    """Delete a random third of the receiving side (always the big files) so the next
    run has work to be killed in."""
    names = [n for n in contents if n.startswith("big") or rng.random() < 0.33]
    for name in names:
        if direction == "down":
            (dst / name).unlink(missing_ok=True)
        else:
            client.delete_object(Bucket=bucket, Key=f"back/{name}")


def _no_torn_objects(
    checker: Checker, bucket: str, prefix: str, contents: dict[str, bytes]
) -> None:
    for key, digest in _objects(checker, bucket, prefix).items():
        if digest != sha256(contents[key]):
            raise InvariantBroken(f"s3://{bucket}/{prefix}{key} is torn")
    checker.passed += 1


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs (root only); skipped where the sandbox forbids mounts."""
    mount = tmp_path / "small"
    mount.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m,mode=0777", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {proc.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_destination_filesystem_fills_up(
    scale: float,
    result: ScenarioResult,
    checker: Checker,
    s3_server: Any,
    s3_client: Any,
    bucket: str,
    small_fs: Path,
) -> None:
    """Stage-in onto an almost full 8 MiB filesystem of more data than fits (mixed small files and a
    multipart-sized one): the stager exits 1 with an error naming the lack of space, every
    file that exists is complete, and after space is freed a re-run completes."""
    rng = random.Random(11)
    env = s3_server.env()
    for n in range(scaled(scale, 5)):
        contents = payloads(rng, 40, big=1, big_size=2 * MiB)
        put_all(s3_client, bucket, f"full{n}/", contents)
        for old in small_fs.glob("dst*"):  # only this round's tree on the filesystem
            shutil.rmtree(old)
        dst = small_fs / f"dst{n}"
        (small_fs / "ballast").write_bytes(b"\0" * (6 * MiB))
        run = cli(["cp", "--recursive", f"s3://{bucket}/full{n}/", str(dst)], env)
        result.runs += 1
        result.faults["ENOSPC"] += 1
        assert run.returncode == 1, run.stdout[-2000:] + run.stderr
        result.expected_failures += 1
        assert "space" in run.stderr.lower() or "ENOSPC" in run.stderr, run.stderr
        checker.no_torn_files(dst, contents)
        left = temporaries(dst)
        (small_fs / "ballast").unlink()
        run = cli(["sync", f"s3://{bucket}/full{n}/", str(dst)], env)
        result.add_transfer(run.objects, run.bytes, run.seconds)
        assert run.returncode == 0, run.stderr
        checker.staged_in(bucket, f"full{n}/", dst)
        checker.no_secrets([], [run.stdout, run.stderr])
        if left:
            result.notes.append(f"round {n}: {len(left)} temporaries left after ENOSPC")
    result.notes.append("8 MiB tmpfs with 6 MiB ballast; 3-4 MiB to stage per round")
