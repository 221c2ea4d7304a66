"""Helpers for the transfer tests: settings pointing at the test bed, and a runner."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fsx_stage.transfer import (
    S3Settings,
    StaticCredentials,
    TransferOptions,
    TransferSummary,
    transfer,
)

Run = Callable[..., TransferSummary]


def settings_for(server: Any, endpoint_url: str | None = None, **extra: Any) -> S3Settings:
    return S3Settings(
        endpoint_url=endpoint_url or server.endpoint_url,
        region=server.region,
        addressing_style="path",
        credentials=StaticCredentials(
            access_key_id=server.access_key, secret_access_key=server.secret_key
        ),
        **extra,
    )


@pytest.fixture
def s3(s3_server: Any) -> S3Settings:
    return settings_for(s3_server)


@pytest.fixture
def run(s3: S3Settings) -> Run:
    """``run(src, dst, recursive=False, s3=..., **TransferOptions fields)``."""

    def _run(
        src: str, dst: str | Path, recursive: bool = False, s3: S3Settings = s3, **options: Any
    ) -> TransferSummary:
        options.setdefault("workers", 1)
        return transfer(
            str(src), str(dst), recursive=recursive, options=TransferOptions(**options), s3=s3
        )

    return _run


def tree(root: Path) -> dict[str, bytes]:
    """Relative path -> content of every regular file and symlink (``->target``) below root."""
    found: dict[str, bytes] = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if path.is_symlink():
            found[relative] = b"->" + os.readlink(path).encode()
        elif path.is_file():
            found[relative] = path.read_bytes()
    return found
