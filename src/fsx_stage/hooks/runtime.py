"""What every hook needs before it does anything: config, log, state, S3 settings.

Everything here runs as root. S3 credentials are resolved once, here, through botocore's
chain (the config's profile, root's shared files, instance metadata), registered with the
log redactor, and handed to the privilege-dropped worker in memory as `StaticCredentials`.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fsx_stage.config import ConfigError, SiteConfig, config_path, load_config
from fsx_stage.filters import Filter
from fsx_stage.hooks.jobinfo import JobInfoError
from fsx_stage.hooks.logging import EventLog, emergency_log, setup_logging
from fsx_stage.hooks.outcome import Fault, HookFault
from fsx_stage.hooks.pending import PendingStore
from fsx_stage.hooks.privileges import UserCredentials
from fsx_stage.hooks.state import StateStore
from fsx_stage.transfer import Encryption, S3Settings, Secret, StaticCredentials, TransferOptions

if TYPE_CHECKING:
    from botocore.credentials import ReadOnlyCredentials

LOG_FALLBACK_NAME = "fsx-stage.log"
#: A hook's exit statuses: Slurm drains the node on anything but 0.
EXIT_OK = 0
EXIT_NODE_FAULT = 1


@dataclass
class Runtime:
    config: SiteConfig
    store: StateStore
    pending: PendingStore
    log: EventLog


@dataclass(frozen=True)
class TransferSetup:
    """What a job's transfers need, prepared as root before the first one."""

    user: UserCredentials  # the transfer worker runs as the job's user
    s3: S3Settings  # with the credentials resolved as root
    encryption: Encryption
    umask_for: Callable[[str], int]  # the umask of what the transfer creates at a path


def run_hook(
    name: str,
    env: Mapping[str, str],
    body: Callable[[Runtime], int],
    on_bug: Callable[[int | None, EventLog], int],
) -> int:
    """The outer frame shared by ``fsx-stage prolog`` and ``epilog``.

    A job without directives costs nothing; node faults (config, state directory, job
    information, local I/O) exit non-zero so Slurm drains the node; a bug in fsx-stage is
    logged and handed to ``on_bug``, which must not drain the node (a user could trigger
    it at will).
    """
    if not env.get("SPANK_FSX_STAGE"):
        return EXIT_OK
    job_id = int(env.get("SLURM_JOB_ID", "0") or 0) or None
    try:
        rt = start(env, job_id)
    except HookFault as fault:
        emergency_log(job_id).error(f"{name}.node_fault", error=fault.message)
        return EXIT_NODE_FAULT
    try:
        return body(rt)
    except HookFault as fault:
        rt.log.error(f"{name}.node_fault", error=fault.message)
        return EXIT_NODE_FAULT if fault.fault is Fault.NODE else EXIT_OK
    except (JobInfoError, OSError) as exc:
        rt.log.exception(f"{name}.node_fault", error=str(exc))
        return EXIT_NODE_FAULT
    except Exception as exc:
        rt.log.exception(f"{name}.internal_error", error=str(exc))
        return on_bug(job_id, rt.log)


def load_site_config(env: Mapping[str, str]) -> SiteConfig:
    """The site config; a missing or invalid one is the node's fault (admin setup)."""
    try:
        return load_config(config_path(env))
    except ConfigError as exc:
        raise HookFault(Fault.NODE, f"site configuration: {exc}") from None


def start(env: Mapping[str, str], job_id: int | None) -> Runtime:
    """Load the config, open the log and the state directory."""
    config = load_site_config(env)
    setup_logging(
        config.log.destination,
        config.log.level,
        fallback_file=config.state_dir / LOG_FALLBACK_NAME,
    )
    store = StateStore(config.state_dir)
    try:
        store.ensure()
    except OSError as exc:
        raise HookFault(
            Fault.NODE, f"state directory {config.state_dir} unusable: {exc.strerror}"
        ) from None
    return Runtime(config=config, store=store, pending=PendingStore(store), log=EventLog(job_id))


def resolve_credentials(config: SiteConfig) -> StaticCredentials:
    """Resolve S3 credentials as root via botocore's chain; a node fault when there are none."""
    return resolve_credentials_and_source(config)[0]


