"""Where the objects to transfer come from: a streamed S3 listing or a local tree walk."""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator, Callable, Iterator

from fsx_stage.transfer.errors import RetryPolicy, UnsafePath
from fsx_stage.transfer.local.safefs import is_temp_name, open_dir
from fsx_stage.transfer.objects.context import ObjectTransfer
from fsx_stage.transfer.s3.store import ObjectStore, mtime_ns_of

#: Whether a key or path relative to the source passes the include/exclude filters.
Selector = Callable[[str], bool]


async def list_objects(
    store: ObjectStore, prefix: str, retry: RetryPolicy, keep: Selector
) -> AsyncIterator[ObjectTransfer]:
    """Every object under ``prefix``, one page at a time (memory does not grow with count)."""
    token: str | None = None
    while True:
        page = await retry.run(functools.partial(store.list_page, prefix, token))
        for item in page.objects:
            relative = item.key[len(prefix) :]
            if not relative or not keep(
                relative.rstrip("/") if relative.endswith("/") else relative
            ):
                continue
            yield ObjectTransfer(
                key=item.key,
                rel=relative,
                size=item.size,
                etag=item.etag or None,
                mtime_ns=mtime_ns_of(item.last_modified),
            )
        token = page.next_token
        if token is None:
            return


def walk_tree(
    root: str, key_prefix: str, keep: Selector, on_error: Callable[[str, Exception], None]
) -> Iterator[ObjectTransfer]:
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
                            yield ObjectTransfer(
                                key_prefix + relative, relative, st.st_size, None, st.st_mtime_ns
                            )
                        elif entry.is_symlink():
                            yield ObjectTransfer(key_prefix + relative, relative)
            finally:
                os.close(dir_fd)
            if empty and base and keep(base.rstrip("/")):
                yield ObjectTransfer(key_prefix + base, base)
            pending.extend(sorted(subdirs, reverse=True))
    finally:
        os.close(root_fd)
