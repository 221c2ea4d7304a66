"""The Markdown report (docs/benchmarks.md): machine, method, targets, one table per workload."""

from __future__ import annotations

import os
import platform
import statistics
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from tests.bench.runner import ToolResult, WorkloadResult
from tests.bench.tools import FSX_CRT, Tool

FSX = "fsx-stage"
S5CMD = "s5cmd"
AWS = "aws CLI"
RSS_TARGET_MIB = 256
HOOK_TARGET_MS = 20.0


@dataclass
class Context:
    """Everything the report says besides the results."""

    quick: bool
    reps: int
    tools: list[Tool]
    server_version: str
    command: str
    hook_ms: list[float] | None
    hook_note: str
    load_start: str
    before_after: list[str]  # the comparison with the previous full run (history.comparison)


def load_average() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def machine() -> list[tuple[str, str]]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        kib = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        mem = f"{kib / 2**20:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return [
        ("CPU", cpu),
        ("cores", str(os.cpu_count())),
        ("RAM", mem),
        ("kernel", f"{platform.system()} {platform.release()}"),
        ("OS", _os_release()),
        ("Python", platform.python_version()),
    ]


def _os_release() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return "?"


def _ratio(fsx: ToolResult | None, peer: ToolResult | None) -> float | None:
    """fsx-stage throughput / peer throughput (= peer time / fsx-stage time)."""
    if fsx is None or peer is None or not fsx.ok or not peer.ok:
        return None
    return peer.median_s / fsx.median_s


