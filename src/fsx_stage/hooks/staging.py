"""Running one plan entry through the transfer core, as the job's user.

The parent (root) keeps the state; the privilege-dropped child moves the data and reports
a `TransferSummary` back. The result is turned into an entry status and, for failures,
into the `Fault` that decides what the hook does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fsx_stage.checkpoints.generations import checkpoint_generation
from fsx_stage.direction import Direction
from fsx_stage.directives import Kind
from fsx_stage.hooks.outcome import Fault, classify_failure, worst
from fsx_stage.hooks.privileges import (
    UserCredentials,
    WorkerCrashed,
    WorkerError,
    WorkerTimeout,
    run_as_user,
    send_progress,
)
from fsx_stage.hooks.state import EntryState, EntryStatus
from fsx_stage.plan import DEFAULT_KEEP
from fsx_stage.transfer import (
    S3Settings,
    TransferEvent,
    TransferFailure,
    TransferOptions,
    TransferSummary,
    TransferUsageError,
    transfer,
)

# Seconds kept back from a time budget so the worker can stop cleanly and report.
STOP_MARGIN_S = 5.0
# How often a running transfer tells the hook its counts (the hook saves them for `status`).
LIVE_EVERY_S = 1.0
MAX_LISTED_FAILURES = 3
KEPT_FAILURES = 20
SOURCE_MISSING = "source_missing"  # a local SRC that does not exist (or is not a directory)
_NODE_ERRORS = frozenset({"InstallationError", "ImportError", "ModuleNotFoundError"})


@dataclass(frozen=True)
class _Counts:
    bytes: int
    objects: int
    skipped: int


@dataclass(frozen=True)
class EntryResult:
    status: EntryStatus
    fault: Fault | None = None
    error: str | None = None
    category: str | None = None
    bytes: int = 0
    objects: int = 0
    skipped: int = 0
    generation: dict[str, Any] | None = None  # the checkpoint generation published/restored


class InstallationError(Exception):
    """The job user cannot read the Python installation the hooks run from."""


def check_installation() -> None:
    """Run as the user: lazily imported modules must be readable after the privilege drop."""
    for path in (Path(os.__file__).parent, Path(__file__).parents[1]):
        if not os.access(path, os.R_OK | os.X_OK):
            raise InstallationError(
                f"{path} is not readable by the job's user: install fsx-stage with a "
                "Python that every user can read (e.g. /usr/bin/python3)"
            )


def isolate_aws_settings() -> None:
    """Keep the user's ``~/.aws`` out of the worker (it runs with the user's HOME).

    Everything the worker needs comes in `S3Settings`, resolved as root; a user's config
    file could otherwise redirect the endpoint or the CA bundle that root's credentials
    are used with.
    """
    os.environ["AWS_CONFIG_FILE"] = os.devnull
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        os.environ.pop(name, None)


class LiveCounts:
    """Transfer events -> bytes and objects moved so far, sent to the hook (the state
    file's owner) at most every `LIVE_EVERY_S` seconds."""

    def __init__(self) -> None:
        self.done_bytes = 0
        self.objects = 0
        self.partial: dict[str, int] = {}
        self.sent = time.monotonic()

    def __call__(self, event: TransferEvent) -> None:
        if event.kind == "bytes":
            self.partial[event.key] = self.partial.get(event.key, 0) + event.bytes
        elif event.kind == "done":
            self.partial.pop(event.key, None)
            self.done_bytes += event.bytes
            self.objects += 1
        elif event.kind in ("skipped", "failed"):
            self.partial.pop(event.key, None)
        now = time.monotonic()
        if now - self.sent >= LIVE_EVERY_S:
            self.sent = now
            moved = self.done_bytes + sum(self.partial.values())
            send_progress({"bytes": moved, "objects": self.objects})


def _transfer_in_child(
    src: str,
    dst: str,
    direction: Direction,
    recursive: bool,
    options: TransferOptions,
    s3: S3Settings,
    budget_s: float | None,
    keep: int | None = None,
) -> dict[str, Any]:
    """Runs as the user. Stops itself (cancel) when ``budget_s`` runs out. ``keep``: a
    checkpoint, kept as generations (publish, or restore from S3)."""
    check_installation()
    isolate_aws_settings()
    upload = direction is Direction.UPLOAD
    if upload and not os.path.lexists(src):
        # Checked here, as the user: a path the user cannot see does not exist for them.
        return {"usage_error": f"{src}: no such file or directory"}
    local = Path(src)
    if upload and not recursive and local.is_dir() and not local.is_symlink():
        # `out,/fsx/u/results,s3://b/r/` (planned as DST `s3://b/r/results`) with results a
        # directory: its `/` was forgotten. It is copied as itself, to the prefix DST/.
        recursive = True
    if threading.active_count() > 1:
        # The core would start its worker processes by exec, and an exec'd process is
        # dumpable again: the user could read root's credentials from its memory. Forked
        # workers (one thread here) or none at all keep them out of reach.
        options = dataclasses.replace(options, workers=1)
    cancel = threading.Event()
    if budget_s is not None:
        signal.signal(signal.SIGALRM, lambda _sig, _frame: cancel.set())
        signal.setitimer(signal.ITIMER_REAL, max(budget_s, 0.1))
    generation: dict[str, Any] | None = None
    try:
        if keep is None:
            summary = transfer(
                src,
                dst,
                recursive=recursive,
                options=options,
                s3=s3,
                cancel=cancel,
                on_event=LiveCounts(),
            )
        else:
            result = checkpoint_generation(src, dst, direction, keep, options, s3, cancel)
            summary, generation = result.summary, result.record()
    except TransferUsageError as exc:
        return {"usage_error": str(exc)}
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    count = len(summary.failures)
    compact = dataclasses.replace(summary, failures=representative_failures(summary))
    reply: dict[str, Any] = {"summary": compact.to_json(), "failure_count": count}
    if generation is not None:
        reply["generation"] = generation
    missing = summary.failures and all(f.category == "not_found" for f in summary.failures)
    if missing and not upload and not recursive and not src.endswith("/"):
        reply["hint"] = prefix_hint(src, s3)
    return reply


def prefix_hint(src: str, s3: S3Settings) -> str | None:
    """``s3://b/dataset`` is not an object: "did you mean ``dataset/``?" when that prefix
    has objects (one list call, max-keys=1, made only once the object was not found)."""
    import uvloop

    from fsx_stage.s3url import S3Url
    from fsx_stage.transfer.s3.botocore_client import create_client

    url = S3Url.parse(src)

    async def probe() -> bool:
        async with create_client(s3, 1) as client:
            reply = await client.list_objects_v2(Bucket=url.bucket, Prefix=url.key + "/", MaxKeys=1)
        return bool(reply.get("Contents"))

    try:
        found = uvloop.run(probe())
    except Exception:  # only a hint: the failure stands without it
        return None
    return f"did you mean {src}/ (a prefix: everything under it)?" if found else None


def representative_failures(summary: TransferSummary) -> list[TransferFailure]:
    """The first failures, plus one of every other kind: enough to classify and explain
    a transfer without sending a million failures through the pipe."""
    kept = list(summary.failures[:KEPT_FAILURES])
    seen = {(f.category, classify_failure(f.category, f.reason)) for f in kept}
    for failure in summary.failures[KEPT_FAILURES:]:
        kind = (failure.category, classify_failure(failure.category, failure.reason))
        if kind not in seen:
            seen.add(kind)
            kept.append(failure)
    return kept


def _failure_text(summary: TransferSummary, count: int) -> str:
    shown = "; ".join(f"{f.key}: {f.reason}" for f in summary.failures[:MAX_LISTED_FAILURES])
    more = count - MAX_LISTED_FAILURES
    head = f"{count} object{'s' if count != 1 else ''} failed: "
    return head + shown + (f" (and {more} more)" if more > 0 else "")


def full_scratch_text(destination: str, reasons: list[str]) -> str:
    """What a user reads when scratch ran out of room (or the user's quota did)."""
    quota = os.strerror(errno.EDQUOT)
    if any(quota in reason for reason in reasons):
        return f"scratch {destination}: your disk quota is exceeded ({quota.lower()})"
    return f"scratch {destination} is full (no space left on device)"


def interpret(
    entry: EntryState, summary: TransferSummary, failure_count: int | None = None
) -> EntryResult:
    """An entry's status from the transfer core's summary (``failures`` may be a sample
    of ``failure_count``)."""
    counts = _Counts(summary.bytes_done, summary.objects_done, summary.objects_skipped)
    if summary.failures:
        faults = [classify_failure(f.category, f.reason) for f in summary.failures]
        if entry.optional and all(f.category == "not_found" for f in summary.failures):
            return EntryResult(
                EntryStatus.SKIPPED,
                error="source not found (optional)",
                bytes=counts.bytes,
                objects=counts.objects,
                skipped=counts.skipped,
            )
        fault = worst(faults)
        categories = {f.category for f in summary.failures}
        error = _failure_text(summary, failure_count or len(summary.failures))
        if fault is Fault.SCRATCH_FULL:
            error = full_scratch_text(entry.destination, [f.reason for f in summary.failures])
        return EntryResult(
            EntryStatus.FAILED if fault is Fault.USER else EntryStatus.PENDING,
            fault=fault,
            error=error,
            category=",".join(sorted(categories)),
            bytes=counts.bytes,
            objects=counts.objects,
            skipped=counts.skipped,
        )
    if summary.cancelled:
        return EntryResult(
            EntryStatus.PENDING,
            fault=Fault.S3,
            error="time budget exhausted before the transfer finished",
            category="timeout",
            bytes=counts.bytes,
            objects=counts.objects,
            skipped=counts.skipped,
        )
    nothing_listed = summary.objects_done + summary.objects_skipped == 0
    if nothing_listed and entry.recursive and entry.is_download and not entry.optional:
        return EntryResult(
            EntryStatus.FAILED,
            fault=Fault.USER,
            error=f"no objects under {entry.source}",
            category="not_found",
        )
    return EntryResult(
        EntryStatus.DONE, bytes=counts.bytes, objects=counts.objects, skipped=counts.skipped
    )


def run_entry(
    creds: UserCredentials,
    entry: EntryState,
    options: TransferOptions,
    s3: S3Settings,
    budget_s: float | None,
    *,
    umask: int = 0o077,
    on_progress: Callable[[dict[str, int]], None] | None = None,
) -> EntryResult:
    """Transfer ``entry`` as ``creds`` within ``budget_s`` seconds (None: no limit);
    what it creates gets ``umask``; ``on_progress`` gets ``{"bytes", "objects"}`` so far."""
    if budget_s is not None and budget_s <= STOP_MARGIN_S:
        return EntryResult(
            EntryStatus.PENDING,
            fault=Fault.S3,
            error="time budget exhausted before the transfer started",
            category="timeout",
        )
    soft = None if budget_s is None else budget_s - STOP_MARGIN_S
    try:
        reply = run_as_user(
            creds,
            _transfer_in_child,
            entry.source,
            entry.destination,
            entry.direction,
            entry.recursive,
            options,
            s3,
            soft,
            (entry.keep or DEFAULT_KEEP) if entry.kind is Kind.CHECKPOINT else None,
            timeout=budget_s,
            umask=umask,
            on_progress=on_progress,
        )
    except WorkerTimeout as exc:
        return EntryResult(
            EntryStatus.PENDING, fault=Fault.S3, error=exc.message, category="timeout"
        )
    except WorkerCrashed as exc:
        return EntryResult(EntryStatus.PENDING, fault=Fault.S3, error=exc.message, category="other")
    except WorkerError as exc:
        if exc.type_name in _NODE_ERRORS:
            return EntryResult(
                EntryStatus.PENDING, fault=Fault.NODE, error=exc.message, category="node"
            )
        fault = classify_failure("local_io", exc.message, exc.errno)
        error = f"{exc.type_name}: {exc.message}"
        if fault is Fault.SCRATCH_FULL:
            error = full_scratch_text(entry.destination, [exc.message])
        return EntryResult(
            EntryStatus.FAILED if fault is Fault.USER else EntryStatus.PENDING,
            fault=fault,
            error=error,
            category="local_io",
        )
    if "usage_error" in reply:
        message = str(reply["usage_error"])
        if entry.optional:
            return EntryResult(EntryStatus.SKIPPED, error=f"{message} (optional)")
        return EntryResult(
            EntryStatus.FAILED, fault=Fault.USER, error=message, category=SOURCE_MISSING
        )
    summary = TransferSummary.from_json(reply["summary"])
    result = interpret(entry, summary, int(reply.get("failure_count", len(summary.failures))))
    if reply.get("hint") and result.error and result.status is EntryStatus.FAILED:
        result = dataclasses.replace(result, error=f"{result.error} -- {reply['hint']}")
    if reply.get("generation"):
        result = dataclasses.replace(result, generation=reply["generation"])
    return result


# -- small filesystem actions done as the user -------------------------------------------


def _append_text(path: str, text: str) -> None:
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, 0o644)
    try:
        data = text.encode("utf-8", "replace")
        while data:
            data = data[os.write(fd, data) :]
    finally:
        os.close(fd)


def tell_user(creds: UserCredentials, paths: list[str], text: str) -> list[str]:
    """Append ``text`` to the job's output/error files, as the user; the ones written."""
    written = []
    for path in dict.fromkeys(p for p in paths if p and p.startswith("/")):
        try:
            run_as_user(creds, _append_text, path, text, timeout=30, umask=0o022)
        except WorkerError:
            continue
        written.append(path)
    return written


def _remove_paths(paths: list[str]) -> list[str]:
    problems = []
    for path in paths:
        try:
            target = Path(path)
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            else:
                with contextlib.suppress(FileNotFoundError):
                    target.unlink()
        except OSError as exc:
            problems.append(f"{path}: {exc.strerror}")
    return problems


def remove_as_user(creds: UserCredentials, paths: list[str]) -> list[str]:
    """Remove scratch paths as the user; returns the problems (empty when all went)."""
    try:
        problems = run_as_user(creds, _remove_paths, paths, timeout=600)
    except WorkerError as exc:
        return [exc.message]
    return [str(p) for p in problems]
