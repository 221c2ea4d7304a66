"""The node's side: the installation, site config, S3 credentials, scratch, state directory, log.

Runs as root (an admin on a compute node). Nothing here prints a secret: the credentials
check names where they came from, never their values.
"""

from __future__ import annotations

import stat
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

from fsx_stage.config import ConfigError, SiteConfig, config_path, load_config
from fsx_stage.doctor import Finding, fail, ok, warn
from fsx_stage.doctor.probe import PROBE_TIMEOUT_S, as_probe_user


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
