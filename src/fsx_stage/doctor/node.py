"""The node's side: site config, S3 credentials, IMDS exposure, scratch, state directory, log.

Runs as root (an admin on a compute node). Nothing here prints a secret: the credentials
check names where they came from, never their values.
"""

from __future__ import annotations

import http.client
import os
import pwd
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fsx_stage.config import ConfigError, SiteConfig, config_path, load_config
from fsx_stage.doctor import Finding, fail, ok, warn

#: The endpoint botocore uses (``AWS_EC2_METADATA_SERVICE_ENDPOINT`` overrides it there too).
IMDS_ENDPOINT = "http://169.254.169.254/"
IMDS_ENDPOINT_ENV = "AWS_EC2_METADATA_SERVICE_ENDPOINT"
IMDS_TIMEOUT_S = 2.0
PROBE_TIMEOUT_S = 30.0
HARDENING = "see docs/install.md, 'Instance metadata'"


def imds_endpoint(env: Mapping[str, str]) -> str:
    return env.get(IMDS_ENDPOINT_ENV) or IMDS_ENDPOINT


def load(env: Mapping[str, str]) -> tuple[SiteConfig | None, Finding]:
    """The site config the hooks read (``FSX_STAGE_CONFIG`` or the default path)."""
    path = config_path(env)
    try:
        config = load_config(path)
    except ConfigError as exc:
        message = str(exc).replace("\n", "; ")
        return None, fail("config", f"{message}: the hooks drain the node on every staged job")
    return config, ok("config", f"{path} is valid")


def credentials(config: SiteConfig) -> tuple[str | None, Finding]:
    """Resolve the S3 credentials exactly as the hooks do; returns botocore's source."""
    from fsx_stage.hooks.outcome import HookFault
    from fsx_stage.hooks.runtime import resolve_credentials_and_source

    try:
        _, source = resolve_credentials_and_source(config)
    except HookFault as fault:
        fix = "set [s3] credentials_file or profile, or attach an instance role"
        return None, fail("credentials", f"{fault.message}: {fix}")
    where = []
    if config.s3.profile:
        where.append(f"profile {config.s3.profile!r}")
    if config.s3.credentials_file is not None:
        where.append(f"credentials_file {config.s3.credentials_file}")
    detail = f" ({', '.join(where)})" if where else ""
    return source, ok("credentials", f"S3 credentials resolve from {source}{detail}")


def probe_imds(endpoint: str) -> dict[str, Any]:
    """Ask the metadata service for the instance role's name (IMDSv2, then v1).

    Runs as the unprivileged probe user. Never fetches the role's credentials.
    """
    parts = urlsplit(endpoint)
    host, port = parts.hostname or "", parts.port or 80
    base = parts.path.rstrip("/")
    headers: dict[str, str] = {}
    try:
        conn = http.client.HTTPConnection(host, port, timeout=IMDS_TIMEOUT_S)
        conn.request("PUT", f"{base}/latest/api/token", headers={_TTL: "60"})
        reply = conn.getresponse()
        token = reply.read().decode("ascii", "replace").strip()
        if reply.status == 200 and token:
            headers[_TOKEN] = token
        conn.request("GET", f"{base}/latest/meta-data/iam/security-credentials/", headers=headers)
        reply = conn.getresponse()
        body = reply.read().decode("utf-8", "replace")
        conn.close()
    except OSError as exc:
        return {"reachable": False, "detail": exc.strerror or type(exc).__name__}
    roles = body.split() if reply.status == 200 else []
    return {"reachable": True, "roles": roles, "v2": bool(headers)}


_TTL = "X-aws-ec2-metadata-token-ttl-seconds"
_TOKEN = "X-aws-ec2-metadata-token"  # noqa: S105 (a header name)


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


def _import_hook_modules() -> str:
    """Start this installation's Python and import what the hooks import after the drop."""
    try:
        proc = subprocess.run(
            [sys.executable, "-c", "import fsx_stage.hooks.staging, fsx_stage.transfer"],
            cwd="/",
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
            check=False,
        )
    except OSError as exc:
        return exc.strerror or str(exc)
    return "" if proc.returncode == 0 else (proc.stderr.strip().splitlines() or ["failed"])[-1]


def installation(probe_user: str) -> Finding:
    """Job users can run this installation (the hooks' worker imports after dropping to them)."""
    topic = "install"
    probed = as_probe_user(topic, probe_user, _import_hook_modules)
    if isinstance(probed, Finding):
        return probed
    user, error = probed
    if error:
        return fail(
            topic,
            f"user {user} cannot run {sys.executable} ({error}): every staged job would fail; "
            "reinstall with PYTHON= a system python readable by all users (docs/install.md)",
        )
    return ok(topic, f"{sys.prefix} runs as user {user}")


