"""Where the jobs come from: a streamed, paginated S3 listing or a local tree walk."""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from fsx_stage.transfer.context import Job
from fsx_stage.transfer.errors import RetryPolicy, UnsafePath
from fsx_stage.transfer.fastpath import FastS3
from fsx_stage.transfer.safefs import is_temp_name, open_dir

#: Whether a key or path relative to the source passes the include/exclude filters.
Selector = Callable[[str], bool]


async def list_objects(
    client: Any,
    bucket: str,
    prefix: str,
    retry: RetryPolicy,
    keep: Selector,
    fast: FastS3 | None = None,
) -> AsyncIterator[Job]:
    """Every object under ``prefix``, one page at a time (memory does not grow with count)."""
    token: str | None = None
    while True:
        if fast is not None and fast.can_list:
            page = await retry.run(functools.partial(fast.list_objects_v2, prefix, token))
        else:
            params: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": 1000}
            if token:
                params["ContinuationToken"] = token
            page = await retry.run(functools.partial(client.list_objects_v2, **params))
        for item in page.get("Contents") or ():
            key = item["Key"]
            relative = key[len(prefix) :]
            if not relative or not keep(
                relative.rstrip("/") if relative.endswith("/") else relative
            ):
                continue
            modified = item.get("LastModified")
            yield Job(
                key=key,
                rel=relative,
                size=int(item.get("Size", -1)),
                etag=str(item.get("ETag") or "").strip('"') or None,
                mtime_ns=int(modified.timestamp() * 1_000_000_000) if modified else None,
            )
        if not page.get("IsTruncated"):
            return
        token = page.get("NextContinuationToken")
        if not token:
            return


def walk_tree(
    root: str, key_prefix: str, keep: Selector, on_error: Callable[[str, Exception], None]
) -> Iterator[Job]:
    """Regular files, symlinks (never followed) and empty directories below ``root``.

    Each directory is reached from the root component by component with ``O_NOFOLLOW``.
    """
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    pending: list[str] = [""]
    try:
        while pending:
            base = pending.pop()
            try:
                dir_fd = (
                    open_dir(root_fd, base.rstrip("/").split("/"), create=False)
                    if base
                    else os.dup(root_fd)
                )
            except FileNotFoundError:
                continue  # removed meanwhile
            except (OSError, UnsafePath) as exc:  # unreadable, or now a symlink: not followed
                on_error(key_prefix + base, exc)
                continue
            subdirs: list[str] = []
            empty = True
            try:
                entries = os.scandir(dir_fd)
            except OSError as exc:
                os.close(dir_fd)
                on_error(key_prefix + base, exc)
                continue
            try:
                with entries:
                    for entry in entries:
                        empty = False
                        name = entry.name
                        relative = base + name
                        if entry.is_dir(follow_symlinks=False):
                            subdirs.append(relative + "/")
                            continue
                        if is_temp_name(name) or not keep(relative):
                            continue
                        if entry.is_file(follow_symlinks=False):
                            st = entry.stat(follow_symlinks=False)
                            yield Job(
                                key_prefix + relative, relative, st.st_size, None, st.st_mtime_ns
                            )
                        elif entry.is_symlink():
                            yield Job(key_prefix + relative, relative)
            finally:
                os.close(dir_fd)
            if empty and base and keep(base.rstrip("/")):
                yield Job(key_prefix + base, base)
            pending.extend(sorted(subdirs, reverse=True))
    finally:
        os.close(root_fd)
