"""The async S3 <-> filesystem transfer core (aiobotocore + uvloop).

Entry points: :func:`transfer` (synchronous) and :func:`transfer_async`.
"""

from fsx_stage.transfer.engine import TransferUsageError, transfer, transfer_async
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
