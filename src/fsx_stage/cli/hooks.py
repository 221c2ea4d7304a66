"""``fsx-stage prolog|epilog|flush --pending|status JOBID``: the Slurm side.

``prolog`` and ``epilog`` are run by slurmd through ``plugin/prolog`` and ``plugin/epilog``
(as root, with the job in the environment). ``flush --pending`` retries kept flushes (an
admin, cron, or ``slurm-conf-examples/fsx-stage-flush.timer``). ``status`` shows a job's
staging state to its user or an admin.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from typing import Any, NamedTuple

from fsx_stage.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from fsx_stage.clock import SYSTEM_CLOCK, Clock
from fsx_stage.config import ConfigError, config_path, load_config
from fsx_stage.hooks.state import EntryStatus, HookStatus, JobState, StateError, StateStore

EXIT_PENDING = 3


def register(subparsers: Any) -> None:
    prolog = subparsers.add_parser(
        "prolog", help="Slurm Prolog: stage a job's inputs in (run by slurmd as root)"
    )
    prolog.set_defaults(handler=_prolog)
    epilog = subparsers.add_parser(
        "epilog", help="Slurm Epilog: flush a job's results out (run by slurmd as root)"
    )
    epilog.set_defaults(handler=_epilog)
    flush = subparsers.add_parser(
        "flush", help="retry the flushes S3 did not accept at the end of their job (root)"
    )
    flush.add_argument(
        "--pending", action="store_true", required=True, help="retry the pending flush queue"
    )
    flush.add_argument("--job", type=int, action="append", metavar="JOBID", help="only this job")
    flush.add_argument(
        "--keep-days",
        type=float,
        default=30.0,
        metavar="DAYS",
        help="remove job state untouched for DAYS (never with a pending flush); default 30",
    )
    flush.set_defaults(handler=_flush)
    status = subparsers.add_parser(
        "status",
        help="show what the hooks did for a job",
        epilog="exit status: 0 nothing failed or pending, 1 an entry failed or the job was "
        "refused (or no state to show), 3 held or pending (may still complete)",
    )
    status.add_argument(
        "job", type=job_ref, metavar="JOBID", help="a job id, or ARRAYJOBID_TASKID (e.g. 15_2)"
    )
    status.add_argument("--json", action="store_true", help="print the state as JSON")
    status.set_defaults(handler=_status)


def _prolog(args: argparse.Namespace) -> int:
    from fsx_stage.hooks import prolog

    return prolog.run(os.environ)


def _epilog(args: argparse.Namespace) -> int:
    from fsx_stage.hooks import epilog

    return epilog.run(os.environ)


def _flush(args: argparse.Namespace) -> int:
    from fsx_stage.hooks import flush

    if os.geteuid() != 0:
        print("fsx-stage flush: must run as root (it acts as each job's user)", file=sys.stderr)
        return EXIT_USAGE
    return flush.run(os.environ, args.job, keep_days=args.keep_days)


def _status(args: argparse.Namespace) -> int:
    try:
        config = load_config(config_path())
    except ConfigError as exc:
        print(f"fsx-stage status: {exc}", file=sys.stderr)
        return EXIT_FAILED
    store = StateStore(config.state_dir)
    ref: JobRef = args.job
    try:
        job_id = resolve_job_ref(ref, store)
        state = None if job_id is None else store.load(job_id)
    except PermissionError:
        print(f"fsx-stage status: job {ref}: not yours to see", file=sys.stderr)
        return EXIT_FAILED
    except StateError as exc:
        print(f"fsx-stage status: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if state is None:
        print(f"fsx-stage status: no staging state for job {ref}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(json.dumps(state.model_dump(mode="json"), indent=2))
        return status_exit(state)
    print(render_status(state))
    if state.mode == "burst_buffer":
        from fsx_stage.burstbuffer.stuck import release_hint

        hint = release_hint(state)
        if hint is not None:
            print(hint)
    return status_exit(state)


def status_exit(state: JobState) -> int:
    """0: nothing failed or is pending; 1 (`EXIT_FAILED`): an entry failed or the job was
    refused; 3 (`EXIT_PENDING`): held, or data still waiting for S3 (may complete later)."""
    statuses = {e.status for e in state.entries}
    if EntryStatus.FAILED in statuses:
        return EXIT_FAILED
    if EntryStatus.PENDING in statuses or HookStatus.NODE_FAULT in (
        state.prolog.status,
        state.epilog.status,
    ):
        return EXIT_PENDING
    if state.prolog.status is HookStatus.FAILED_JOB:  # refused before any transfer
        return EXIT_FAILED
    return EXIT_OK


class JobRef(NamedTuple):
    """A job as users name it: ``JOBID``, or ``ARRAYJOBID_TASKID`` for an array task."""

    job_id: int
    array_task_id: int | None = None

    def __str__(self) -> str:
        task = self.array_task_id
        return str(self.job_id) if task is None else f"{self.job_id}_{task}"


_JOB_REF_RE = re.compile(r"([0-9]+)(?:_([0-9]+))?")


def job_ref(text: str) -> JobRef:
    """Parse ``JOBID`` or ``A_T`` (argparse type). Python's ``int()`` would read ``15_2``
    as 152, so only plain digits are accepted on each side of the one ``_``."""
    match = _JOB_REF_RE.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a job id: expected JOBID (e.g. 152) or ARRAYJOBID_TASKID (e.g. 15_2)"
        )
    task = match.group(2)
    return JobRef(int(match.group(1)), None if task is None else int(task))


def resolve_job_ref(ref: JobRef, store: StateStore) -> int | None:
    """The job id ``ref`` names: itself, or the task's id from the hooks' array index,
    else from ``scontrol show job A_T`` while Slurm still knows the job."""
    if ref.array_task_id is None:
        return ref.job_id
    known = store.array_task_job_id(ref.job_id, ref.array_task_id)
    if known is not None:
        return known
    from fsx_stage.hooks.slurmctl import SCONTROL, SlurmCommandError, run_command

    try:
        proc = run_command(
            [SCONTROL, "show", "job", "-o", str(ref)], None, SlurmCommandError, "scontrol"
        )
    except SlurmCommandError:
        return None
    match = re.match(r"JobId=([0-9]+) ", proc.stdout) if proc.returncode == 0 else None
    return int(match.group(1)) if match else None


#: What a hook's status means, in a user's words.
HOOK_WORDS = {
    HookStatus.NOT_RUN: "not run yet",
    HookStatus.RUNNING: "running",
    HookStatus.DONE: "done",
    HookStatus.SKIPPED: "skipped",
    HookStatus.FAILED_JOB: "stopped the job",
    HookStatus.NODE_FAULT: "failed on the node (the node is drained, the job requeued)",
}


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(ts)) if ts else "-"


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def render_status(state: JobState, clock: Clock = SYSTEM_CLOCK) -> str:
    """The human view of a job's state: hooks, then one block per entry."""
    name = f"job {state.job_id}"
    if state.array_job_id is not None and state.array_task_id is not None:
        name += f" (array task {state.array_job_id}_{state.array_task_id})"
    lines = [f"{name}  user {state.user}  restarts {state.restart_count}"]
    if state.job_succeeded is not None:
        lines.append(f"job result: {'succeeded' if state.job_succeeded else 'did not succeed'}")
    for name, run in (("prolog", state.prolog), ("epilog", state.epilog)):
        line = f"{name}: {HOOK_WORDS[run.status]}"
        if run.host:
            line += f" on {run.host}"
        if run.started_at:
            line += f" at {_when(run.started_at)}"
        if run.started_at and run.finished_at:
            line += f" ({run.finished_at - run.started_at:.1f} s)"
        lines.append(line)
        if run.message:
            lines.append(f"  {run.message}")
    if state.failure_reason:
        lines.append(f"reason: {state.failure_reason}")
    if state.entries:
        lines.append("")
        header = f"{'#':>2}  {'PHASE':<8}  {'KIND':<10}  {'STATUS':<8}  {'BYTES':>10}  {'TIME':>7}"
        lines.append(header)
    for entry in state.entries:
        seconds = f"{entry.duration_s:.1f}s" if entry.duration_s is not None else "-"
        lines.append(
            f"{entry.index:>2}  {entry.phase.value:<8}  {entry.kind:<10}  "
            f"{entry.status.value:<8}  {_size(entry.bytes):>10}  {seconds:>7}"
        )
        lines.append(f"    {entry.source} -> {entry.destination}")
        if entry.status is EntryStatus.RUNNING and entry.started_at:
            elapsed = max(clock.now() - entry.started_at, 1e-3)
            lines.append(
                f"    so far: {entry.objects} objects, {_size(entry.bytes)} in {elapsed:.0f} s"
                f" ({_size(int(entry.bytes / elapsed))}/s)"
            )
        if entry.error:
            label = "skipped" if entry.status is EntryStatus.SKIPPED else "error"
            lines.append(f"    {label}: {entry.error}")
    lines += _generation_lines(state)
    return "\n".join(lines)


def _generation_lines(state: JobState) -> list[str]:
    """One line per checkpoint generation the job published or restored, oldest first."""
    if not state.generations:
        return []
    lines = [
        "",
        "checkpoint generations:",
        f"{'#':>2}  {'GEN':>4}  {'TIME':<19}  {'FILES':>6}  {'BYTES':>10}  {'STATE':<9}  BY",
    ]
    for g in state.generations:
        number = str(g.generation) if g.generation is not None else "-"
        lines.append(
            f"{g.index:>2}  {number:>4}  {_when(g.created_at):<19}  {g.files:>6}  "
            f"{_size(g.bytes):>10}  {g.state:<9}  {g.by}"
        )
        if g.error:
            lines.append(f"    error: {g.error}")
    return lines
