"""The agent's wire protocol: one JSON line each way over a unix socket."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fsx_stage.redaction import redact

MAX_LINE = 4096  # a request or reply longer than this is refused
DEFAULT_SOCKET = "/run/fsx-stage/agent.sock"
SOCKET_ENV = "FSX_STAGE_AGENT_SOCKET"


def socket_path() -> str:
    return os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET


class Request(BaseModel):
    """Flush job ``job_id``'s checkpoints now; ``wait``: reply once S3 confirmed them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    op: Literal["checkpoint"]
    job_id: int = Field(gt=0)
    wait: bool = False
    timeout_s: float = Field(default=600.0, gt=0, le=86400)


class Reply(BaseModel):
    model_config = ConfigDict(extra="forbid")

    state: Literal["published", "queued", "refused", "failed", "timeout"]
    error: str | None = None

    @field_validator("error")
    @classmethod
    def _no_secret(cls, error: str | None) -> str | None:
        """The root agent answers a job's user: never with a secret the agent holds."""
        return None if error is None else redact(error)

    @property
    def ok(self) -> bool:
        return self.state in ("published", "queued")
