"""``sync --delete``: remove destination items the source does not have (``aws s3 sync``).

The mover records each selected source path (relative to SRC) while the listing streams;
then the destination is listed (S3) or walked (local, ``O_NOFOLLOW`` from the root) with
the same filters, so excluded items are never deleted. Local files are unlinked relative
to their parent directory's fd: nothing outside the destination tree, no symlink followed.
Directories are left in place (as ``aws s3 sync``). Each removal is a ``deleted`` event
(in a dry run nothing is removed).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

from fsx_stage.direction import Direction
from fsx_stage.filters import selects
from fsx_stage.transfer.errors import classify
from fsx_stage.transfer.local import safefs
from fsx_stage.transfer.models import TransferEvent
from fsx_stage.transfer.objects.context import Context
from fsx_stage.transfer.objects.routes import Route
from fsx_stage.transfer.objects.sources import list_objects, walk_tree


async def delete_extra(ctx: Context, route: Route, root_fd: int, seen: set[str]) -> None:
    filters = ctx.options.filters

    def keep(relative: str) -> bool:
        return selects(relative, filters)

    report: Callable[[TransferEvent], None] = ctx.report
    if route.direction is Direction.DOWNLOAD:
        if root_fd < 0:
            return

        def unreadable(key: str, exc: Exception) -> None:
            category, reason = classify(exc)
            report(TransferEvent("failed", key, 0, -1, reason, category))

        extra = [
            item.rel
            for item in walk_tree(route.local_root, "", keep, unreadable)
            if not item.rel.endswith("/") and item.rel not in seen
        ]
        for rel in extra:
            try:
                if not ctx.options.dryrun:
                    _unlink(root_fd, rel)
                report(TransferEvent("deleted", rel))
            except Exception as exc:
                category, reason = classify(exc)
                report(TransferEvent("failed", rel, 0, -1, reason, category))
        return
    listing = list_objects(ctx.store, route.prefix, ctx.retry, keep)
    keys = [item.key async for item in listing if item.rel not in seen]
    for key in keys:
        try:
            if not ctx.options.dryrun:
                await ctx.retry.run(functools.partial(ctx.store.delete, key))
            report(TransferEvent("deleted", key))
        except Exception as exc:
            category, reason = classify(exc)
            report(TransferEvent("failed", key, 0, -1, reason, category))


def _unlink(root_fd: int, rel: str) -> None:
    parts = safefs.split_relative(rel)
    parent = safefs.open_parent(root_fd, parts, create=False)
    try:
        os.unlink(parts[-1], dir_fd=parent)
    finally:
        os.close(parent)
