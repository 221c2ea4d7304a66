"""The transfer tests' S3 settings fixture, shared with the checkpoint tests."""

from tests.transfer.conftest import s3

__all__ = ["s3"]