def imds_exposure(
    config: SiteConfig, source: str | None, endpoint: str, probe_user: str
) -> Finding:
    """Can a job (any non-root user) get the instance role's credentials from IMDS?

    If it can, and fsx-stage itself uses that role, the site policy is no boundary: a job
    can call S3 directly with the same rights.
    """
    topic = "imds"
    probed = as_probe_user(topic, probe_user, probe_imds, endpoint)
    if isinstance(probed, Finding):
        return probed
    probe_user, result = probed
    if not result["reachable"]:
        return ok(topic, f"{endpoint} not reachable by non-root user {probe_user}")
    roles = result["roles"]
    if not roles:
        return ok(topic, f"{endpoint} reachable by {probe_user}, but no instance role is attached")
    role = roles[0]
    own = config.s3.credentials_file is not None or config.s3.profile is not None
    if source == "iam-role" or (source is None and not own):
        return fail(
            topic,
            f"non-root user {probe_user} can get instance role {role!r} credentials from "
            f"{endpoint}, and fsx-stage uses that role: any job can bypass the site policy. "
            "Restrict IMDS to root (iptables owner match), or give the role no S3 rights "
            f"and fsx-stage its own [s3] credentials_file ({HARDENING})",
        )
    return warn(
        topic,
        f"non-root user {probe_user} can get instance role {role!r} credentials from "
        f"{endpoint}: make sure that role has no S3 rights, or restrict IMDS to root "
        f"({HARDENING})",
    )


def _mounts() -> list[tuple[str, str]]:
    """(mount point, fs type) of every mount, from /proc/self/mounts."""
    result = []
    with open("/proc/self/mounts", encoding="utf-8", errors="replace") as handle:
        for line in handle:
            fields = line.split()
            if len(fields) >= 3:
                point = fields[1].encode().decode("unicode_escape")  # \040 for spaces
                result.append((point, fields[2]))
    return result


def _mount_of(path: Path) -> tuple[str, str]:
    """The mount (point, type) holding ``path``: the longest mount point prefix."""
    best = ("/", "unknown")
    for point, kind in _mounts():
        inside = str(path) == point or str(path).startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best[0]):
            best = (point, kind)
    return best


def scratch(config: SiteConfig) -> Iterator[Finding]:
    """Each scratch base is there, writable, not full, and (expected) on Lustre."""
    from fsx_stage.hooks.outcome import HookFault
    from fsx_stage.hooks.runtime import check_scratch, scratch_bases

    for base in scratch_bases(config):
        topic = f"scratch {base}"
        try:
            check_scratch(config, [base], need_space=True)
        except HookFault as fault:
            yield fail(
                topic, f"{fault.message}: mount the scratch file system or fix scratch_roots"
            )
            continue
        point, kind = _mount_of(Path(base).resolve())
        if kind == "lustre":
            yield ok(topic, f"Lustre, mounted at {point}")
        else:
            yield warn(
                topic,
                f"on {kind} ({point}), not Lustre: is the FSx for Lustre file system mounted here?",
            )


def _unsafe(path: Path) -> str | None:
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        return f"{path} is not a directory"
    if info.st_uid != 0:
        return f"{path} is owned by uid {info.st_uid}: chown root {path}"
    if info.st_mode & 0o022:
        return f"{path} is writable by others (mode {info.st_mode & 0o7777:04o}): chmod go-w {path}"
    return None


def state_dir(config: SiteConfig) -> Finding:
    """Root-owned and not writable by anyone else (users read their own job's state)."""
    root = config.state_dir
    topic = "state dir"
    if not root.exists():
        return warn(topic, f"{root} does not exist yet: the first staged job's hook creates it")
    for path in (root, root / "jobs", root / "pending", root / "locks"):
        if path.exists() or path == root:
            problem = _unsafe(path)
            if problem is not None:
                return fail(topic, problem)
    point, kind = _mount_of(root.resolve())
    where = (
        f"local to this node ({kind} at {point}): `fsx-stage status` and `flush --pending` "
        "work per node"
        if kind in _LOCAL_FS
        else f"on {kind} at {point}"
    )
    return ok(topic, f"{root} is root-owned, not writable by others; {where}")


_LOCAL_FS = {"ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "overlay", "zfs"}


def log_destination(config: SiteConfig) -> Finding:
    """Where the hooks' JSON log lines go."""
    from fsx_stage.hooks.runtime import LOG_FALLBACK_NAME

    dest = config.log.destination
    if dest == "syslog":
        if Path("/dev/log").exists():
            return ok("log", "syslog (facility daemon, ident fsx-stage)")
        fallback = config.state_dir / LOG_FALLBACK_NAME
        return warn("log", f"syslog, but this node has no /dev/log: the hooks write {fallback}")
    if dest == "stderr":
        return warn("log", "stderr: slurmd discards a hook's stderr; use syslog or a file")
    if not Path(dest).parent.is_dir():
        return fail("log", f"{dest}: directory {Path(dest).parent} does not exist")
    return ok("log", dest)
