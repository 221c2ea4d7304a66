"""``include=GLOB`` / ``exclude=GLOB`` filters with ``aws s3 sync`` semantics.

Every object or file is selected unless a filter says otherwise; the filters are
applied in the order written and the last one that matches decides. A glob matches
the key (or path) relative to the directive's prefix or directory, case-sensitively,
with ``*`` crossing ``/`` as in the AWS CLI (``fnmatch``: ``*``, ``?``, ``[seq]``,
``[!seq]``).
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from fnmatch import fnmatchcase

from pydantic import BaseModel, ConfigDict


class FilterAction(StrEnum):
    INCLUDE = "include"
    EXCLUDE = "exclude"


class Filter(BaseModel):
    """One ``include=`` or ``exclude=`` option."""

    model_config = ConfigDict(frozen=True)

    action: FilterAction
    pattern: str

    def matches(self, relative: str) -> bool:
        return fnmatchcase(relative, self.pattern)


def selects(relative: str, filters: Iterable[Filter]) -> bool:
    """Whether ``relative`` (a key or path below the prefix) passes ``filters``."""
    selected = True
    for item in filters:
        if item.matches(relative):
            selected = item.action is FilterAction.INCLUDE
    return selected
