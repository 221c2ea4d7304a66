"""``fsx-stage check --probe``: what staging would find in S3 and on scratch, changing nothing.

Each stage-in entry (an ``in``, a checkpoint's restore) goes through the transfer core as
the hooks send it, as a dry run: the same route, listing, filters and sync comparison, so
the objects and bytes counted are what staging would copy, and the verdict on them is
staging's own (:func:`~fsx_stage.hooks.staging.interpret`, and its "did you mean
``dataset/``?" hint). The file system of each destination (its nearest existing ancestor)
must hold what would be copied there, all entries together, plus a margin. Each flush
entry's bucket is looked up (HeadBucket). No object, file or directory is written.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from fsx_stage.directives import Kind
from fsx_stage.plan import PlanEntry, StagePlan
from fsx_stage.s3url import S3Url
from fsx_stage.transfer import (
    S3Settings,
    TransferEvent,
    TransferOptions,
    TransferSummary,
    TransferUsageError,
)

#: Room needed beyond the bytes to copy: this share of them, and one block per object.
ROOM_MARGIN = 0.05

Missing = Literal["object", "prefix", "bucket"]
StatVfs = Callable[[str], os.statvfs_result]


class Room(BaseModel):
    """Free space where a stage-in entry writes, against what every entry writing to that
    file system needs (``shared_with``: the other directives counted in)."""

    path: str  # the nearest existing ancestor of the destination: what statvfs looked at
    free_bytes: int | None = None  # available to a non-root user
    free_inodes: int | None = None  # None when the file system does not count them
    needed_bytes: int = 0
    needed_inodes: int = 0
    shared_with: tuple[int, ...] = ()
    enough: bool | None = None  # None: could not tell (see error)
    error: str | None = None


class Bucket(BaseModel):
    """A flush entry's bucket, looked up with HeadBucket (nothing is written)."""

    name: str
    reachable: bool | None  # None: could not tell (see error)
    error: str | None = None


class EntryProbe(BaseModel):
    """One row of the probe: a stage-in entry (listed, dry run) or a flush entry (bucket)."""

    index: int  # the directive's 1-based position
    step: Literal["before", "after"]
    kind: Kind
    source: str
    destination: str
    optional: bool = False
    objects: int | None = None  # selected by the filters; None for flush entries
    bytes: int | None = None
    unchanged_objects: int = 0  # already up to date on scratch: not copied again
    to_copy_bytes: int = 0
    missing: Missing | None = None
    problems: list[str] = []  # what would fail the job
    unknown: list[str] = []  # what could not be looked at (S3 unreachable, ...)
    notes: list[str] = []  # worth knowing, fails nothing
    room: Room | None = None
    bucket: Bucket | None = None

    @property
    def url(self) -> str:
        """The S3 side of the entry."""
        return self.source if self.step == "before" else self.destination


class ProbeReport(BaseModel):
    entries: list[EntryProbe]

    @property
    def problems(self) -> list[tuple[int, str]]:
        return [(e.index, p) for e in self.entries for p in e.problems]

    @property
    def unknown(self) -> list[tuple[int, str]]:
        return [(e.index, u) for e in self.entries for u in e.unknown]


class DryRunCounts:
    """Transfer events of a dry run -> what would be copied and what is already there."""

    def __init__(self) -> None:
        self.planned = self.planned_bytes = self.unchanged = self.unchanged_bytes = 0

    def __call__(self, event: TransferEvent) -> None:
        if event.kind == "planned":
            self.planned += 1
            self.planned_bytes += event.bytes
        elif event.kind == "skipped":
            self.unchanged += 1
            self.unchanged_bytes += max(event.total, 0)


def probe_plan(
    plan: StagePlan,
    s3: S3Settings,
    options: TransferOptions,
    *,
    statvfs: StatVfs = os.statvfs,
) -> ProbeReport:
    """Probe every entry of ``plan``: stage-in entries first, then flush entries, as
    ``fsx-stage check`` lists them. ``options`` are the transfer options staging uses
    (their filters are replaced by each entry's)."""
    entries = [probe_stage_in(entry, s3, options) for entry in plan.stage_in_entries()]
    assess_room(entries, statvfs)
    buckets: dict[str, Bucket] = {}
    for entry in plan.entries:
        if entry.kind is not Kind.IN:
            entries.append(probe_flush(entry, s3, buckets))
    return ProbeReport(entries=entries)


