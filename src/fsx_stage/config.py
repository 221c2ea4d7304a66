"""The site configuration: a TOML file validated into :class:`SiteConfig`.

Default path ``/etc/fsx-stage/config.toml``; ``FSX_STAGE_CONFIG`` overrides it.
Unknown keys are errors; every error names the key path and what was expected.
``slurm-conf-examples/fsx-stage.toml`` is the commented reference.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from fsx_stage.durations import parse_duration
from fsx_stage.sizes import parse_size

DEFAULT_CONFIG_PATH = Path("/etc/fsx-stage/config.toml")
CONFIG_ENV = "FSX_STAGE_CONFIG"
TEMPLATE_FIELDS = ("user", "account")
_TEMPLATE_RE = re.compile(r"\{([^{}]*)\}")


class ConfigError(ValueError):
    """An unreadable or invalid site configuration; the message lists every problem."""


def _strict() -> ConfigDict:
    return ConfigDict(frozen=True, extra="forbid")


def check_template(value: str) -> str:
    """Reject ``{...}`` fields other than ``{user}`` and ``{account}``."""
    for name in _TEMPLATE_RE.findall(value):
        if name not in TEMPLATE_FIELDS:
            raise ValueError(f"unknown template field {{{name}}}: expected {{user}} or {{account}}")
    rest = value.replace("{user}", "").replace("{account}", "")
    if "{" in rest or "}" in rest:
        raise ValueError(f"unbalanced '{{' or '}}' in {value!r}")
    return value


def _parse_size(value: object) -> object:
    """Sizes in the CLI's grammar (:mod:`fsx_stage.sizes`: ``16KB`` = 16 KiB)."""
    return parse_size(value) if isinstance(value, str) else value


ByteSize = Annotated[int, BeforeValidator(_parse_size)]


def _parse_seconds(value: object) -> object:
    return parse_duration(value) if isinstance(value, str) else value


#: Seconds, written as a number or a duration (``"5m"``, ``"90s"``, ``"1h30m"``).
Seconds = Annotated[int, BeforeValidator(_parse_seconds)]


class Access(StrEnum):
    READ = "read"  # stage in, checkpoint restore
    WRITE = "write"  # out, checkpoint flush


class AllowRule(BaseModel):
    """``[[s3.allow]]``: who may read and/or write under ``s3://bucket/prefix``.

    A rule applies to a job when its user is in ``users`` (``"*"``: everyone), or one
    of its groups (name or numeric gid) is in ``groups``, or its account is in
    ``accounts``. ``prefix`` may use ``{user}`` and ``{account}``; it is empty (the
    whole bucket) or ends in ``/``.
    """

    model_config = _strict()

    bucket: str
    prefix: str = ""
    users: tuple[str, ...] = ()
    groups: tuple[str | int, ...] = ()
    accounts: tuple[str, ...] = ()
    access: tuple[Access, ...]

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        from fsx_stage.s3url import S3Url, S3UrlError

        try:
            S3Url.parse(f"s3://{value}/")
        except S3UrlError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        check_template(value)
        if value.startswith("/"):
            raise ValueError("expected a key prefix without a leading '/'")
        if value and not value.endswith("/"):
            raise ValueError(f"expected '' (whole bucket) or a prefix ending in '/', got {value!r}")
        if any(seg in (".", "..") for seg in value.split("/")):
            raise ValueError("'.' and '..' segments are not allowed")
        return value

    @field_validator("access")
    @classmethod
    def _access(cls, value: tuple[Access, ...]) -> tuple[Access, ...]:
        if not value:
            raise ValueError("expected at least one of 'read', 'write'")
        return value

    @model_validator(mode="after")
    def _someone(self) -> Self:
        if not (self.users or self.groups or self.accounts):
            raise ValueError("a rule needs at least one of users, groups or accounts")
        return self


class EncryptionMode(StrEnum):
    NONE = "none"
    SSE_S3 = "sse-s3"
    SSE_KMS = "sse-kms"
    SSE_C = "sse-c"


