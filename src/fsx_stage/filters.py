"""``include=GLOB`` / ``exclude=GLOB`` filters with ``aws s3 sync`` semantics.

Every object or file is selected unless a filter says otherwise; the filters are
applied in the order written and the last one that matches decides. A glob matches
the key (or path) relative to the directive's prefix or directory, case-sensitively,
with ``*`` crossing ``/`` as in the AWS CLI (``fnmatch``: ``*``, ``?``, ``[seq]``,
``[!seq]``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from fnmatch import fnmatchcase


class FilterAction(StrEnum):
    INCLUDE = "include"
    EXCLUDE = "exclude"


@dataclass(frozen=True, slots=True)
class Filter:
    """One ``include=`` or ``exclude=`` option (a dataclass: the transfer core's start-up
    does not import pydantic; pydantic models embed it as they would one of their own)."""

    action: FilterAction
    pattern: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "action", FilterAction(self.action))
        if not isinstance(self.pattern, str):
            raise ValueError(f"Filter.pattern: expected a str, got {self.pattern!r}")

    def matches(self, relative: str) -> bool:
        return fnmatchcase(relative, self.pattern)


def patterns(filters: Iterable[Filter], action: FilterAction) -> tuple[str, ...]:
    """The patterns of ``filters`` with ``action``, in order."""
    return tuple(f.pattern for f in filters if f.action is action)


def selects(relative: str, filters: Iterable[Filter]) -> bool:
    """Whether ``relative`` (a key or path below the prefix) passes ``filters``."""
    selected = True
    for item in filters:
        if item.matches(relative):
            selected = item.action is FilterAction.INCLUDE
    return selected
