"""``python -m tests.bench``: run the benchmark and write the Markdown report."""

from __future__ import annotations

import argparse
import compileall
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.bench import history
from tests.bench.history import Snapshot, comparison, history_path
from tests.bench.report import Context, load_average, render, render_scaling
from tests.bench.runner import Bench, noop_hook_ms
from tests.bench.tools import FsxStage, Tool, discover, write_aws_config
from tests.bench.workloads import Workload, workloads
from tests.testbed.seaweed import SeaweedServer, weed_binary

REPO = Path(__file__).resolve().parents[2]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__)
    p.add_argument(
        "--reps",
        type=int,
        default=int(os.environ.get("BENCH_REPS", "3")),
        help="repetitions per tool and workload (env BENCH_REPS, default 3)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        default=os.environ.get("BENCH_QUICK", "") not in ("", "0"),
        help="tiny sizes for a smoke run (env BENCH_QUICK=1)",
    )
    p.add_argument("--output", type=Path, default=REPO / "docs" / "benchmarks.md")
    p.add_argument("--tools", help="comma-separated subset, e.g. fsx-stage,s5cmd")
    p.add_argument("--workloads", help="comma-separated subset, e.g. W1,W2")
    p.add_argument(
        "--ram-dir",
        type=Path,
        default=Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir()),
        help="RAM-backed directory for the local data (default /dev/shm)",
    )
    p.add_argument("--hook-runs", type=int, default=50, help="runs of the no-op Prolog")
    p.add_argument(
        "--scaling",
        default=os.environ.get("BENCH_SCALING", ""),
        help="also run W1 and W2 with fsx-stage's direct and CRT stores at these "
        "--concurrency values, e.g. 8,16,32,64 (env BENCH_SCALING)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    chosen = workloads(args.quick)
    if args.workloads:
        wanted = {w.strip().upper() for w in args.workloads.split(",")}
        chosen = [w for w in chosen if w.id in wanted]
    # Measure fsx-stage as installed: pip byte-compiles a package when it installs it, but
    # an editable checkout run with PYTHONDONTWRITEBYTECODE=1 (set on these machines)
    # would compile every changed module again on every run (~7 ms of each start-up).
    compileall.compile_dir(REPO / "src", quiet=1)
    load_start = load_average()
    work = Path(tempfile.mkdtemp(prefix="fsx-bench-", dir=args.ram_dir))
    server_dir = Path(tempfile.mkdtemp(prefix="fsx-bench-s3-", dir=_server_parent()))
    command = os.environ.get("BENCH_INVOKED_AS") or " ".join(
        ["python -m tests.bench", *(argv if argv is not None else sys.argv[1:])]
    )
    try:
        with SeaweedServer(server_dir, die_with_parent=True) as server:
            print(f"SeaweedFS at {server.endpoint_url} (data in {server_dir})", flush=True)
            found = discover(server, write_aws_config(work / "aws-config"))
            tools = found
            if args.tools:
                names = {n.strip() for n in args.tools.split(",")}
                tools = [t for t in found if t.name in names]
            for t in tools:
                print(f"  {t.name}: {t.version or '-'} {'' if t.available else t.missing}")
            seeder = next(t for t in found if t.name == "s5cmd")
            if not seeder.available:
                print(f"cannot seed the data: {seeder.missing}", file=sys.stderr)
                return 1
            bench = Bench(server.client(), seeder, work, log=lambda m: print(m, flush=True))
            bench.prepare(chosen)
            results = [bench.run(w, tools, args.reps) for w in chosen]
            scaling = _scaling(bench, found, chosen, args)
            hook_ms, hook_note = _hook(args.hook_runs if not args.quick else 5)
            fsx_version = next((t.version for t in tools if t.name == "fsx-stage"), "")
            after = Snapshot.of(results, fsx_version, f"{load_start} -> {load_average()}")
            before = history.load(history_path(args.output))
            ctx = Context(
                quick=args.quick,
                reps=args.reps,
                tools=tools,
                server_version=_weed_version(),
                command=command,
                hook_ms=hook_ms,
                hook_note=hook_note,
                load_start=load_start,
                before_after=comparison(before, after) if not args.quick else [],
            )
            report = render(results, ctx) + render_scaling(scaling)
            kept = history.hand_written(args.output)
            report += ("\n" + kept) if kept else ""
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(server_dir, ignore_errors=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report)
    print(f"report written to {args.output}")
    if not (args.quick or args.tools or args.workloads):  # a full run: the next one's "before"
        history.save(history_path(args.output), after)
        print(f"medians kept in {history_path(args.output)}")
    return 0


def _scaling(bench: Bench, found: list[Tool], chosen: list[Workload], args: Any) -> list[Any]:
    """W1 and W2 again, each store at each concurrency (same rotation and checks)."""
    if not args.scaling:
        return []
    fsx = next(t for t in found if t.name == "fsx-stage")
    assert isinstance(fsx, FsxStage)
    levels = [int(n) for n in args.scaling.split(",") if n.strip()]
    variants: list[Tool] = [
        fsx.variant(f"{store} c={n}", store, "--concurrency", str(n))
        for n in levels
        for store in ("direct", "crt")
    ]
    return [bench.run(w, variants, args.reps) for w in chosen if w.id in ("W1", "W2")]


def _server_parent() -> Path:
    """The server's data lives on disk (not in RAM) under the test bed directory."""
    parent = Path(os.environ.get("TESTBED", REPO / ".testbed")) / "bench"
    parent.mkdir(parents=True, exist_ok=True)
    return parent


def _hook(runs: int) -> tuple[list[float] | None, str]:
    prolog = REPO / "plugin" / "prolog"
    if not prolog.exists():
        return None, "not measured: plugin/prolog does not exist"
    try:
        times = noop_hook_ms(prolog, runs)
    except RuntimeError as exc:
        return None, f"not measured: {exc}"
    print(f"  no-op prolog: median {statistics.median(times):.1f} ms over {runs} runs")
    return times, f"median of {runs} runs (fork+exec from Python included)"


def _weed_version() -> str:
    out = subprocess.run([str(weed_binary()), "version"], capture_output=True, text=True)
    return out.stdout.strip().splitlines()[0] if out.stdout.strip() else "?"


if __name__ == "__main__":
    sys.exit(main())
