"""Small helpers the scenarios share: run the CLI, make payloads, upload them."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KiB = 1024
MiB = 1024 * KiB


@dataclass
class CliRun:
    """One finished ``fsx-stage`` invocation."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def objects(self) -> int:
        return int(self.summary.get("objects_done", 0))

    @property
    def bytes(self) -> int:
        return int(self.summary.get("bytes_done", 0))


def summary_of(stdout: str) -> dict[str, Any]:
    for line in reversed(stdout.splitlines()):
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict) and data.get("event") == "summary":
            return data
    return {}


def fsx_stage_argv(executable: str | None = None) -> list[str]:
    return [executable] if executable else [sys.executable, "-m", "fsx_stage"]


def cli(
    args: Sequence[str],
    env: Mapping[str, str],
    *,
    timeout: float = 600,
    user: str | None = None,
    executable: str | None = None,
) -> CliRun:
    """``fsx-stage ARGS --json --no-progress``; as ``user`` via runuser when given (then
    ``executable`` must be an ``fsx-stage`` every user can run)."""
    argv = [*fsx_stage_argv(executable), *args, "--json", "--no-progress"]
    if user is not None:
        argv = ["/usr/sbin/runuser", "-u", user, "--", "/usr/bin/env", *_env_args(env), *argv]
    started = time.monotonic()
    proc = subprocess.run(
        argv,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd="/",
    )
    seconds = time.monotonic() - started
    return CliRun(proc.returncode, proc.stdout, proc.stderr, seconds, summary_of(proc.stdout))


def spawn(
    args: Sequence[str], env: Mapping[str, str], executable: str | None = None
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*fsx_stage_argv(executable), *args, "--json", "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
        cwd="/",
        start_new_session=True,  # the stager and its workers: one session, see leftovers()
    )


def session_members(sid: int) -> list[int]:
    """Live processes of session ``sid`` (a spawned stager's workers share it)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[3]) == sid:
            members.append(int(entry.name))
    return members


def leftovers(proc: subprocess.Popen[str], grace_s: float = 10.0) -> list[int]:
    """After the stager ``proc`` died: processes of its session still alive after
    ``grace_s`` (orphaned workers), which are then killed so nothing hangs."""
    proc.wait()
    deadline = time.monotonic() + grace_s
    while (members := session_members(proc.pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in members:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.communicate()
    return members


def _env_args(env: Mapping[str, str]) -> list[str]:
    return [f"{k}={v}" for k, v in env.items()]


def payloads(
    rng: random.Random, count: int, *, big: int = 0, big_size: int = 20 * MiB, prefix: str = ""
) -> dict[str, bytes]:
    """``count`` small bodies (0 B to 96 KiB, a few nested) plus ``big`` multipart-sized ones."""
    out: dict[str, bytes] = {}
    for i in range(count):
        size = rng.choice([0, 1, 100, 4 * KiB, 17 * KiB, 64 * KiB, 96 * KiB])
        name = f"{prefix}d{i % 7}/f{i:05d}.bin" if i % 3 else f"{prefix}f{i:05d}.bin"
        out[name] = rng.randbytes(size)
    for i in range(big):
        out[f"{prefix}big{i}.bin"] = rng.randbytes(big_size + rng.randrange(MiB))
    return out


def put_all(client: Any, bucket: str, prefix: str, contents: Mapping[str, bytes]) -> None:
    def put(item: tuple[str, bytes]) -> None:
        client.put_object(Bucket=bucket, Key=prefix + item[0], Body=item[1])

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, contents.items()))


def write_tree(root: Path, contents: Mapping[str, bytes]) -> None:
    for relative, body in contents.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
