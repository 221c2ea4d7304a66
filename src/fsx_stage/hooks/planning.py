"""From ``SPANK_FSX_STAGE`` to the job's plan and its per-entry state."""

from __future__ import annotations

from collections.abc import Iterable

from fsx_stage.config import SiteConfig
from fsx_stage.directives import Directive, DirectiveError, decode_spank_values, parse_directive
from fsx_stage.hooks.outcome import Fault, HookFault
from fsx_stage.hooks.state import EntryState, EntryStatus, Phase
from fsx_stage.job import JobIdentity
from fsx_stage.plan import PlanEntry, PlanError, StagePlan, build_plan


def decode_directives(env_value: str) -> tuple[list[str], list[Directive]]:
    """The directive texts and their parsed form; every problem in one user error."""
    try:
        texts = decode_spank_values(env_value)
    except DirectiveError as exc:
        raise HookFault(Fault.USER, str(exc)) from None
    directives: list[Directive] = []
    problems: list[str] = []
    for index, text in enumerate(texts, start=1):
        try:
            directives.append(parse_directive(text))
        except DirectiveError as exc:
            problems.append(f"directive {index}: {exc}")
    if problems:
        raise HookFault(Fault.USER, "; ".join(problems))
    return texts, directives


def plan_job(directives: list[Directive], job: JobIdentity, config: SiteConfig) -> StagePlan:
    """The checked plan; a policy refusal or bad expansion is the user's error."""
    try:
        return build_plan(directives, job, config)
    except PlanError as exc:
        raise HookFault(Fault.USER, "; ".join(str(exc).splitlines())) from None


def entry_state(
    entry: PlanEntry, phase: Phase, status: EntryStatus = EntryStatus.WAITING
) -> EntryState:
    return EntryState(
        index=entry.index,
        phase=phase,
        kind=entry.kind,
        direction=entry.direction,
        source=entry.source,
        destination=entry.destination,
        recursive=entry.is_prefix,
        filters=entry.filters,
        optional=entry.optional,
        keep=entry.keep,
        every=entry.every,
        status=status,
    )


def _key(entry: EntryState) -> tuple[int, str, str, str]:
    return (entry.index, entry.phase.value, entry.source, entry.destination)


def carry_over(fresh: Iterable[EntryState], previous: Iterable[EntryState]) -> list[EntryState]:
    """Resume: an entry a previous (crashed) run of this hook already has keeps its record
    (a finished one is not redone; an unfinished one keeps its attempt count)."""
    known = {_key(e): e for e in previous}
    return [known.get(_key(e), e) for e in fresh]
