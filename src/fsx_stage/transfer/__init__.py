"""The async S3 <-> filesystem transfer core (aiobotocore + uvloop).

Entry points: :func:`transfer` (synchronous) and :func:`transfer_async`. The layers, each
importing only those below it: :mod:`.run` (running a transfer), :mod:`.objects` (the
objects to move, moving one), then :mod:`.local` (the filesystem) and :mod:`.s3` (object
storage), all on the shared :mod:`.models` (settings, options, results) and :mod:`.errors`.

The names below load on first use (PEP 562), so importing this package loads neither
aiobotocore nor the AWS CRT.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fsx_stage.transfer.models import (
        Encryption,
        S3Settings,
        Secret,
        StaticCredentials,
        StripeRule,
        TransferEvent,
        TransferFailure,
        TransferOptions,
        TransferSummary,
    )
    from fsx_stage.transfer.objects.routes import TransferUsageError
    from fsx_stage.transfer.run.engine import transfer, transfer_async

_HOMES = {
    "Encryption": "fsx_stage.transfer.models",
    "S3Settings": "fsx_stage.transfer.models",
    "Secret": "fsx_stage.transfer.models",
    "StaticCredentials": "fsx_stage.transfer.models",
    "StripeRule": "fsx_stage.transfer.models",
    "TransferEvent": "fsx_stage.transfer.models",
    "TransferFailure": "fsx_stage.transfer.models",
    "TransferOptions": "fsx_stage.transfer.models",
    "TransferSummary": "fsx_stage.transfer.models",
    "TransferUsageError": "fsx_stage.transfer.objects.routes",
    "transfer": "fsx_stage.transfer.run.engine",
    "transfer_async": "fsx_stage.transfer.run.engine",
}

__all__ = [
    "Encryption",
    "S3Settings",
    "Secret",
    "StaticCredentials",
    "StripeRule",
    "TransferEvent",
    "TransferFailure",
    "TransferOptions",
    "TransferSummary",
    "TransferUsageError",
    "transfer",
    "transfer_async",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])
