"""``python -m tests.bench.revisions REV``: one 1 GiB download (W1) by fsx-stage at REV and at
the checkout, and by s5cmd, alternating, in one run on one server: a before/after of the code
that the machine's own speed (which differs from day to day) cannot blur.

REV is checked out as a detached git worktree under the test bed and run with this
checkout's virtualenv (``PYTHONPATH`` chooses the code); data lives in /dev/shm.
"""

from __future__ import annotations

import argparse
import compileall
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.bench.tools import discover, write_aws_config
from tests.testbed.seaweed import SeaweedServer

REPO = Path(__file__).resolve().parents[2]
SIZE = 1 << 30
GIT_WORKTREE = ("git", "-C", str(REPO), "worktree")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.bench.revisions", description=__doc__)
    p.add_argument("rev", help="the git revision to compare with, e.g. 5f33c55")
    p.add_argument("--reps", type=int, default=6)
    args = p.parse_args(argv)
    bed = Path(os.environ.get("TESTBED", REPO / ".testbed"))
    bed.mkdir(parents=True, exist_ok=True)
    old = Path(tempfile.mkdtemp(prefix="rev-", dir=bed))
    shm = Path(tempfile.mkdtemp(prefix="fsx-rev-", dir="/dev/shm"))
    try:
        subprocess.run(
            [*GIT_WORKTREE, "add", "-q", "--detach", str(old / "src-tree"), args.rev], check=True
        )
        for tree in (old / "src-tree" / "src", REPO / "src"):
            compileall.compile_dir(tree, quiet=1)  # as installed: no compiling in the runs
        with SeaweedServer(old / "s3", die_with_parent=True) as server:
            times = _race(server, shm, old / "src-tree" / "src", args.rev, args.reps)
    finally:
        subprocess.run(
            [*GIT_WORKTREE, "remove", "--force", str(old / "src-tree")],
            check=False,
        )
        shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(shm, ignore_errors=True)
    for name, runs in times.items():
        print(
            f"{name:>22}: median {statistics.median(runs):.2f} s  runs "
            + " ".join(f"{t:.2f}" for t in runs)
        )
    return 0


def _race(
    server: SeaweedServer, shm: Path, old_src: Path, rev: str, reps: int
) -> dict[str, list[float]]:
    tools = {t.name: t for t in discover(server, write_aws_config(shm / "aws-config"))}
    s5, fsx = tools["s5cmd"], tools["fsx-stage"]
    server.client().create_bucket(Bucket="revisions")
    data = shm / "data"
    data.write_bytes(os.urandom(SIZE))
    subprocess.run(
        [
            str(s5.binary),
            "--endpoint-url",
            server.endpoint_url,
            "cp",
            str(data),
            "s3://revisions/w1",
        ],
        env=s5.env,
        check=True,
        capture_output=True,
    )
    data.unlink()
    fsx_cp = [sys.executable, "-m", "fsx_stage", "cp", "s3://revisions/w1", "DST", "--no-progress"]
    commands = {
        f"fsx-stage {rev}": (fsx_cp, {**fsx.env, "PYTHONPATH": str(old_src)}),
        "fsx-stage checkout": (fsx_cp, {**fsx.env, "PYTHONPATH": str(REPO / "src")}),
        "s5cmd": (
            [
                str(s5.binary),
                "--endpoint-url",
                server.endpoint_url,
                "cp",
                "s3://revisions/w1",
                "DST",
            ],
            s5.env,
        ),
    }
    names = list(commands)
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(reps):
        for name in names[rep % 3 :] + names[: rep % 3]:  # ABC, BCA, CAB, ...
            out = shm / "out"
            out.mkdir()
            command, env = commands[name]
            command = [str(out / "w1") if a == "DST" else a for a in command]
            subprocess.run(["sync"], check=False)
            start = time.monotonic()
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            seconds = time.monotonic() - start
            if done.returncode != 0 or (out / "w1").stat().st_size != SIZE:
                raise SystemExit(f"{name} failed: {done.stderr[-2000:]}")
            times[name].append(seconds)
            shutil.rmtree(out)
    return times


if __name__ == "__main__":
    sys.exit(main())
