"""``fsx-stage check --probe``: reach S3 as the job's staging will, run the probe, report it.

With a site config, S3 is reached the way the hooks reach it: the ``[s3]`` endpoint,
region, addressing style, timeouts and retries, the transfer settings, and credentials
resolved through the same chain (the config's profile and credentials file, then the
standard AWS chain). Without one, as ``fsx-stage cp`` does: the user's standard AWS
environment (``AWS_ENDPOINT_URL``, ``AWS_PROFILE``, ``~/.aws``, the instance role). Where
the credentials came from is printed, never their values; every line printed goes through
fsx_stage.redaction.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fsx_stage.cli import EXIT_FAILED, EXIT_OK
from fsx_stage.cli.transfer_summary import human_bytes
from fsx_stage.config import SiteConfig
from fsx_stage.plan import StagePlan
from fsx_stage.probe import EntryProbe, ProbeReport, probe_plan
from fsx_stage.redaction import REDACTOR, redact
from fsx_stage.transfer import S3Settings, StaticCredentials, TransferOptions

#: ``check --probe`` found data missing, no room on scratch, or a missing bucket.
EXIT_FINDINGS = 3
#: Attempts per S3 request at most: a probe is a quick look, not a transfer to see through.
PROBE_ATTEMPTS = 3

_MISSING_WORDS = {"object": "object", "prefix": "no objects", "bucket": "bucket"}


class ProbeUnavailable(Exception):
    """S3 cannot be probed at all (no credentials, an unreadable SSE-C key...)."""


@dataclass(frozen=True)
class ProbeSetup:
    s3: S3Settings
    options: TransferOptions
    origin: str  # "site config" or "your AWS environment"
    endpoint: str
    credentials: str  # where botocore found them (``env``, ``iam-role``...), never values


@dataclass
class ProbeOutcome:
    setup: ProbeSetup | None
    report: ProbeReport | None
    error: str | None = None

    @property
    def exit_status(self) -> int:
        if self.report is None:
            return EXIT_FAILED
        if self.report.problems:
            return EXIT_FINDINGS
        return EXIT_FAILED if self.report.unknown else EXIT_OK


def probe(plan: StagePlan, config: SiteConfig | None) -> ProbeOutcome:
    """Resolve how to reach S3 and probe every entry of ``plan``."""
    try:
        setup = probe_setup(config)
    except ProbeUnavailable as exc:
        return ProbeOutcome(None, None, redact(str(exc)))
    s3 = dataclasses.replace(setup.s3, max_attempts=min(setup.s3.max_attempts, PROBE_ATTEMPTS))
    return ProbeOutcome(setup, probe_plan(plan, s3, setup.options))


def probe_setup(config: SiteConfig | None) -> ProbeSetup:
    if config is None:
        credentials, source = _environment_credentials()
        explicit = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        return ProbeSetup(
            S3Settings(credentials=credentials),
            TransferOptions(sync=True),
            "your AWS environment",
            _endpoint_text(explicit),
            source,
        )
    from fsx_stage.hooks.outcome import HookFault
    from fsx_stage.hooks.runtime import (
        encryption,
        resolve_credentials_and_source,
        s3_settings,
        transfer_options,
    )

    try:
        credentials, source = resolve_credentials_and_source(config)
        enc = encryption(config)
    except HookFault as fault:
        raise ProbeUnavailable(fault.message) from None
    return ProbeSetup(
        s3_settings(config, credentials),
        transfer_options(config, enc),
        "site config",
        _endpoint_text(config.s3.endpoint_url),
        source,
    )


def _environment_credentials() -> tuple[StaticCredentials, str]:
    """The standard AWS chain's credentials, as botocore (and ``fsx-stage cp``) finds them."""
    import botocore.session
    from botocore.exceptions import BotoCoreError

    from fsx_stage.hooks.runtime import static_credentials

    try:
        found = botocore.session.Session().get_credentials()
        frozen = found.get_frozen_credentials() if found is not None else None
    except BotoCoreError as exc:
        raise ProbeUnavailable(f"AWS credentials unavailable: {exc}") from None
    if found is None or frozen is None or not frozen.access_key or not frozen.secret_key:
        raise ProbeUnavailable(
            "no AWS credentials found (AWS_ACCESS_KEY_ID, AWS_PROFILE, ~/.aws or an instance role)"
        )
    return static_credentials(frozen), str(getattr(found, "method", None) or "unknown")


def _endpoint_text(url: str | None) -> str:
    """The endpoint without any user:password part; AWS's own when none is set."""
    if not url:
        return "AWS S3 (the region's endpoint)"
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


# -- output -------------------------------------------------------------------------------


def print_outcome(outcome: ProbeOutcome, script: Path, lines: list[int], human: bool) -> None:
    """The table and notes on stdout (``human``); findings as ``SCRIPT:LINE: ...`` on stderr."""
    if outcome.report is None or outcome.setup is None:
        print(f"fsx-stage check: --probe: {outcome.error}", file=sys.stderr)
        return
    if human:
        setup = outcome.setup
        print(
            f"probe: S3 at {setup.endpoint} ({setup.origin}), "
            f"credentials from {setup.credentials}; reads only"
        )
        rows = [["#", "LINE", "STEP", "KIND", "S3", "OBJECTS", "BYTES", "MISSING", "ROOM"]]
        rows += [_row(entry, lines) for entry in outcome.report.entries]
        widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
        for row in rows:
            cells = zip(row, widths, strict=True)
            print(redact("  ".join(cell.ljust(w) for cell, w in cells).rstrip()))
        for entry in outcome.report.entries:
            for note in entry.notes:
                print(redact(f"  {entry.index} (line {lines[entry.index - 1]}): {note}"))
    for entry in outcome.report.entries:
        where = f"{script}:{lines[entry.index - 1]}"
        for problem in entry.problems:
            print(redact(f"{where}: {entry.url}: {problem}"), file=sys.stderr)
        for unknown in entry.unknown:
            print(redact(f"{where}: {entry.url}: cannot tell: {unknown}"), file=sys.stderr)


def _row(entry: EntryProbe, lines: list[int]) -> list[str]:
    listed = entry.objects is not None
    return [
        str(entry.index),
        str(lines[entry.index - 1]),
        entry.step,
        entry.kind,
        entry.url,
        f"{entry.objects:,}" if listed else "-",
        human_bytes(entry.bytes or 0) if listed else "-",
        _MISSING_WORDS[entry.missing] if entry.missing else "-",
        _room_cell(entry),
    ]


def _room_cell(entry: EntryProbe) -> str:
    room = entry.room
    if room is None:
        return "-"
    if room.enough is None or room.free_bytes is None:
        return "unknown"
    free = human_bytes(room.free_bytes)
    if room.enough:
        return f"ok ({free} free)"
    return f"NO ({free} free, {human_bytes(room.needed_bytes)} needed)"


def json_report(outcome: ProbeOutcome, lines: list[int]) -> dict[str, Any]:
    """The ``probe`` member of ``check --json``."""
    report: dict[str, Any] = {"exit_status": outcome.exit_status}
    if outcome.report is None or outcome.setup is None:
        return {**report, "error": outcome.error, "entries": []}
    setup = outcome.setup
    report["s3"] = {
        "origin": setup.origin,
        "endpoint": setup.endpoint,
        "credentials": setup.credentials,
    }
    report["entries"] = [
        {"line": lines[e.index - 1], **REDACTOR.redact_value(e.model_dump(mode="json"))}
        for e in outcome.report.entries
    ]
    return report
