"""Run one command and measure it: wall time and peak memory of its process tree.

Memory is measured two ways:

- ``tree_pss`` / ``tree_rss``: the peak over time of the *sum* over every process of
  the tree (workers included), sampled from /proc every ``SAMPLE_S`` seconds. PSS counts
  shared pages once, RSS once per process (pessimistic for multi-process tools).
- ``max_rss``: the largest single process (``ru_maxrss``), from ``/usr/bin/time -f %M``
  when present, else ``getrusage(RUSAGE_CHILDREN)`` in a fresh wrapper process. It
  catches short peaks that sampling can miss.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

GNU_TIME = Path("/usr/bin/time")
SAMPLE_S = 0.05
RUN_TIMEOUT_S = 1800.0
MIN_AVAILABLE_KIB = 1024 * 1024  # kill a run that leaves the machine < 1 GiB available

_RUSAGE_WRAPPER = (
    "import resource, subprocess, sys\n"
    "rc = subprocess.call(sys.argv[2:])\n"
    "with open(sys.argv[1], 'w') as f:\n"
    "    f.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n"
    "sys.exit(rc)\n"
)


@dataclass(frozen=True)
class Run:
    """One measured run."""

    seconds: float
    returncode: int
    stderr: str
    max_rss_kib: int | None
    tree_pss_kib: int
    tree_rss_kib: int

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return kids
    for tid in tasks:
        try:
            kids += [int(c) for c in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
        except (OSError, ValueError):
            continue
    return kids


def _memory_kib(pid: int) -> tuple[int, int]:
    """``(pss, rss)`` of one process in KiB; zeros when it is gone."""
    pss = rss = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
            elif line.startswith("Rss:"):
                rss = int(line.split()[1])
    except (OSError, ValueError):
        pass
    return pss, rss


def _mem_available_kib() -> int | None:
    try:
        text = Path("/proc/meminfo").read_text()
        return int(text.split("MemAvailable:")[1].split()[0])
    except (OSError, ValueError, IndexError):
        return None


class _TreeSampler(threading.Thread):
    """Samples the summed PSS/RSS of every descendant of ``root`` (not ``root`` itself).

    It also guards the shared machine: when available memory falls below
    ``MIN_AVAILABLE_KIB`` it kills the run's process group and says so.
    """

    def __init__(self, root: int) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.peak_pss = 0
        self.peak_rss = 0
        self.out_of_memory = False
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            available = _mem_available_kib()
            if available is not None and available < MIN_AVAILABLE_KIB:
                self.out_of_memory = True
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.root, signal.SIGKILL)
                return
            pending, pss, rss = _children(self.root), 0, 0
            while pending:
                pid = pending.pop()
                p, r = _memory_kib(pid)
                pss, rss = pss + p, rss + r
                pending += _children(pid)
            self.peak_pss = max(self.peak_pss, pss)
            self.peak_rss = max(self.peak_rss, rss)
            self._done.wait(SAMPLE_S)

    def stop(self) -> None:
        self._done.set()
        self.join()


def measure(cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> Run:
    """Run ``cmd`` to completion (or ``RUN_TIMEOUT_S``) and measure it."""
    with tempfile.TemporaryDirectory(prefix="fsx-bench-") as tmp:
        rss_file = Path(tmp) / "maxrss"
        err_file = Path(tmp) / "stderr"
        if GNU_TIME.exists():
            wrapped = [str(GNU_TIME), "-f", "%M", "-o", str(rss_file), *cmd]
        else:
            wrapped = [sys.executable, "-c", _RUSAGE_WRAPPER, str(rss_file), *cmd]
        with err_file.open("wb") as err:
            start = time.perf_counter()
            proc = subprocess.Popen(
                wrapped,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
            )
            sampler = _TreeSampler(proc.pid)
            sampler.start()
            try:
                returncode = proc.wait(timeout=RUN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                returncode = proc.wait()
            seconds = time.perf_counter() - start
            sampler.stop()
        max_rss = None
        with contextlib.suppress(OSError, ValueError, IndexError):
            max_rss = int(rss_file.read_text().strip().splitlines()[-1])
        stderr = err_file.read_text(errors="replace")[-2000:]
        if sampler.out_of_memory:
            stderr += "\nkilled by the benchmark: the machine ran out of available memory"
    return Run(seconds, returncode, stderr, max_rss, sampler.peak_pss, sampler.peak_rss)