def probe_stage_in(entry: PlanEntry, s3: S3Settings, options: TransferOptions) -> EntryProbe:
    """A dry run of the entry's stage-in, judged as staging would judge the real one."""
    from fsx_stage.hooks.planning import entry_state
    from fsx_stage.hooks.staging import interpret, prefix_hint
    from fsx_stage.hooks.state import EntryStatus, Phase

    state = entry_state(entry, Phase.STAGE_IN)
    probe = EntryProbe(
        index=entry.index,
        step="before",
        kind=entry.kind,
        source=entry.source,
        destination=entry.destination,
        optional=entry.optional,
    )
    dry = dataclasses.replace(options, filters=entry.filters, dryrun=True, delete=False)
    counts = DryRunCounts()
    try:
        summary = _dry_run(entry, dry, s3, counts)
    except TransferUsageError as exc:  # what staging would fail the job with, too
        probe.problems.append(str(exc))
        return probe
    probe.objects = counts.planned + counts.unchanged
    probe.bytes = counts.planned_bytes + counts.unchanged_bytes
    probe.unchanged_objects, probe.to_copy_bytes = counts.unchanged, counts.planned_bytes
    judged = TransferSummary(
        objects_done=counts.planned,
        objects_skipped=counts.unchanged,
        bytes_done=counts.planned_bytes,
        failures=summary.failures,
        cancelled=summary.cancelled,
    )
    result = interpret(state, judged)
    not_found = bool(summary.failures) and all(f.category == "not_found" for f in summary.failures)
    if not_found or (result.category == "not_found" and not summary.failures):
        probe.missing = _what_is_missing(entry, summary)
    if result.status is EntryStatus.FAILED:
        message = result.error or "staging would fail"
        if not_found and not state.recursive:
            hint = prefix_hint(entry.source, s3)
            if hint:
                message = f"{message} -- {hint}"
        probe.problems.append(message)
    elif result.status is EntryStatus.PENDING:  # S3 did not answer: nothing was counted
        probe.unknown.append(result.error or "S3 could not be reached")
        probe.objects = probe.bytes = None
    elif result.status is EntryStatus.SKIPPED:
        probe.notes.append(f"{result.error}: staging skips it")
    elif probe.objects == 0:
        if entry.kind is Kind.CHECKPOINT:
            probe.notes.append("nothing to restore yet (a first run starts empty)")
        else:
            probe.missing = "prefix"
            probe.notes.append(f"no objects under {entry.source} (optional): staging skips it")
    if counts.unchanged:
        probe.notes.append(
            f"{counts.unchanged:,} of {probe.objects:,} objects already up to date at "
            f"{entry.destination}: not copied again"
        )
    return probe


def _dry_run(
    entry: PlanEntry, options: TransferOptions, s3: S3Settings, counts: DryRunCounts
) -> TransferSummary:
    """The step staging runs for the entry (`hooks.staging`), changing nothing."""
    from fsx_stage.checkpoints.generations import checkpoint_generation
    from fsx_stage.transfer import transfer

    if entry.kind is Kind.CHECKPOINT and entry.keep is not None:
        return checkpoint_generation(
            entry.source, entry.destination, entry.direction, entry.keep, options, s3, None, counts
        ).summary
    return transfer(
        entry.source,
        entry.destination,
        recursive=entry.is_prefix,
        options=options,
        s3=s3,
        on_event=counts,
    )


def _what_is_missing(entry: PlanEntry, summary: TransferSummary) -> Missing:
    if any("NoSuchBucket" in f.reason for f in summary.failures):
        return "bucket"
    return "prefix" if entry.is_prefix else "object"


# -- room on scratch ----------------------------------------------------------------------


def nearest_existing(path: str) -> Path:
    """``path`` or its closest ancestor that exists (the root at worst)."""
    candidate = Path(path.rstrip("/") or "/")
    while not candidate.exists() and candidate != candidate.parent:
        candidate = candidate.parent
    return candidate


