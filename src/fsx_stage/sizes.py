"""The one size grammar of the CLI and the site configuration: bytes, or a number with
``K``/``M``/``G``/``T`` and an optional ``iB``/``B``, all binary (``16KB`` = ``16KiB``)."""

from __future__ import annotations

import re

_SIZE_RE = re.compile(r"^\s*(\d+)\s*([KMGT]?)(I?B?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """``8MiB``, ``64M``, ``16KB``, ``1g`` or plain bytes; ``ValueError`` otherwise."""
    match = _SIZE_RE.match(text)
    if not match or (match.group(3) and not match.group(2) and match.group(3).lower() != "b"):
        raise ValueError(f"expected a size like 8MiB, 64M or 1048576, got {text!r}")
    return int(match.group(1)) * _UNITS[match.group(2).upper()]
