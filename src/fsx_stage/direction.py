"""Which way a transfer goes: the one direction type of plans, hooks and the transfer core.

Standard library only: `fsx-stage cp` imports it on its start-up path.
"""

from __future__ import annotations

from enum import StrEnum

from fsx_stage.s3url import is_s3_url


class Direction(StrEnum):
    DOWNLOAD = "download"  # S3 to local/scratch: stage-in, checkpoint restore
    UPLOAD = "upload"  # local/scratch to S3: results, checkpoint flush

    @classmethod
    def of_source(cls, source: str) -> Direction:
        """The direction of a copy from ``source`` (an ``s3://`` URL or a path)."""
        return cls.DOWNLOAD if is_s3_url(source) else cls.UPLOAD

    def reverse(self) -> Direction:
        return Direction.UPLOAD if self is Direction.DOWNLOAD else Direction.DOWNLOAD
