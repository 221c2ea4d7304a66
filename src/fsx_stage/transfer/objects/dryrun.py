"""``--dryrun``: say what each transfer would do, changing nothing (no directory, no temp file).

Sync's comparison is the real one (:func:`download._up_to_date`, upload's HEAD), so a
dry run lists exactly what a run would copy. ``root_fd`` is -1 when the destination
directory does not exist yet (then every download is planned). An object named on its
own (no listing gave its size) is looked up (HEAD) as a real download does: a missing one
fails the dry run as it would fail the run, and its size is what is planned.
"""

from __future__ import annotations

import os
from typing import Literal

from fsx_stage.transfer.local import safefs
from fsx_stage.transfer.objects import download, upload
from fsx_stage.transfer.objects.context import Context, ObjectTransfer

#: A dry run's event kind for an object, and the bytes a real run would move.
PlanResult = tuple[Literal["planned", "skipped"], int]


async def plan_download(ctx: Context, root_fd: int, item: ObjectTransfer) -> PlanResult:
    if item.size < 0 and not item.rel.endswith("/"):
        head = await ctx.retry.run(lambda: ctx.store.head(item.key))
        item.size = head.size
        item.etag, item.mtime_ns = head.etag, head.mtime_ns
    if ctx.options.sync and root_fd >= 0 and not item.rel.endswith("/") and item.size >= 0:
        try:
            parent = safefs.open_parent(root_fd, safefs.split_relative(item.rel), create=False)
        except FileNotFoundError:
            return "planned", item.size
        try:
            name = item.rel.rsplit("/", 1)[-1]
            if download._up_to_date(parent, name, item, ctx.options.exact_timestamps):
                return "skipped", 0
        finally:
            os.close(parent)
    return "planned", max(item.size, 0)


async def plan_upload(ctx: Context, root_fd: int, item: ObjectTransfer) -> PlanResult:
    if ctx.options.sync and item.size >= 0 and not item.rel.endswith("/"):
        parts = safefs.split_relative(item.rel)
        parent = safefs.open_parent(root_fd, parts, create=False)
        try:
            st = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
        finally:
            os.close(parent)
        if await upload._exists_identical(ctx, item, st):
            return "skipped", 0
    return "planned", max(item.size, 0)
