"""Durations as users and admins write them: ``90s``, ``30m``, ``2h``, ``1h30m``, ``1d``."""

from __future__ import annotations

import re

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
EXPECTED = "a duration such as 90s, 30m, 2h or 1h30m (units s, m, h, d)"
_PART_RE = re.compile(r"([0-9]+)([smhd])")


class DurationError(ValueError):
    """Not a duration; ``offset`` is the 0-based index of the first character that is wrong."""

    def __init__(self, text: str, offset: int) -> None:
        self.text, self.offset = text, offset
        super().__init__(f"expected {EXPECTED}, got {text!r}")


def parse_duration(text: str) -> int:
    """Seconds in ``text``: one or more NUMBER+UNIT parts, largest unit first, > 0."""
    seconds, offset, last = 0, 0, None
    while offset < len(text):
        match = _PART_RE.match(text, offset)
        if match is None:
            digits = re.match(r"[0-9]*", text[offset:])
            raise DurationError(text, offset + (digits.end() if digits else 0))
        unit = UNITS[match.group(2)]
        if last is not None and unit >= last:
            raise DurationError(text, match.start(2))
        seconds += int(match.group(1)) * unit
        last, offset = unit, match.end()
    if seconds <= 0:
        raise DurationError(text, 0)
    return seconds


def format_duration(seconds: int) -> str:
    """The shortest text :func:`parse_duration` reads back as ``seconds``."""
    parts = []
    for unit, size in sorted(UNITS.items(), key=lambda item: -item[1]):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"
