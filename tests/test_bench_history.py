"""`make bench` compares itself with the previous full run and keeps the hand-written sections."""

from __future__ import annotations

from pathlib import Path

from tests.bench import history
from tests.bench.history import HAND_WRITTEN, Snapshot, comparison
from tests.bench.measure import Run
from tests.bench.runner import ToolResult, WorkloadResult
from tests.bench.workloads import Workload

W1 = Workload("W1", "one object, download", "download", (("a", 1),), "w1", targets=True)


def _result(tool: str, *seconds: float, error: str | None = None) -> ToolResult:
    runs = [Run(s, 0, "", None, 1024, 1024) for s in seconds]
    return ToolResult(tool, runs, error)


def test_a_run_is_kept_as_medians_and_read_back(tmp_path: Path) -> None:
    results = [
        WorkloadResult(
            W1,
            [
                _result("fsx-stage", 1.0, 0.8, 0.9),
                _result("s5cmd", 1.2, 1.0, 1.1),
                _result("aws CLI", 3.0, error="incomplete"),  # a failed tool has no median
            ],
        )
    ]
    snapshot = Snapshot.of(results, "fsx-stage 0.1.0 (git abc)", "0.1 -> 0.2")
    assert snapshot.medians == {"W1": {"fsx-stage": 0.9, "s5cmd": 1.1}}
    path = history.history_path(tmp_path / "benchmarks.md")
    assert path.name == "benchmarks.json"
    assert history.load(path) is None
    history.save(path, snapshot)
    assert history.load(path) == snapshot


def test_the_comparison_shows_both_runs_seconds_and_ratios() -> None:
    before = Snapshot(
        generated="2026-11-26 09:09 UTC",
        fsx_stage_version="git old",
        load="0.0 -> 1.0",
        medians={"W1": {"fsx-stage": 0.84, "s5cmd": 0.86, "aws CLI": 2.11}},
    )
    after = before.model_copy(
        update={
            "fsx_stage_version": "git new",
            "medians": {"W1": {"fsx-stage": 0.50, "s5cmd": 1.00}, "W9": {"fsx-stage": 2.0}},
        }
    )
    text = "\n".join(comparison(before, after))
    assert "git old" in text and "git new" in text
    assert "| W1 | 0.84 | 0.50 | 1.02x | 2.00x | 2.51x | - |" in text
    assert "| W9 | - | 2.00 | - | - | - | - |" in text  # a workload new in this run
    assert comparison(None, after) == []  # nothing to compare with: no section


def test_the_hand_written_tail_of_the_report_is_kept(tmp_path: Path) -> None:
    report = tmp_path / "benchmarks.md"
    assert history.hand_written(report) == ""
    report.write_text(
        f"# Benchmarks\n\ngenerated\n\n{HAND_WRITTEN}\n\n## Modes\n\nmeasured by hand\n"
    )
    assert history.hand_written(report) == f"{HAND_WRITTEN}\n\n## Modes\n\nmeasured by hand\n"
    report.write_text("# Benchmarks\n\nonly generated text\n")
    assert history.hand_written(report) == ""
