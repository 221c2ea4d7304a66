"""``fsx-stage check SCRIPT``: validate a batch script's directives before submitting it.

Reads the ``#SBATCH --fsx-stage`` lines as sbatch does, parses them, checks them
against the site policy when a site config exists, and prints the plan. Patterns
are expanded for a sample job: the invoking (or ``--user``) user, job id
``SAMPLE_JOB_ID`` unless ``--job-id`` is given (the real id is only known at
submission), and the job name, account and array from ``--job-name``/``--account``
or the script's own ``#SBATCH`` options (the job name defaults to the script's file
name, as with sbatch).
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fsx_stage.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, check_probe
from fsx_stage.config import ConfigError, SiteConfig, config_path, load_optional_config
from fsx_stage.directives import Directive, DirectiveError, Kind, parse_directive
from fsx_stage.durations import format_duration
from fsx_stage.job import JobIdentity
from fsx_stage.plan import PlanEntry, PlanError, StagePlan, build_plan
from fsx_stage.sbatch_script import ScriptOptions, first_array_index, read_options

SAMPLE_JOB_ID = 1234567


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "check",
        help="validate a batch script's --fsx-stage directives and show the plan",
        description=(
            "Validate the #SBATCH --fsx-stage lines of a batch script (and the site "
            "policy, when a site config exists) and show what will be staged."
        ),
    )
    parser.add_argument("script", type=Path, metavar="SCRIPT")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument(
        "--probe",
        action="store_true",
        help="also look at S3 and the scratch (reads only): objects, bytes, what is missing, "
        "whether the scratch has room, whether each flush's bucket exists",
    )
    parser.add_argument("--user", help="check for this user (default: you)")
    parser.add_argument(
        "--job-id",
        type=int,
        default=None,
        help=f"job id for %%j and %%A (default: the sample id {SAMPLE_JOB_ID})",
    )
    parser.add_argument("--job-name", help="job name for %%x (default: from the script)")
    parser.add_argument("--account", help="Slurm account (default: from the script)")
    parser.add_argument(
        "--array-task-id",
        type=int,
        default=None,
        help="check as this array task (default: the first index of #SBATCH --array)",
    )
    parser.set_defaults(handler=run)


@dataclass(frozen=True)
class _Problem:
    line: int
    message: str


def run(args: argparse.Namespace) -> int:
    script: Path = args.script
    try:
        text = script.read_bytes().decode("utf-8", "surrogateescape")
    except OSError as exc:
        print(f"fsx-stage check: cannot read {script}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    try:
        config = load_optional_config()
    except ConfigError as exc:
        print(f"fsx-stage check: site configuration: {exc}", file=sys.stderr)
        return EXIT_FAILED
    options = read_options(text)
    for warning in options.warnings:
        print(f"{script}:{warning.line}: warning: {warning.message}", file=sys.stderr)
    try:
        job = _job(args, options, script)
    except LookupError as exc:
        print(f"fsx-stage check: {exc}", file=sys.stderr)
        return EXIT_USAGE

    lines = text.split("\n")
    problems = [_Problem(e.line, e.message) for e in options.errors]
    parsed: list[tuple[int, Directive]] = []
    for argument in options.directives:
        try:
            parsed.append((argument.line, parse_directive(argument.text)))
        except DirectiveError as exc:
            line_text = lines[argument.line - 1]
            problems.append(_Problem(argument.line, _with_hint(str(exc), argument.text, line_text)))
    plan: StagePlan | None = None
    try:
        plan = build_plan([d for _, d in parsed], job, config)
    except PlanError as exc:
        problems.extend(_Problem(parsed[p.index - 1][0], p.message) for p in exc.problems)
    problems.sort(key=lambda p: p.line)
    lines_of = [line for line, _ in parsed]
    probed = None
    if args.probe and plan is not None and not problems:
        probed = check_probe.probe(plan, config)

    if args.json:
        report = _json_report(script, job, config, options, plan, problems)
        if probed is not None:
            report["probe"] = check_probe.json_report(probed, lines_of)
        print(json.dumps(report, indent=2))
    if problems:
        for problem in problems:
            print(f"{script}:{problem.line}: {problem.message}", file=sys.stderr)
        return EXIT_USAGE
    assert plan is not None
    if not args.json:
        _print_plan(script, job, config, lines_of, plan, args.job_id)
    if probed is not None:
        check_probe.print_outcome(probed, script, lines_of, human=not args.json)
        return probed.exit_status
    return EXIT_OK


def _job(args: argparse.Namespace, options: ScriptOptions, script: Path) -> JobIdentity:
    name = args.user or pwd.getpwuid(os.getuid()).pw_name
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise LookupError(f"unknown user {name!r}") from None
    job_id = args.job_id if args.job_id is not None else SAMPLE_JOB_ID
    task = args.array_task_id
    if task is None and options.array is not None:
        task = first_array_index(options.array)
    return JobIdentity(
        job_id=job_id,
        user=entry.pw_name,
        uid=entry.pw_uid,
        gid=entry.pw_gid,
        groups=tuple(g for g in os.getgrouplist(entry.pw_name, entry.pw_gid) if g != entry.pw_gid),
        account=args.account or options.account,
        job_name=args.job_name or options.job_name or script.name,
        array_job_id=job_id if task is not None else None,
        array_task_id=task,
    )


def _with_hint(message: str, value: str, line_text: str) -> str:
    """Explain sbatch's backslash removal when a ``\\,`` lost its backslash."""
    if "\\," in line_text and "\\," not in value:
        return (
            f"{message} (sbatch removes one backslash from #SBATCH lines: "
            "write '\\\\,' for an escaped comma)"
        )
    return message


