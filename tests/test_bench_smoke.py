"""``make bench`` runs end to end (quick mode) and reports real numbers for the peers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from tests.bench import measure as measure_module
from tests.bench.history import HAND_WRITTEN, history_path
from tests.bench.measure import measure
from tests.bench.runner import rotated
from tests.bench.tools import FsxStage, S5cmd

REPO = Path(__file__).resolve().parents[1]


def test_run_order_rotates_per_repetition() -> None:
    a, b, c = (S5cmd(name, None) for name in "abc")
    assert [[t.name for t in rotated([a, b, c], rep)] for rep in range(4)] == [
        ["a", "b", "c"],
        ["b", "c", "a"],
        ["c", "a", "b"],
        ["a", "b", "c"],
    ]


def test_fsx_stage_is_invoked_as_its_cli_contract_says() -> None:
    fsx = FsxStage("fsx-stage", Path("/x/fsx-stage"))
    assert fsx.download("b", "p/", Path("/d")) == [
        "/x/fsx-stage", "cp", "s3://b/p/", "/d", "--recursive", "--no-progress"
    ]  # fmt: skip
    assert fsx.upload(Path("/s"), "b", "p/") == [
        "/x/fsx-stage", "cp", "/s", "s3://b/p/", "--recursive", "--no-progress"
    ]  # fmt: skip


HOLD_64_MIB = "import time; block = bytearray(64 * 2**20); time.sleep(1.0)"


@pytest.mark.parametrize("gnu_time", [True, False], ids=["usr-bin-time", "getrusage-wrapper"])
def test_measure_sees_the_memory_of_the_process_tree(
    gnu_time: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if gnu_time and not measure_module.GNU_TIME.exists():
        pytest.skip("/usr/bin/time is not installed")
    if not gnu_time:
        monkeypatch.setattr(measure_module, "GNU_TIME", Path("/nonexistent/time"))
    # a shell whose child holds 64 MiB: the tree, not the direct child, is measured
    run = measure(["sh", "-c", f'{sys.executable} -c "{HOLD_64_MIB}"; exit 3'], dict(os.environ))
    assert run.returncode == 3
    assert run.max_rss_kib is not None and run.max_rss_kib >= 64 * 1024
    assert run.tree_rss_kib >= 64 * 1024
    assert run.tree_pss_kib >= 60 * 1024


@pytest.mark.s3
def test_quick_bench_reports_every_workload_with_s5cmd(tmp_path: Path) -> None:
    report = tmp_path / "bench.md"
    hand_written = f"{HAND_WRITTEN}\n\n## Measured by hand\n\nkept\n"
    report.write_text(f"# an older report\n\n{hand_written}")
    done = subprocess.run(
        [sys.executable, "-m", "tests.bench", "--quick", "--reps", "1",
         "--tools", "fsx-stage,s5cmd", "--hook-runs", "3", "--output", str(report)],
        cwd=REPO,
        env={**os.environ, "TESTBED": str(tmp_path / "testbed")},
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    text = report.read_text()
    assert "QUICK smoke run" in text
    for workload in ("W1", "W2", "W3", "W4", "W5"):
        section = text.split(f"### {workload}:")[1].split("###")[0]
        assert re.search(r"^\| s5cmd \| \d+\.\d\d \| [\d,]+ \|", section, re.M), section
        # fsx-stage has numbers or says why not; never an empty or fake row
        assert re.search(r"^\| fsx-stage \| (\d+\.\d\d \||not available: )", section, re.M)
    assert "| no-op Prolog" in text
    assert text.endswith("\n" + hand_written) and "an older report" not in text
    assert not history_path(report).exists()  # a quick run is no one's "before"