def _fmt(value: float | None, spec: str = ".2f", suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{suffix}"


def _workload_table(wr: WorkloadResult) -> list[str]:
    w = wr.workload
    fsx = wr.result(FSX)
    lines = [
        f"### {w.id}: {w.title}",
        "",
        f"{w.count:,} object{'s' if w.count != 1 else ''}, {w.total_bytes / 1e6:,.1f} MB in total."
        + ("" if w.targets else " Report only (no target)."),
        "",
        "| tool | median s | MB/s | fsx-stage speed-up | tree PSS MiB | tree RSS MiB "
        "| largest process RSS MiB | runs (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in wr.results:
        if not r.ok:
            reason = r.error or "no run"
            lines.append(f"| {r.tool} | not available: {reason} | | | | | | |")
            continue
        ratio = "1.00x (itself)" if r.tool == FSX else _fmt(_ratio(fsx, r), ".2f", "x")
        runs = ", ".join(f"{run.seconds:.2f}" for run in r.runs)
        lines.append(
            f"| {r.tool} | {r.median_s:.2f} | {r.mb_per_s(w.total_bytes):,.0f} | {ratio} "
            f"| {r.peak_tree_pss_mib:.0f} | {r.peak_tree_rss_mib:.0f} "
            f"| {_fmt(r.peak_process_rss_mib, '.0f')} | {runs} |"
        )
    return [*lines, ""]


def _targets(results: list[WorkloadResult], ctx: Context) -> list[str]:
    rows: list[tuple[str, str, str]] = []

    def verdict(ok: bool | None) -> str:
        return "not measured" if ok is None else ("met" if ok else "**not met**")

    for wr in results:
        if not wr.workload.targets:
            continue
        fsx = wr.result(FSX)
        for peer, need in ((S5CMD, 1.0), (AWS, 2.0)):
            ratio = _ratio(fsx, wr.result(peer))
            rows.append(
                (
                    f"{wr.workload.id}: fsx-stage >= {need:.1f}x {peer}",
                    _fmt(ratio, ".2f", "x"),
                    verdict(None if ratio is None else ratio >= need),
                )
            )
    for wr in results:  # the rule for adopting the CRT as the data plane
        crt = wr.result(FSX_CRT)
        if not wr.workload.targets or crt is None or not crt.available_run:
            continue
        for peer, need in ((FSX, 0.95), (S5CMD, 1.0)):
            ratio = _ratio(crt, wr.result(peer))
            rows.append(
                (
                    f"{wr.workload.id}: {FSX_CRT} >= {need:.2f}x {peer} (CRT adoption rule)",
                    _fmt(ratio, ".2f", "x"),
                    verdict(None if ratio is None else ratio >= need),
                )
            )
    pss = [wr.result(FSX) for wr in results]
    peaks = [r.peak_tree_pss_mib for r in pss if r is not None and r.ok]
    peak = max(peaks) if peaks else None
    rows.append(
        (
            f"fsx-stage peak memory < {RSS_TARGET_MIB} MiB (tree PSS, all workloads)",
            _fmt(peak, ".0f", " MiB"),
            verdict(None if peak is None else peak < RSS_TARGET_MIB),
        )
    )
    hook = statistics.median(ctx.hook_ms) if ctx.hook_ms else None
    rows.append(
        (
            f"no-op Prolog (SPANK_FSX_STAGE unset) < {HOOK_TARGET_MS:.0f} ms",
            _fmt(hook, ".1f", " ms"),
            verdict(None if hook is None else hook < HOOK_TARGET_MS),
        )
    )
    return [
        "| target | measured | verdict |",
        "|---|---:|---|",
        *(f"| {a} | {b} | {c} |" for a, b, c in rows),
        "",
    ]


def render(results: list[WorkloadResult], ctx: Context) -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    mode = "QUICK smoke run (tiny sizes: numbers mean nothing)" if ctx.quick else "full run"
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `{ctx.command}` on {now}: {mode}, {ctx.reps} repetition(s) per tool.",
        "",
        "## Targets",
        "",
        *_targets(results, ctx),
        *ctx.before_after,
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in machine()),
        f"| S3 server | SeaweedFS `weed mini` {ctx.server_version}, same host, loopback |",
        "",
        "Tools:",
        "",
        *(
            f"- {t.name}: {t.version}"
            if t.available
            else f"- {t.name}: not available ({t.missing})"
            for t in ctx.tools
        ),
        "",
        f"Load average (1, 5, 15 min) at the start: {ctx.load_start}; at the end: "
        f"{load_average()}. Other work on the machine during the run slows every tool alike "
        "(alternating order) but adds noise.",
        "",
        "## How to reproduce",
        "",
        "```sh",
        "make bench                  # full run, 3 repetitions (BENCH_REPS=N to change)",
        "BENCH_QUICK=1 make bench    # tiny sizes, a smoke run",
        "python -m tests.bench --help",
        "```",
        "",
        "## Method",
        "",
        "- `make bench` starts its own SeaweedFS (`weed mini`) on free loopback ports; the server "
        "shares the CPU cores with the tool under test, so every number includes the server's "
        "own cost and W4 (one large upload) is bound by the server.",
        "- Source data is random (incompressible) and written once to a RAM-backed directory "
        "under /dev/shm; downloads go to /dev/shm too and are removed between runs; the "
        "uploaded objects are deleted between runs.",
        "- Tools run alternately, the order rotating per repetition (ABC, BCA, CAB, ...), with "
        "`sync` before each run. Each run is verified afterwards (every file or object present "
        "with the right size); a failed or incomplete run disqualifies that tool for the "
        "workload.",
        "- Reported: median wall time, MB/s (10^6 bytes per second) from the median, and the "
        "fsx-stage speed-up (peer time / fsx-stage time: above 1 means fsx-stage is faster).",
        "- Memory: peak over time of the summed PSS and RSS of the tool's whole process tree "
        "(worker processes included; sampled every 50 ms from /proc), and the largest single "
        "process (`/usr/bin/time -f %M`). The < 256 MiB target is judged on tree PSS.",
        "- Commands, all with default concurrency and part sizes: "
        "`fsx-stage cp s3://bench/PREFIX/ DIR --recursive --no-progress` (and the reverse), "
        "`s5cmd --endpoint-url URL cp 's3://bench/PREFIX/*' DIR/`, "
        "`aws --endpoint-url URL s3 cp s3://bench/PREFIX/ DIR --recursive`, "
        "`rclone copy bench:bench/PREFIX DIR`.",
        f"- No-op hook: `plugin/prolog` with SPANK_FSX_STAGE unset, {ctx.hook_note}.",
        "- Verification differs: the data is seeded by s5cmd, which stores no checksum, so "
        "fsx-stage checks every single-part object against its MD5 ETag (~0.85 GB/s of CPU "
        "per core here) and multipart ones for their size; s5cmd checks nothing. This is "
        "most of fsx-stage's CPU in W5 (3.4 GB hashed on the same 2 cores as the server). "
        "Objects written by current AWS SDKs carry a CRC64NVME, checked at ~35 GB/s.",
        "- Before and after: a full run keeps its medians in docs/benchmarks.json; the next "
        'full run\'s report compares itself with them (section "Before and after").',
        "",
        "## Results",
        "",
    ]
    for wr in results:
        lines += _workload_table(wr)
    return "\n".join(lines)


def render_scaling(results: list[WorkloadResult]) -> str:
    """The scaling run: median seconds (and the runs) per store and concurrency."""
    if not results:
        return ""
    lines = [
        "",
        "## Scaling: fsx-stage's stores over `--concurrency`",
        "",
        "`direct`: the own client (the default); `crt`: `FSX_STAGE_STORE=crt`.",
        "",
    ]
    for wr in results:
        w = wr.workload
        lines += [
            f"### {w.id}: {w.title}",
            "",
            "| store, concurrency | median s | MB/s | runs (s) |",
        ]
        lines.append("|---|---:|---:|---|")
        for r in wr.results:
            if not r.ok:
                lines.append(f"| {r.tool} | failed: {r.error or 'no run'} | | |")
                continue
            runs = ", ".join(f"{run.seconds:.2f}" for run in r.runs)
            lines.append(
                f"| {r.tool} | {r.median_s:.2f} | {r.mb_per_s(w.total_bytes):,.0f} | {runs} |"
            )
        lines.append("")
    return "\n".join(lines)
