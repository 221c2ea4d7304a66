"""A job's staging plan: its directives with patterns expanded, checked against policy.

The plan is what the hooks persist as job state (JSON) and what the transfer core
executes: :meth:`StagePlan.stage_in_entries` before the job script,
:meth:`StagePlan.flush_entries` after the job ends.
"""

from __future__ import annotations

import posixpath
import unicodedata
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict

from fsx_stage.config import SiteConfig
from fsx_stage.direction import Direction
from fsx_stage.directives import Directive, Kind, When, printable
from fsx_stage.job import JobIdentity
from fsx_stage.patterns import expand
from fsx_stage.plan_entry import PlanEntry, direction_of
from fsx_stage.policy import Policy, PolicyError, normalise_path
from fsx_stage.s3url import S3Url, S3UrlError, is_s3_url

__all__ = [
    "DEFAULT_KEEP",
    "Direction",
    "PlanEntry",
    "PlanError",
    "PlanProblem",
    "StagePlan",
    "build_plan",
]

#: Checkpoint generations kept when a directive gives no ``keep=``.
DEFAULT_KEEP = 2


class PlanProblem(BaseModel):
    model_config = ConfigDict(frozen=True)

    index: int
    message: str


class PlanError(ValueError):
    """Every directive that could not be planned, each with its 1-based index."""

    def __init__(self, problems: Sequence[PlanProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(f"directive {p.index}: {p.message}" for p in self.problems))


class StagePlan(BaseModel):
    """A job's plan; JSON round-trips with ``model_dump_json``/``model_validate_json``."""

    model_config = ConfigDict(frozen=True)

    job: JobIdentity
    entries: tuple[PlanEntry, ...] = ()

    def stage_in_entries(self) -> list[PlanEntry]:
        """Before the job: ``in`` entries, and each checkpoint restored from DST into SRC.

        A checkpoint restore is always optional: nothing under DST yet is fine.
        """
        result: list[PlanEntry] = []
        for entry in self.entries:
            if entry.kind is Kind.IN:
                result.append(entry)
            elif entry.kind is Kind.CHECKPOINT:
                result.append(entry.reversed().model_copy(update={"optional": True}))
        return result

    def flush_entries(self, job_succeeded: bool) -> list[PlanEntry]:
        """After the job: ``out`` entries whose ``when`` matches, and every checkpoint."""
        wanted = When.SUCCESS if job_succeeded else When.FAILURE
        return [
            entry
            for entry in self.entries
            if entry.kind is Kind.CHECKPOINT
            or (entry.kind is Kind.OUT and entry.when in (When.ALWAYS, wanted))
        ]


def build_plan(
    directives: Sequence[Directive],
    job: JobIdentity,
    config: SiteConfig | None,
    *,
    policy: Policy | None = None,
) -> StagePlan:
    """Expand each directive for ``job`` and check it against the site policy.

    ``config`` None skips the policy (``fsx-stage check`` without a site config).
    Raises :class:`PlanError` listing every failing directive.
    """
    if policy is None and config is not None:
        policy = Policy(config)
    values = job.pattern_values()
    entries: list[PlanEntry] = []
    problems: list[PlanProblem] = []
    for index, directive in enumerate(directives, start=1):
        try:
            entry = _entry(index, directive, values)
            if policy is not None:
                policy.check(entry, job)
        except (_ExpansionError, PolicyError) as exc:
            problems.append(PlanProblem(index=index, message=str(exc)))
        else:
            entries.append(entry)
    if problems:
        raise PlanError(problems)
    return StagePlan(job=job, entries=tuple(entries))


class _ExpansionError(ValueError):
    pass


def _entry(index: int, directive: Directive, values: dict[str, str]) -> PlanEntry:
    source = _expand_side(directive, directive.src, values, "SRC")
    destination = _expand_side(directive, directive.dst, values, "DST")
    if not source.endswith("/") and destination.endswith("/"):
        destination += _basename(source)
    return PlanEntry(
        index=index,
        directive=directive.text,
        kind=directive.kind,
        direction=direction_of(directive.kind),
        source=source,
        destination=destination,
        when=directive.when,
        filters=directive.filters,
        optional=directive.optional,
        keep=(directive.keep or DEFAULT_KEEP) if directive.kind is Kind.CHECKPOINT else None,
        every=directive.every,
    )


def _expand_side(directive: Directive, raw: str, values: dict[str, str], name: str) -> str:
    label = f"--fsx-stage={printable(directive.text)}: {name}"
    text = expand(raw, values)
    for ch in text:
        if unicodedata.category(ch) in ("Cc", "Cs"):
            raise _ExpansionError(
                f"{label} {printable(text)!r} contains control character "
                f"U+{ord(ch):04X} after expanding patterns"
            )
    if text.endswith("/") != raw.endswith("/"):
        raise _ExpansionError(
            f"{label}: expanding patterns in {printable(raw)!r} gave {printable(text)!r}, "
            "which changes whether it is a directory/prefix"
        )
    if not is_s3_url(raw):
        path = normalise_path(text)
        if path == "/" and not raw.endswith("/"):
            raise _ExpansionError(f"{label}: {printable(text)!r} is the root directory, not a file")
        return path
    try:
        url = S3Url.parse(text)
    except S3UrlError as exc:
        raise _ExpansionError(f"{label}: after expanding patterns: {exc}") from None
    if any(seg in (".", "..") for seg in url.key.split("/")):
        raise _ExpansionError(
            f"{label}: after expanding patterns the S3 key {url.key!r} has a '.' or '..' segment"
        )
    return str(url)


def _basename(source: str) -> str:
    if is_s3_url(source):
        return S3Url.parse(source).key.rsplit("/", 1)[-1]
    return posixpath.basename(source)