def _entry_rows(plan: StagePlan, lines: list[int]) -> list[list[str]]:
    rows: list[list[str]] = []

    def add(step: str, entry: PlanEntry, note: str) -> None:
        extras = [note] if note else []
        extras += [f"{f.action}={f.pattern}" for f in entry.filters]
        if entry.optional and entry.kind is not Kind.CHECKPOINT:
            extras.append("optional")
        rows.append(
            [
                step,
                str(entry.index),
                str(lines[entry.index - 1]),
                entry.kind,
                entry.source,
                entry.destination,
                " ".join(extras),
            ]
        )

    for entry in plan.stage_in_entries():
        add("before", entry, "restore" if entry.kind is Kind.CHECKPOINT else "")
    for entry in plan.entries:
        if entry.kind is Kind.OUT:
            add("after", entry, f"when={entry.when}")
        elif entry.kind is Kind.CHECKPOINT:
            every = f" every={format_duration(entry.every)}" if entry.every else ""
            add("after", entry, f"when=always keep={entry.keep}{every}")
    return rows


def _print_plan(
    script: Path,
    job: JobIdentity,
    config: SiteConfig | None,
    lines: list[int],
    plan: StagePlan,
    given_job_id: int | None,
) -> None:
    policy = f"policy of {config_path()}" if config is not None else "no site config: not checked"
    count = len(plan.entries)
    print(f"{script}: {count} directive{'s' if count != 1 else ''} valid ({policy})")
    sample = "" if given_job_id is not None else " (sample)"
    array = f", array task {job.array_task_id}" if job.array_task_id is not None else ""
    print(
        f"job {job.job_id}{sample}{array}, user {job.user}, "
        f"account {job.account or '-'}, name {job.job_name}"
    )
    if not plan.entries:
        print("no --fsx-stage directives in the script header")
        return
    rows = [["STEP", "#", "LINE", "KIND", "SOURCE", "DESTINATION", "OPTIONS"]]
    rows += _entry_rows(plan, lines)
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _json_report(
    script: Path,
    job: JobIdentity,
    config: SiteConfig | None,
    options: ScriptOptions,
    plan: StagePlan | None,
    problems: list[_Problem],
) -> dict[str, Any]:
    report: dict[str, Any] = {
        "script": str(script),
        "valid": not problems,
        "policy_checked": config is not None,
        "config": str(config_path()) if config is not None else None,
        "job": job.model_dump(mode="json"),
        "directives": [{"line": a.line, "text": a.text} for a in options.directives],
        "errors": [{"line": p.line, "message": p.message} for p in problems],
    }
    if plan is not None and not problems:
        report["plan"] = plan.model_dump(mode="json")
        report["stage_in"] = [e.model_dump(mode="json") for e in plan.stage_in_entries()]
        report["flush"] = {
            "success": [e.model_dump(mode="json") for e in plan.flush_entries(True)],
            "failure": [e.model_dump(mode="json") for e in plan.flush_entries(False)],
        }
    return report
