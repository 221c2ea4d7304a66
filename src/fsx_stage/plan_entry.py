"""One planned transfer and its direction, from the directive to the transfer worker.

The direction is decided once, when the directive is planned (`direction_of`): every
later step asks the entry which side is S3 and which is scratch instead of looking at
the URLs again.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from fsx_stage.direction import Direction
from fsx_stage.directives import Kind, When
from fsx_stage.filters import Filter, FilterAction, patterns, selects


def direction_of(kind: Kind) -> Direction:
    """A directive's direction as written (a checkpoint restore is its reverse)."""
    return Direction.DOWNLOAD if kind is Kind.IN else Direction.UPLOAD


def with_direction(data: Any) -> Any:
    """A record saved before entries carried their direction (state files, pending
    flushes of earlier versions): its direction is the one its source implies."""
    if isinstance(data, dict) and "direction" not in data and "source" in data:
        return {**data, "direction": Direction.of_source(str(data["source"]))}
    return data


class Sides:
    """``s3_side``/``scratch_side`` of a model with ``direction``, ``source``, ``destination``."""

    direction: Direction
    source: str
    destination: str

    @property
    def is_download(self) -> bool:
        return self.direction is Direction.DOWNLOAD

    @property
    def s3_side(self) -> str:
        return self.source if self.is_download else self.destination

    @property
    def scratch_side(self) -> str:
        return self.destination if self.is_download else self.source


class PlanEntry(Sides, BaseModel):
    """One transfer: ``source`` to ``destination``, each an ``s3://`` URL or an absolute path.

    Both end in ``/`` (prefix/directory, copied recursively through ``filters``) or
    neither does (one object/file; a directory DST has already been resolved to
    DST/basename). Local paths are lexically normalised.
    """

    model_config = ConfigDict(frozen=True)

    index: int  # 1-based position among the job's directives
    directive: str  # the directive text as written
    kind: Kind
    direction: Direction
    source: str
    destination: str
    when: When = When.ALWAYS
    filters: tuple[Filter, ...] = ()
    optional: bool = False
    # Checkpoints: generations kept (docs/checkpoints.md; every checkpoint of a new plan has
    # one, None only in plans saved by earlier versions) and seconds between the flushes
    # the node's agent makes while the job runs (None: only on request and at the end).
    keep: int | None = None
    every: int | None = None

    @model_validator(mode="before")
    @classmethod
    def legacy_direction(cls, data: Any) -> Any:
        return with_direction(data)

    @property
    def is_prefix(self) -> bool:
        return self.source.endswith("/")

    @property
    def include(self) -> tuple[str, ...]:
        return patterns(self.filters, FilterAction.INCLUDE)

    @property
    def exclude(self) -> tuple[str, ...]:
        return patterns(self.filters, FilterAction.EXCLUDE)

    def selects(self, relative: str) -> bool:
        """Whether a key/path relative to the source prefix passes the filters."""
        return selects(relative, self.filters)

    def reversed(self) -> PlanEntry:
        """The same entry the other way round (a checkpoint restored from its DST)."""
        return self.model_copy(
            update={
                "source": self.destination,
                "destination": self.source,
                "direction": self.direction.reverse(),
            }
        )