def assess_room(entries: list[EntryProbe], statvfs: StatVfs = os.statvfs) -> None:
    """Set each listed entry's `Room`: the bytes (with `ROOM_MARGIN`) and files that every
    entry writing to the same file system would add, against what is free there."""
    groups: dict[int, list[tuple[EntryProbe, os.statvfs_result]]] = {}
    for entry in entries:
        if entry.objects is None:
            continue
        where = nearest_existing(entry.destination)
        try:
            info, device = statvfs(str(where)), where.stat().st_dev
        except OSError as exc:
            error = f"cannot look at {where}: {exc.strerror}"
            entry.room = Room(path=str(where), error=error)
            entry.unknown.append(f"room on scratch unknown: {error}")
            continue
        entry.room = Room(path=str(where))
        groups.setdefault(device, []).append((entry, info))
    for members in groups.values():
        info = members[0][1]
        block = info.f_frsize or info.f_bsize or 4096
        need_bytes = sum(_needed_bytes(e, block) for e, _ in members)
        need_inodes = sum(e.objects - e.unchanged_objects for e, _ in members if e.objects)
        free_bytes = info.f_bavail * (info.f_frsize or info.f_bsize)
        free_inodes = info.f_favail if info.f_files else None
        enough = free_bytes >= need_bytes and (free_inodes is None or free_inodes >= need_inodes)
        indexes = [e.index for e, _ in members]
        for entry, _ in members:
            assert entry.room is not None
            entry.room = entry.room.model_copy(
                update={
                    "free_bytes": free_bytes,
                    "free_inodes": free_inodes,
                    "needed_bytes": need_bytes,
                    "needed_inodes": need_inodes,
                    "shared_with": tuple(i for i in indexes if i != entry.index),
                    "enough": enough,
                }
            )
            if not enough:
                entry.problems.append(_no_room_text(entry.room, free_inodes, need_inodes))


def _needed_bytes(entry: EntryProbe, block: int) -> int:
    copied = (entry.objects or 0) - entry.unchanged_objects
    return entry.to_copy_bytes + math.ceil(entry.to_copy_bytes * ROOM_MARGIN) + copied * block


def _no_room_text(room: Room, free_inodes: int | None, need_inodes: int) -> str:
    from fsx_stage.cli.transfer_summary import human_bytes

    together = (
        f" (with directive{'s' if len(room.shared_with) > 1 else ''} "
        f"{', '.join(map(str, room.shared_with))} on the same file system)"
        if room.shared_with
        else ""
    )
    if free_inodes is not None and free_inodes < need_inodes:
        return (
            f"not enough room on scratch at {room.path}: {free_inodes:,} files free, "
            f"{need_inodes:,} needed{together}"
        )
    return (
        f"not enough room on scratch at {room.path}: {human_bytes(room.free_bytes or 0)} free, "
        f"{human_bytes(room.needed_bytes)} needed{together}"
    )


# -- flush entries: the bucket ------------------------------------------------------------


def probe_flush(entry: PlanEntry, s3: S3Settings, seen: dict[str, Bucket]) -> EntryProbe:
    """The bucket a flush entry writes to: HeadBucket, once per bucket."""
    name = S3Url.parse(entry.destination).bucket
    if name not in seen:
        seen[name] = head_bucket(name, s3)
    bucket = seen[name]
    probe = EntryProbe(
        index=entry.index,
        step="after",
        kind=entry.kind,
        source=entry.source,
        destination=entry.destination,
        bucket=bucket,
    )
    if bucket.reachable is False:
        probe.missing = "bucket"
        probe.problems.append(f"bucket {name} does not exist: the flush would fail")
    elif bucket.reachable is None and bucket.error and "denied" in bucket.error:
        probe.notes.append(
            f"cannot tell whether you may write to {entry.destination} ({bucket.error}); "
            "the flush needs s3:PutObject there"
        )
    elif bucket.reachable is None:
        probe.unknown.append(f"bucket {name}: {bucket.error}")
    return probe


def head_bucket(name: str, s3: S3Settings) -> Bucket:
    """Whether the bucket exists and answers (HeadBucket needs only s3:ListBucket)."""
    import uvloop

    from fsx_stage.transfer.errors import classify
    from fsx_stage.transfer.s3.botocore_client import create_client

    async def head() -> None:
        async with create_client(s3, 1) as client:
            await client.head_bucket(Bucket=name)

    try:
        uvloop.run(head())
    except Exception as exc:
        category, reason = classify(exc)
        if category == "not_found":
            return Bucket(name=name, reachable=False, error=reason)
        if category == "access_denied":
            return Bucket(name=name, reachable=None, error=f"HeadBucket access denied: {reason}")
        return Bucket(name=name, reachable=None, error=reason)
    return Bucket(name=name, reachable=True)
