"""``fsx-stage check SCRIPT``: validate a batch script's directives before submitting it.

``fsx-stage check --directive VALUE...`` validates values as given to ``--fsx-stage``
(what the SPANK plugin runs in sbatch, salloc and srun, so that a job the prolog would
refuse is refused at submission with the same messages).

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
from fsx_stage.directives import (
    Directive,
    DirectiveError,
    Kind,
    filter_warnings,
    parse_directive,
)
from fsx_stage.durations import format_duration
from fsx_stage.job import JobIdentity
from fsx_stage.plan import PlanEntry, PlanError, StagePlan, build_plan
from fsx_stage.sbatch_script import ScriptOptions, first_array_index, read_options

SAMPLE_JOB_ID = 1234567
SAMPLE_JOB_NAME = "sample"  # %x for --directive (the job name is not known there)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "check",
        help="validate a batch script's --fsx-stage directives and show the plan",
        description=(
            "Validate the #SBATCH --fsx-stage lines of a batch script (and the site "
            "policy, when a site config exists) and show what will be staged."
        ),
    )
    parser.add_argument("script", type=Path, metavar="SCRIPT", nargs="?")
    parser.add_argument(
        "--directive",
        action="append",
        dest="directives",
        metavar="VALUE",
        help="check this --fsx-stage value instead of a script (repeatable, in order)",
    )
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
    if (args.script is None) == (args.directives is None):
        print("fsx-stage check: give either SCRIPT or --directive VALUE...", file=sys.stderr)
        return EXIT_USAGE
    if args.directives is not None:
        return _run_values(args, args.directives)
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
        job = _job(args, options, script.name)
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
            continue
        for message in filter_warnings(parsed[-1][1]):
            print(f"{script}:{argument.line}: warning: {message}", file=sys.stderr)
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


def _run_values(args: argparse.Namespace, values: list[str]) -> int:
    """``check --directive VALUE...``: one message line per problem on stderr, exit 2.

    The account is often unknown at submission (sbatch's default account): without
    ``--account``, a policy refusal some account could lift is only a warning.
    """
    if args.json:
        print("fsx-stage check: --json needs SCRIPT", file=sys.stderr)
        return EXIT_USAGE
    try:
        config = load_optional_config()
    except ConfigError as exc:
        print(f"fsx-stage check: site configuration: {exc}", file=sys.stderr)
        return EXIT_FAILED
    try:
        job = _job(args, ScriptOptions(), SAMPLE_JOB_NAME)
    except LookupError as exc:
        print(f"fsx-stage check: {exc}", file=sys.stderr)
        return EXIT_USAGE
    problems: list[_Problem] = []  # ``line``: the value's 1-based index
    parsed: list[tuple[int, Directive]] = []
    for index, value in enumerate(values, start=1):
        try:
            parsed.append((index, parse_directive(value)))
        except DirectiveError as exc:
            problems.append(_Problem(index, str(exc)))
            continue
        for message in filter_warnings(parsed[-1][1]):
            print(f"warning: {message}", file=sys.stderr)
    directives = [d for _, d in parsed]
    plan, refused = _plan(directives, job, config)
    if refused and args.account is None and config is not None:
        lifted = _lifted_by_an_account(directives, job, config, refused)
        for index in sorted(lifted):
            print(
                f"warning: {refused.pop(index)} (unless your job's account allows it: "
                "the job is checked again with its account when it starts)",
                file=sys.stderr,
            )
    problems.extend(_Problem(parsed[i - 1][0], m) for i, m in refused.items())
    if problems:
        for problem in sorted(problems, key=lambda p: p.line):
            print(problem.message, file=sys.stderr)
        return EXIT_USAGE
    if plan is not None:
        lines = [index for index, _ in parsed]
        _print_plan("--fsx-stage", job, config, lines, plan, args.job_id)
    return EXIT_OK


def _plan(
    directives: list[Directive], job: JobIdentity, config: SiteConfig | None
) -> tuple[StagePlan | None, dict[int, str]]:
    """The plan, or the message of each refused directive by its 1-based index."""
    try:
        return build_plan(directives, job, config), {}
    except PlanError as exc:
        return None, {p.index: p.message for p in exc.problems}


def _lifted_by_an_account(
    directives: list[Directive], job: JobIdentity, config: SiteConfig, refused: dict[int, str]
) -> set[int]:
    """The refused directives some account would allow: any of them when the policy
    expands ``{account}``, else those one of the accounts its rules name allows."""
    templates = [*config.scratch_roots, *(rule.prefix for rule in config.s3.allow)]
    if any("{account}" in template for template in templates):
        return set(refused)
    lifted: set[int] = set()
    for account in sorted({a for rule in config.s3.allow for a in rule.accounts}):
        _, still = _plan(directives, job.model_copy(update={"account": account}), config)
        lifted |= set(refused) - set(still)
    return lifted


def _job(args: argparse.Namespace, options: ScriptOptions, default_name: str) -> JobIdentity:
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
        job_name=args.job_name or options.job_name or default_name,
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
    script: Path | str,
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
