"""A site configuration for hook tests: SeaweedFS, a scratch tree, a state directory."""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.testbed.ports import free_port


@dataclass
class Site:
    """Everything a hook test needs on disk; ``config`` is the TOML file."""

    root: Path  # root-owned, world-traversable
    scratch: Path  # the scratch base; per-user directories under it
    state_dir: Path
    log_file: Path
    config: Path
    credentials: Path

    def user_dir(self, user: str) -> Path:
        """The user's scratch directory, owned by the user (as on FSx)."""
        path = self.scratch / user
        if not path.exists():
            entry = pwd.getpwnam(user)
            path.mkdir()
            os.chown(path, entry.pw_uid, entry.pw_gid)
            path.chmod(0o755)
        return path

    def write_config(
        self,
        endpoint_url: str,
        buckets: list[str],
        *,
        scratch_after_flush: str = "keep",
        stage_in_budget: float = 120,
        flush_budget: float = 120,
        workers: int = 1,
        multipart_threshold: str = "64MiB",
        top_level: str = "",
        extra: str = "",
    ) -> Path:
        rules = "".join(
            f'\n[[s3.allow]]\nbucket = "{b}"\nusers = ["*"]\naccess = ["read", "write"]\n'
            for b in buckets
        )
        self.config.write_text(
            f"""scratch_roots = ["{self.scratch}/{{user}}/"]
scratch_after_flush = "{scratch_after_flush}"
state_dir = "{self.state_dir}"
{top_level}
[log]
destination = "{self.log_file}"
level = "info"

[transfer]
workers = {workers}
max_concurrency = 8
multipart_threshold = "{multipart_threshold}"

[timeouts]
stage_in = {stage_in_budget}
flush = {flush_budget}

[s3]
endpoint_url = "{endpoint_url}"
region = "us-east-1"
addressing_style = "path"
credentials_file = "{self.credentials}"
max_attempts = 2
connect_timeout = 2
read_timeout = 20
{rules}{extra}"""
        )
        self.config.chmod(0o644)
        return self.config

    def write_unreachable_config(self, buckets: list[str], **options: Any) -> Path:
        """The config with an S3 endpoint nobody listens on: an S3 outage for the hooks."""
        return self.write_config(f"http://127.0.0.1:{free_port()}", buckets, **options)

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def make_site(access_key: str, secret_key: str, config: Path | None = None) -> Site:
    """A fresh site tree in /tmp; ``config`` is where the TOML goes (default: inside it)."""
    root = Path(tempfile.mkdtemp(prefix="fsx-site-"))
    root.chmod(0o755)
    scratch = root / "fsx"
    scratch.mkdir(mode=0o755)
    scratch.chmod(0o755)
    private = root / "etc"
    private.mkdir(mode=0o755)
    credentials = private / "aws-credentials"
    credentials.write_text(
        f"[default]\naws_access_key_id = {access_key}\naws_secret_access_key = {secret_key}\n"
    )
    credentials.chmod(0o600)
    return Site(
        root=root,
        scratch=scratch,
        state_dir=root / "state",
        log_file=root / "log" / "fsx-stage.log",
        config=config or private / "fsx-stage.toml",
        credentials=credentials,
    )
