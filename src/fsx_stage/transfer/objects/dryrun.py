"""``--dryrun``: say what each job would do, changing nothing (no directory, no temp file).

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
from fsx_stage.transfer.objects.context import Context, Job

Outcome = tuple[Literal["planned", "skipped"], int]


async def plan_download(ctx: Context, root_fd: int, job: Job) -> Outcome:
    if job.size < 0 and not job.rel.endswith("/"):
        head = await ctx.retry.run(lambda: ctx.store.head(job.key))
        job.size = head.size
        job.etag, job.mtime_ns = head.etag, head.mtime_ns
    if ctx.options.sync and root_fd >= 0 and not job.rel.endswith("/") and job.size >= 0:
        try:
            parent = safefs.open_parent(root_fd, safefs.split_relative(job.rel), create=False)
        except FileNotFoundError:
            return "planned", job.size
        try:
            name = job.rel.rsplit("/", 1)[-1]
            if download._up_to_date(parent, name, job, ctx.options.exact_timestamps):
                return "skipped", 0
        finally:
            os.close(parent)
    return "planned", max(job.size, 0)


async def plan_upload(ctx: Context, root_fd: int, job: Job) -> Outcome:
    if ctx.options.sync and job.size >= 0 and not job.rel.endswith("/"):
        parts = safefs.split_relative(job.rel)
        parent = safefs.open_parent(root_fd, parts, create=False)
        try:
            st = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
        finally:
            os.close(parent)
        if await upload._exists_identical(ctx, job, st):
            return "skipped", 0
    return "planned", max(job.size, 0)
