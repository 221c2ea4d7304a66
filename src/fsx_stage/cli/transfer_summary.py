"""The human end-of-run report of ``fsx-stage cp``/``sync`` on stderr (not in ``--json`` mode)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from fsx_stage.direction import Direction
from fsx_stage.s3url import is_s3_url

if TYPE_CHECKING:
    from fsx_stage.transfer import TransferFailure, TransferSummary

#: Up to this many failures are listed one per line; more are summarised by reason.
LISTED_FAILURES = 10
#: Keys shown per reason when failures are summarised.
KEYS_PER_REASON = 5


def human_bytes(amount: float) -> str:
    """``125.0 MiB``; binary units, bytes as an integer."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if amount < 1024 or unit == "TiB":
            return f"{int(amount)} B" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    raise AssertionError("unreachable")


_PAST = {Direction.DOWNLOAD: "downloaded", Direction.UPLOAD: "uploaded"}


def totals_line(summary: TransferSummary, direction: Direction) -> str:
    """``downloaded 2,000 objects, 125.0 MiB in 0.8 s (156 MiB/s); 3 unchanged; 2 failed``."""
    elapsed = max(summary.elapsed_s, 1e-3)
    rate = human_bytes(summary.bytes_done / elapsed)
    count = summary.objects_done
    line = (
        f"{_PAST[direction]} {count:,} object{'s' * (count != 1)}, "
        f"{human_bytes(summary.bytes_done)} in {summary.elapsed_s:.1f} s ({rate}/s)"
    )
    return line + _tail(summary, deleted="deleted")


def dryrun_line(summary: TransferSummary, direction: Direction, planned: Sequence[int]) -> str:
    """``(dryrun) would download 3 objects, 1.0 KiB; 2 unchanged``."""
    count = len(planned)
    line = (
        f"(dryrun) would {direction} {count:,} "
        f"object{'s' * (count != 1)}, {human_bytes(sum(planned))}"
    )
    return line + _tail(summary, deleted="to be deleted")


def _tail(summary: TransferSummary, deleted: str) -> str:
    """``; 2 unchanged; 1 deleted; 3 failed``: the counts that are not zero."""
    parts = [
        (summary.objects_skipped, "unchanged"),
        (summary.objects_deleted, deleted),
        (len(summary.failures), "failed"),
    ]
    return "".join(f"; {count:,} {label}" for count, label in parts if count)


def failure_lines(failures: Sequence[TransferFailure]) -> list[str]:
    """One line per failure when there are few; else counts by category, the first keys."""
    if len(failures) <= LISTED_FAILURES:
        return [f"failed: {f.key}: {f.reason} [{f.category}]" for f in failures]
    by_category: dict[str, list[TransferFailure]] = {}
    for failure in failures:
        by_category.setdefault(failure.category, []).append(failure)
    lines = [f"{len(failures):,} objects failed:"]
    for category, group in sorted(by_category.items(), key=lambda item: -len(item[1])):
        keys = ", ".join(f.key for f in group[:KEYS_PER_REASON])
        more = ", ..." if len(group) > KEYS_PER_REASON else ""
        lines.append(f"  {len(group):,} {category} (e.g. {group[0].reason}): {keys}{more}")
    lines.append("all failures are in --json output")
    return lines


def empty_source(sources: Sequence[str]) -> str:
    """``no objects under s3://b/p/`` / ``no files under DIR``."""
    source = sources[0]
    if is_s3_url(source):
        return f"no objects under {source if source.endswith('/') else source + '/'}"
    return f"no files under {source}"
