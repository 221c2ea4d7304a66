"""What SRC and DST mean: direction, the local root, and what to list or walk."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fsx_stage.direction import Direction
from fsx_stage.s3url import S3Url, is_s3_url
from fsx_stage.transfer.objects.context import ObjectTransfer


class TransferUsageError(ValueError):
    """SRC/DST/options that cannot describe a transfer (the CLI's exit status 2)."""


@dataclass(frozen=True, slots=True)
class Route:
    direction: Direction
    bucket: str
    local_root: str
    named: tuple[
        ObjectTransfer, ...
    ]  # objects/files named one by one; if none, list/walk ``prefix``
    prefix: str


def resolve(src: str | Sequence[str], dst: str, recursive: bool) -> Route:
    """Work out direction, local root and what to list; raises TransferUsageError.

    Several sources (a list) are objects of one bucket downloaded into the directory
    DST, each under the last component of its key."""
    if not isinstance(src, str):
        if len(src) != 1:
            return _resolve_list(list(src), dst, recursive)
        src = src[0]
    if is_s3_url(src) == is_s3_url(dst):
        raise TransferUsageError("exactly one of SRC and DST must be an s3:// URL")
    if is_s3_url(src):
        url = S3Url.parse(src)
        if recursive:
            prefix = url.key if url.is_prefix else url.key + "/"
            return Route(Direction.DOWNLOAD, url.bucket, dst, (), prefix)
        if url.is_prefix:
            raise TransferUsageError(f"{src} is a prefix: add --recursive to copy what is under it")
        name = url.key.rsplit("/", 1)[-1]
        if dst.endswith("/") or Path(dst).is_dir():
            return Route(Direction.DOWNLOAD, url.bucket, dst, (ObjectTransfer(url.key, name),), "")
        root, _, leaf = dst.rpartition("/")
        return Route(
            Direction.DOWNLOAD,
            url.bucket,
            root or ("/" if dst.startswith("/") else "."),
            (ObjectTransfer(url.key, leaf),),
            "",
        )
    url = S3Url.parse(dst)
    # A missing SRC is not a usage error: it fails the transfer as "not_found".
    if recursive:
        if os.path.lexists(src) and not Path(src).is_dir():
            raise TransferUsageError(f"{src} is not a directory (needed with --recursive)")
        prefix = url.key if url.is_prefix else url.key + "/"
        return Route(Direction.UPLOAD, url.bucket, src, (), prefix)
    if Path(src).is_dir() and not Path(src).is_symlink():
        raise TransferUsageError(f"{src} is a directory: add --recursive to copy its contents")
    path = src.rstrip("/")
    root, _, name = path.rpartition("/")
    key = url.key + name if url.is_prefix else url.key
    return Route(
        Direction.UPLOAD,
        url.bucket,
        root or ("/" if path.startswith("/") else "."),
        (ObjectTransfer(key, name),),
        "",
    )


def _resolve_list(sources: list[str], dst: str, recursive: bool) -> Route:
    if not sources:
        raise TransferUsageError("no source given")
    if is_s3_url(dst) or not all(is_s3_url(source) for source in sources):
        raise TransferUsageError(
            "several sources are for downloads only: s3:// objects into a local directory "
            "(upload a directory with --recursive)"
        )
    if recursive:
        raise TransferUsageError("several sources are single objects: --recursive takes one prefix")
    if not dst.endswith("/") and not Path(dst).is_dir():
        raise TransferUsageError(
            f"with several sources, DST must be a directory (end it with /): {dst}"
        )
    urls = [S3Url.parse(source) for source in sources]
    bucket = urls[0].bucket
    named: dict[str, ObjectTransfer] = {}
    for url in urls:
        if url.bucket != bucket:
            raise TransferUsageError(
                f"several sources must be in one bucket: {bucket}, {url.bucket}"
            )
        if url.is_prefix:
            raise TransferUsageError(f"{url} is a prefix: copy it alone, with --recursive")
        name = url.key.rsplit("/", 1)[-1]
        if name in named:
            raise TransferUsageError(
                f"{named[name].key} and {url.key} would both be written to {dst.rstrip('/')}/{name}"
            )
        named[name] = ObjectTransfer(url.key, name)
    return Route(Direction.DOWNLOAD, bucket, dst, tuple(named.values()), "")
