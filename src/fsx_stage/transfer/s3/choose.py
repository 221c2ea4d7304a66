"""Choosing the store of a process, once: ``FSX_STAGE_STORE`` names it (``direct``, the
default; ``botocore``; ``crt``). The direct store falls back to botocore where its
client does not attach (``FSX_STAGE_NO_FASTPATH``, proxies, URL layouts it does not know).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

from fsx_stage.transfer.models import Encryption, S3Settings
from fsx_stage.transfer.s3.botocore_client import create_client
from fsx_stage.transfer.s3.botocore_store import BotocoreStore
from fsx_stage.transfer.s3.store import ObjectStore

STORES = ("direct", "botocore", "crt")


def store_kind() -> str:
    kind = os.environ.get("FSX_STAGE_STORE", "direct").strip().lower() or "direct"
    if kind not in STORES:
        raise ValueError(f"FSX_STAGE_STORE={kind!r}: expected one of {', '.join(STORES)}")
    return kind


@contextlib.asynccontextmanager
async def open_store(
    settings: S3Settings,
    bucket: str,
    encryption: Encryption,
    pool_size: int,
    listing: bool = True,
    kind: str | None = None,
) -> AsyncIterator[ObjectStore]:
    """The store for ``bucket``; ``listing=False``: the run lists nothing."""
    kind = kind or store_kind()
    async with create_client(settings, pool_size) as client:
        control = BotocoreStore(client, bucket, encryption)
        store: ObjectStore = control
        if kind == "crt":
            from fsx_stage.transfer.s3.crt_store import CrtStore

            store = await CrtStore.create(settings, bucket, encryption, pool_size, control)
        elif kind == "direct":
            from fsx_stage.transfer.s3.direct_client import FastS3
            from fsx_stage.transfer.s3.direct_store import DirectStore

            fast = await FastS3.attach(
                client,
                bucket,
                pool_size,
                settings.connect_timeout_s,
                settings.read_timeout_s,
                settings=settings,
                listing=listing,
            )
            if fast is not None:
                store = DirectStore(fast, control, encryption)
        try:
            yield store
        finally:
            await store.close()