class Encryption(BaseModel):
    """Server-side encryption of uploaded objects (and the SSE-C key for downloads)."""

    model_config = _strict()

    mode: EncryptionMode = EncryptionMode.NONE
    kms_key_id: str | None = None
    sse_c_key_file: Path | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.mode is EncryptionMode.SSE_KMS and not self.kms_key_id:
            raise ValueError("mode 'sse-kms' needs kms_key_id")
        if self.mode is not EncryptionMode.SSE_KMS and self.kms_key_id:
            raise ValueError("kms_key_id is only for mode 'sse-kms'")
        if self.mode is EncryptionMode.SSE_C and self.sse_c_key_file is None:
            raise ValueError("mode 'sse-c' needs sse_c_key_file")
        if self.mode is not EncryptionMode.SSE_C and self.sse_c_key_file is not None:
            raise ValueError("sse_c_key_file is only for mode 'sse-c'")
        if self.sse_c_key_file is not None and not self.sse_c_key_file.is_absolute():
            raise ValueError("sse_c_key_file must be an absolute path")
        return self


class S3Config(BaseModel):
    """``[s3]``: how to reach S3, and the access rules (default deny)."""

    model_config = _strict()

    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    credentials_file: Path | None = None  # an AWS shared credentials file (root-only)
    addressing_style: Literal["auto", "path", "virtual"] = "auto"
    connect_timeout: float = Field(default=10.0, gt=0)
    read_timeout: float = Field(default=60.0, gt=0)
    max_attempts: int = Field(default=5, ge=1, le=20)
    encryption: Encryption = Encryption()
    allow: tuple[AllowRule, ...] = ()

    @field_validator("credentials_file")
    @classmethod
    def _credentials_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_absolute():
            raise ValueError("expected an absolute path")
        return value

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
        return value


class TransferConfig(BaseModel):
    """``[transfer]``: parallelism and multipart sizes of the transfer core."""

    model_config = _strict()

    max_concurrency: int = Field(default=32, ge=1, le=1024)  # S3 requests in flight per job
    workers: int = Field(default=4, ge=1, le=256)  # local file I/O workers per job
    multipart_threshold: ByteSize = Field(default=64 * 1024**2, ge=5 * 1024**2)
    part_size: ByteSize = Field(default=64 * 1024**2, ge=5 * 1024**2, le=5 * 1024**3)


class Timeouts(BaseModel):
    """``[timeouts]``: budget in seconds for the whole stage-in and the whole flush."""

    model_config = _strict()

    stage_in: float = Field(default=3600.0, gt=0)
    flush: float = Field(default=3600.0, gt=0)


class LogConfig(BaseModel):
    """``[log]``: ``destination`` is ``syslog``, ``stderr`` or an absolute file path."""

    model_config = _strict()

    destination: str = "syslog"
    level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("destination")
    @classmethod
    def _destination(cls, value: str) -> str:
        if value not in ("syslog", "stderr") and not value.startswith("/"):
            raise ValueError(f"expected 'syslog', 'stderr' or an absolute path, got {value!r}")
        return value


class BurstBufferConfig(BaseModel):
    """``[burst_buffer]``: the burst_buffer/lua mode on the staging host (docs/modes.md)."""

    model_config = _strict()

    # Each job's FSX_STAGE_* variables, read by slurm_bb_paths inside slurmctld (no fork
    # there): root writes, SlurmUser reads.
    paths_dir: Path = Path("/var/spool/fsx-stage/bb-paths")
    # Stage-ins and flushes running at once on the staging host; a job beyond that waits
    # (PENDING, BurstBufferStageIn / STAGE_OUT) for a slot.
    max_jobs: int = Field(default=4, ge=1, le=1024)
    # Seconds data_out keeps retrying a flush S3 refused before it gives up (the data stays
    # pending either way). While it retries the job stays STAGE_OUT, so `afterburstbuffer`
    # dependents wait for the results to be in S3. Keep it below StageOutTimeout.
    flush_wait: float = Field(default=0.0, ge=0)
    # Partitions whose jobs the burst buffer stages; "*" is every partition. Jobs of other
    # partitions pass through it untouched and are staged by the Prolog/Epilog.
    partitions: tuple[str, ...] = ("*",)

    def covers(self, partitions: str) -> bool:
        """Whether a job of ``partitions`` (squeue's comma-separated %P) is staged here."""
        if "*" in self.partitions:
            return True
        return all(p in self.partitions for p in partitions.split(",") if p)

    @field_validator("paths_dir")
    @classmethod
    def _paths_dir(cls, value: Path) -> Path:
        if not value.is_absolute():
            raise ValueError("expected an absolute path")
        return value


