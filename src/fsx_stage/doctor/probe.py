"""Run a check as an unprivileged user: what a job could do (doctor runs as root)."""

from __future__ import annotations

import os
import pwd
from collections.abc import Callable
from typing import Any

from fsx_stage.doctor import Finding, fail, warn

PROBE_TIMEOUT_S = 30.0


def as_probe_user(
    topic: str, probe_user: str, fn: Callable[..., Any], *args: Any
) -> tuple[str, Any] | Finding:
    """``fn(*args)`` as the unprivileged ``probe_user`` (as ourselves when not root).

    Returns who ran it and its result, or the finding that it could not run."""
    from fsx_stage.hooks.privileges import UserCredentials, WorkerError, run_as_user

    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid()).pw_name, fn(*args)
    try:
        entry = pwd.getpwnam(probe_user)
    except KeyError:
        return fail(topic, f"probe user {probe_user!r} does not exist: pass --probe-user")
    user = UserCredentials.lookup(probe_user, entry.pw_uid, entry.pw_gid)
    try:
        return probe_user, run_as_user(user, fn, *args, timeout=PROBE_TIMEOUT_S)
    except WorkerError as exc:
        return warn(topic, f"probe as {probe_user} failed: {exc}")
