"""Before and after: each full run's medians are kept beside the report (docs/benchmarks.json),
and the next report compares itself with them.

Only full runs are recorded (a quick run's tiny sizes compare with nothing). The report's
sections written by hand (below `HAND_WRITTEN`) are kept when the report is generated again.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel
from tests.bench.runner import WorkloadResult

FSX = "fsx-stage"
PEERS = ("s5cmd", "aws CLI")
HAND_WRITTEN = "<!-- Sections below are written by hand: `make bench` keeps them. -->"


class Snapshot(BaseModel):
    """The medians (seconds) of one full run, per workload and tool."""

    generated: str  # "YYYY-MM-DD HH:MM UTC"
    fsx_stage_version: str
    load: str  # load averages at the start and the end
    medians: dict[str, dict[str, float]]  # workload id -> tool -> median seconds

    @classmethod
    def of(cls, results: list[WorkloadResult], version: str, load: str) -> Snapshot:
        return cls(
            generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            fsx_stage_version=version,
            load=load,
            medians={
                wr.workload.id: {r.tool: round(r.median_s, 4) for r in wr.results if r.ok}
                for wr in results
            },
        )

    def ratio(self, workload: str, peer: str) -> float | None:
        """fsx-stage's speed-up over ``peer`` (peer time / fsx-stage time)."""
        times = self.medians.get(workload, {})
        if FSX not in times or peer not in times or times[FSX] <= 0:
            return None
        return times[peer] / times[FSX]


def history_path(report: Path) -> Path:
    return report.with_suffix(".json")


def load(path: Path) -> Snapshot | None:
    try:
        return Snapshot.model_validate_json(path.read_text())
    except FileNotFoundError:
        return None


def save(path: Path, snapshot: Snapshot) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(snapshot.model_dump(), indent=1) + "\n")
    temporary.replace(path)


def hand_written(report: Path) -> str:
    """The report's hand-written tail (from the `HAND_WRITTEN` marker on), or ""."""
    try:
        text = report.read_text()
    except FileNotFoundError:
        return ""
    at = text.find(HAND_WRITTEN)
    return text[at:] if at >= 0 else ""


def comparison(before: Snapshot | None, after: Snapshot) -> list[str]:
    """The report's "Before and after" section: fsx-stage's medians and ratios, both runs."""
    if before is None:
        return []
    lines = [
        "## Before and after",
        "",
        f"This run ({after.fsx_stage_version}, {after.generated}; load {after.load}) against "
        f"the previous full run ({before.fsx_stage_version}, {before.generated}; load "
        f"{before.load}), kept in docs/benchmarks.json. The ratios are measured within each "
        "run, so they compare across runs better than the seconds do on a shared machine.",
        "",
        "| workload | fsx-stage s before | after | "
        + " | ".join(f"vs {p} before | after" for p in PEERS)
        + " |",
        "|---|---:|---:|" + "---:|---:|" * len(PEERS),
    ]
    for workload, times in after.medians.items():
        old = before.medians.get(workload, {}).get(FSX)
        cells = [workload, _seconds(old), _seconds(times.get(FSX))]
        for peer in PEERS:
            cells += [_times(before.ratio(workload, peer)), _times(after.ratio(workload, peer))]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"