def resolve_credentials_and_source(config: SiteConfig) -> tuple[StaticCredentials, str]:
    """:func:`resolve_credentials`, plus where botocore found them (e.g. ``iam-role``,
    ``shared-credentials-file``, ``env``): ``fsx-stage doctor`` reports it."""
    import botocore.session
    from botocore.exceptions import BotoCoreError

    try:
        session = botocore.session.Session(profile=config.s3.profile)
        if config.s3.credentials_file is not None:
            session.set_config_variable("credentials_file", str(config.s3.credentials_file))
        found = session.get_credentials()
        frozen = found.get_frozen_credentials() if found is not None else None
    except BotoCoreError as exc:
        raise HookFault(Fault.NODE, f"S3 credentials unavailable on this node: {exc}") from None
    if frozen is None or not frozen.access_key or not frozen.secret_key:
        raise HookFault(
            Fault.NODE,
            "S3 credentials unavailable on this node"
            + (f" (profile {config.s3.profile!r})" if config.s3.profile else ""),
        )
    return static_credentials(frozen), str(getattr(found, "method", None) or "unknown")


def static_credentials(frozen: ReadOnlyCredentials) -> StaticCredentials:
    """botocore's frozen credentials as the transfer core takes them (as `Secret`s: registered
    for redaction, so no log line or message can carry them)."""
    return StaticCredentials(
        access_key_id=frozen.access_key,
        secret_access_key=Secret(frozen.secret_key),
        session_token=Secret(frozen.token) if frozen.token else None,
    )


def s3_settings(config: SiteConfig, credentials: StaticCredentials) -> S3Settings:
    s3 = config.s3
    return S3Settings(
        endpoint_url=s3.endpoint_url,
        region=s3.region,
        profile=None,  # credentials are already resolved; the worker must not read files
        addressing_style=s3.addressing_style,
        credentials=credentials,
        max_attempts=s3.max_attempts,
        connect_timeout_s=s3.connect_timeout,
        read_timeout_s=s3.read_timeout,
    )


def encryption(config: SiteConfig) -> Encryption:
    """The transfer core's encryption settings; an SSE-C key file is read here, as root."""
    enc = config.s3.encryption
    mode = str(enc.mode.value)
    if mode == "sse-c":
        assert enc.sse_c_key_file is not None
        try:
            raw = Path(enc.sse_c_key_file).read_bytes()
        except OSError as exc:
            raise HookFault(Fault.NODE, f"SSE-C key file unreadable: {exc.strerror}") from None
        # The file holds the 32 key bytes, or their base64 text.
        key = base64.b64encode(raw).decode() if len(raw) == 32 else raw.decode("latin-1").strip()
        try:
            return Encryption(mode="sse-c", customer_key=Secret(key))
        except ValueError:
            raise HookFault(
                Fault.NODE,
                f"SSE-C key file {enc.sse_c_key_file}: expected 32 bytes or their base64",
            ) from None
    if mode == "sse-kms":
        return Encryption(mode="sse-kms", kms_key_id=enc.kms_key_id)
    if mode == "sse-s3":
        return Encryption(mode="sse-s3")
    return Encryption()


def transfer_options(
    config: SiteConfig,
    enc: Encryption,
    *,
    filters: tuple[Filter, ...] = (),
    sync: bool = True,
) -> TransferOptions:
    t = config.transfer
    return TransferOptions(
        concurrency=t.max_concurrency,
        workers=t.workers,
        part_size=t.part_size,
        multipart_threshold=t.multipart_threshold,
        filters=filters,
        sync=sync,
        fsync=True,
        encryption=enc,
    )


def scratch_bases(config: SiteConfig) -> list[str]:
    """The fixed part of each scratch root template (``/fsx/{user}/`` gives ``/fsx/``)."""
    bases = []
    for template in config.scratch_roots:
        fixed = template.split("{", 1)[0]
        base = fixed if fixed.endswith("/") else str(Path(fixed).parent).rstrip("/") + "/"
        bases.append(base)
    return bases


def check_scratch(config: SiteConfig, paths: list[str], *, need_space: bool) -> None:
    """Node health for the scratch trees these paths live in: present and writable (a
    node fault otherwise), and not full (`Fault.SCRATCH_FULL`: the job waits).

    Runs as root and only looks at the site's scratch bases (``stat``/``statvfs``), never
    at the user's files.
    """
    for base in scratch_bases(config):
        if not any(p.startswith(base) for p in paths):
            continue
        try:
            info = os.statvfs(base)
        except OSError as exc:
            raise HookFault(
                Fault.NODE, f"scratch {base} is not available on this node: {exc.strerror}"
            ) from None
        if not Path(base).is_dir():
            raise HookFault(Fault.NODE, f"scratch {base} is not a directory on this node")
        if need_space and info.f_flag & os.ST_RDONLY:
            raise HookFault(Fault.NODE, f"scratch {base} is mounted read-only on this node")
        if need_space and info.f_bavail == 0:
            # Shared by every node: full is no reason to drain this one (see outcome.py).
            raise HookFault(Fault.SCRATCH_FULL, f"scratch {base} is full (no space left on device)")
