"""Seed the data, run every tool on every workload in rotating order, verify each run."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.bench.measure import Run, measure
from tests.bench.tools import Tool
from tests.bench.workloads import Workload, local_tree, write_tree

BUCKET = "bench"


@dataclass
class ToolResult:
    """All runs of one tool on one workload."""

    tool: str
    runs: list[Run] = field(default_factory=list)
    error: str | None = None  # not available, or a failed/incomplete run

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.runs)

    @property
    def available_run(self) -> bool:
        """Whether the tool ran at all (it may have failed)."""
        return bool(self.runs)

    @property
    def median_s(self) -> float:
        return statistics.median(r.seconds for r in self.runs)

    def mb_per_s(self, total_bytes: int) -> float:
        return total_bytes / self.median_s / 1e6

    @property
    def peak_tree_pss_mib(self) -> float:
        return max(r.tree_pss_kib for r in self.runs) / 1024

    @property
    def peak_tree_rss_mib(self) -> float:
        return max(r.tree_rss_kib for r in self.runs) / 1024

    @property
    def peak_process_rss_mib(self) -> float | None:
        values = [r.max_rss_kib for r in self.runs if r.max_rss_kib is not None]
        return max(values) / 1024 if values else None


@dataclass
class WorkloadResult:
    workload: Workload
    results: list[ToolResult]

    def result(self, tool: str) -> ToolResult | None:
        return next((r for r in self.results if r.tool == tool), None)


def rotated(tools: list[Tool], rep: int) -> list[Tool]:
    """The run order of repetition ``rep``: ABC, BCA, CAB, ..."""
    k = rep % len(tools) if tools else 0
    return tools[k:] + tools[:k]


class Bench:
    """The data under ``work`` (RAM-backed) and in bucket ``bench`` of the server."""

    def __init__(
        self,
        client: Any,
        seeder: Tool,
        work: Path,
        log: Callable[[str], None] = print,
    ) -> None:
        self.client = client
        self.seeder = seeder
        self.work = work
        self.log = log
        self.src = work / "src"
        self.dest = work / "dest"

    def prepare(self, workloads: list[Workload]) -> None:
        """Write each data set once locally; seed the objects the downloads read."""
        self.client.create_bucket(Bucket=BUCKET)
        uploaded = {w.data for w in workloads if w.direction == "upload"}
        for data in dict.fromkeys(w.data for w in workloads):
            files = next(w.files for w in workloads if w.data == data)
            root = self.src / data
            self.log(f"  generating {data}: {len(files)} files, {_human(_total(files))}")
            write_tree(root, files)
            if any(w.data == data and w.direction == "download" for w in workloads):
                self.log(f"  seeding s3://{BUCKET}/{data}/")
                run = measure(self.seeder.upload(root, BUCKET, f"{data}/"), self.seeder.env)
                if not run.ok:
                    raise RuntimeError(f"seeding {data} failed: {run.stderr}")
                got = self.remote_tree(f"{data}/")
                if got != dict(files):
                    raise RuntimeError(f"seeding {data}: {len(got)} of {len(files)} objects")
            if data not in uploaded:
                shutil.rmtree(root)  # downloads only need the objects: free the RAM

    def run(self, workload: Workload, tools: list[Tool], reps: int) -> WorkloadResult:
        results = {t.name: ToolResult(t.name, error=t.missing) for t in tools}
        runnable = [t for t in tools if t.available]
        for rep in range(reps):
            for tool in rotated(runnable, rep):
                result = results[tool.name]
                if result.error is not None:
                    continue  # it failed once: do not spend time on it again
                run, problem = self._one(workload, tool, rep)
                result.runs.append(run)
                self.log(
                    f"  {workload.id} rep {rep + 1}/{reps} {tool.name:10s} "
                    f"{run.seconds:8.2f}s  {problem or 'ok'}"
                )
                if problem is not None:
                    result.error = problem
        return WorkloadResult(workload, [results[t.name] for t in tools])

    def _one(self, workload: Workload, tool: Tool, rep: int) -> tuple[Run, str | None]:
        expected = dict(workload.files)
        if workload.direction == "download":
            shutil.rmtree(self.dest, ignore_errors=True)
            self.dest.mkdir(parents=True)
            cmd = tool.download(BUCKET, f"{workload.data}/", self.dest)
        else:
            prefix = f"up/{workload.id}/{tool.name.replace(' ', '-')}/{rep}/"
            self.delete_prefix(prefix)
            cmd = tool.upload(self.src / workload.data, BUCKET, prefix)
        os.sync()
        run = measure(cmd, tool.env)
        if workload.direction == "download":
            got = local_tree(self.dest)
            shutil.rmtree(self.dest, ignore_errors=True)
        else:
            got = self.remote_tree(prefix)
            self.delete_prefix(prefix)
        if not run.ok:
            tail = run.stderr.strip().splitlines()[-3:]
            return run, f"exit status {run.returncode}: {' | '.join(tail)}"
        if got != expected:
            missing = len(set(expected) - set(got))
            extra = len(set(got) - set(expected))
            wrong = sum(1 for k in set(got) & set(expected) if got[k] != expected[k])
            return (
                run,
                f"incomplete copy: {missing} missing, {extra} unexpected, {wrong} wrong size",
            )
        return run, None

    def remote_tree(self, prefix: str) -> dict[str, int]:
        tree: dict[str, int] = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=BUCKET, Prefix=prefix
        ):
            for obj in page.get("Contents", []):
                tree[obj["Key"][len(prefix) :]] = obj["Size"]
        return tree

    def delete_prefix(self, prefix: str) -> None:
        keys = list(self.remote_tree(prefix))
        for i in range(0, len(keys), 1000):
            batch = [{"Key": prefix + k} for k in keys[i : i + 1000]]
            self.client.delete_objects(Bucket=BUCKET, Delete={"Objects": batch, "Quiet": True})


def noop_hook_ms(prolog: Path, runs: int) -> list[float]:
    """Wall time (ms) of ``prolog`` for a job without --fsx-stage (SPANK_FSX_STAGE unset)."""
    env = {k: v for k, v in os.environ.items() if k != "SPANK_FSX_STAGE"}
    times: list[float] = []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run([str(prolog)], env=env, capture_output=True)
        times.append((time.perf_counter() - start) * 1000)
        if done.returncode != 0:
            raise RuntimeError(f"{prolog} exited {done.returncode}: {done.stderr[-500:]!r}")
    return times


def _total(files: tuple[tuple[str, int], ...]) -> int:
    return sum(size for _, size in files)


def _human(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"
