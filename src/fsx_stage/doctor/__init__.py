"""``fsx-stage doctor``: is this node set up to run the hooks safely?

Each check yields :class:`Finding` lines (``ok``, ``warn`` or ``FAIL``, each ``warn`` and
``FAIL`` saying what to fix). `node` checks the installation, the site config, the S3
credentials, the scratch mounts, the state directory and the log; `imds` who can reach the
instance metadata service (`probe` runs such checks as an unprivileged user); `slurm`
checks slurm.conf (through ``scontrol show config``) and the SPANK plugin.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Finding:
    """One line of the report: the status, what was checked, and what was found or to fix."""

    status: Status
    topic: str
    message: str


def ok(topic: str, message: str) -> Finding:
    return Finding(Status.OK, topic, message)


def warn(topic: str, message: str) -> Finding:
    return Finding(Status.WARN, topic, message)


def fail(topic: str, message: str) -> Finding:
    return Finding(Status.FAIL, topic, message)
