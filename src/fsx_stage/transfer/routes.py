"""What SRC and DST mean: direction, the local root, and what to list or walk."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from fsx_stage.s3url import S3Url, is_s3_url
from fsx_stage.transfer.context import Job

Direction = Literal["download", "upload"]


class TransferUsageError(ValueError):
    """SRC/DST/options that cannot describe a transfer (the CLI's exit status 2)."""


@dataclass(frozen=True, slots=True)
class Route:
    direction: Direction
    bucket: str
    local_root: str
    single: Job | None  # one object/file; otherwise list ``prefix`` / walk ``local_root``
    prefix: str


def resolve(src: str, dst: str, recursive: bool) -> Route:
    """Work out direction, local root and what to list; raises TransferUsageError."""
    if is_s3_url(src) == is_s3_url(dst):
        raise TransferUsageError("exactly one of SRC and DST must be an s3:// URL")
    if is_s3_url(src):
        url = S3Url.parse(src)
        if recursive:
            prefix = url.key if url.is_prefix else url.key + "/"
            return Route("download", url.bucket, dst, None, prefix)
        if url.is_prefix:
            raise TransferUsageError(f"{src} is a prefix: add --recursive to copy what is under it")
        name = url.key.rsplit("/", 1)[-1]
        if dst.endswith("/") or Path(dst).is_dir():
            return Route("download", url.bucket, dst, Job(url.key, name), "")
        root, _, leaf = dst.rpartition("/")
        return Route(
            "download",
            url.bucket,
            root or ("/" if dst.startswith("/") else "."),
            Job(url.key, leaf),
            "",
        )
    url = S3Url.parse(dst)
    # A missing SRC is not a usage error: it fails the transfer as "not_found".
    if recursive:
        if os.path.lexists(src) and not Path(src).is_dir():
            raise TransferUsageError(f"{src} is not a directory (needed with --recursive)")
        prefix = url.key if url.is_prefix else url.key + "/"
        return Route("upload", url.bucket, src, None, prefix)
    if Path(src).is_dir() and not Path(src).is_symlink():
        raise TransferUsageError(f"{src} is a directory: add --recursive to copy its contents")
    path = src.rstrip("/")
    root, _, name = path.rpartition("/")
    key = url.key + name if url.is_prefix else url.key
    return Route(
        "upload", url.bucket, root or ("/" if path.startswith("/") else "."), Job(key, name), ""
    )