class CheckpointsConfig(BaseModel):
    """``[checkpoints]``: periodic flushes while jobs run (``every=``, docs/checkpoints.md)."""

    model_config = _strict()

    # The smallest every= a directive may ask for; smaller is refused at submission.
    min_every: Seconds = Field(default=300, ge=1)


class SiteConfig(BaseModel):
    """The whole site configuration."""

    model_config = _strict()

    scratch_roots: tuple[str, ...] = Field(min_length=1)
    #: The umask of what the hooks create on scratch (directories 0777, files 0666 without
    #: these bits); ``root_umask`` overrides it under some scratch roots (templates).
    umask: int = Field(default=0o077, ge=0, le=0o777)
    root_umask: dict[str, int] = Field(default_factory=dict)
    scratch_after_flush: Literal["keep", "remove"] = "keep"
    state_dir: Path = Path("/var/lib/fsx-stage")
    s3: S3Config = S3Config()
    transfer: TransferConfig = TransferConfig()
    timeouts: Timeouts = Timeouts()
    log: LogConfig = LogConfig()
    burst_buffer: BurstBufferConfig = BurstBufferConfig()
    checkpoints: CheckpointsConfig = CheckpointsConfig()

    @field_validator("scratch_roots")
    @classmethod
    def _roots(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for root in value:
            check_template(root)
            if not root.startswith("/"):
                raise ValueError(f"expected absolute path templates, got {root!r}")
            if any(seg == ".." for seg in root.split("/")):
                raise ValueError(f"'..' is not allowed in {root!r}")
        return value

    @field_validator("root_umask")
    @classmethod
    def _root_umask(cls, value: dict[str, int]) -> dict[str, int]:
        for root, mask in value.items():
            if not root.startswith("/") or any(seg == ".." for seg in root.split("/")):
                raise ValueError(f"expected an absolute path template as key, got {root!r}")
            check_template(root)
            if not 0 <= mask <= 0o777:
                raise ValueError(f"{root!r}: expected a umask 0o000-0o777, got {mask!r}")
        return value

    @field_validator("state_dir")
    @classmethod
    def _state_dir(cls, value: Path) -> Path:
        if not value.is_absolute():
            raise ValueError("expected an absolute path")
        return value


def config_path(environ: Mapping[str, str] | None = None, default: Path | None = None) -> Path:
    """``$FSX_STAGE_CONFIG``, else ``default``, else :data:`DEFAULT_CONFIG_PATH`."""
    env = os.environ if environ is None else environ
    override = env.get(CONFIG_ENV)
    if override:
        return Path(override)
    return default if default is not None else DEFAULT_CONFIG_PATH


def parse_config(data: Mapping[str, Any], source: str = "config") -> SiteConfig:
    """Validate already-parsed TOML data."""
    try:
        return SiteConfig.model_validate(data)
    except ValidationError as exc:
        problems = [f"{source}: {_key_path(e['loc'])}: {_reason(e)}" for e in exc.errors()]
        raise ConfigError("\n".join(problems)) from None


def load_config(path: Path | None = None) -> SiteConfig:
    """Read and validate the site configuration at ``path`` (default: :func:`config_path`)."""
    target = config_path() if path is None else path
    try:
        with target.open("rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"{target}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{target}: invalid TOML: {exc}") from None
    return parse_config(data, str(target))


def load_optional_config(
    environ: Mapping[str, str] | None = None, default: Path | None = None
) -> SiteConfig | None:
    """The site configuration, or None when no file exists at :func:`config_path`.

    An explicit ``FSX_STAGE_CONFIG`` that does not exist is an error.
    """
    env = os.environ if environ is None else environ
    target = config_path(env, default)
    if not target.exists() and not env.get(CONFIG_ENV):
        return None
    return load_config(target)


def _key_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith(("function-", "union[")) or part in ("int", "str"):
            continue  # pydantic's internal validator names
        else:
            out += f".{part}" if out else part
    return out or "(top level)"


def _reason(error: Any) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key missing"
    message = str(error["msg"])
    message = message.removeprefix("Value error, ")
    if "input" in error and kind not in ("value_error",):
        return f"{message} (got {error['input']!r})"
    return message
