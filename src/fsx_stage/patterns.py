"""Slurm filename patterns (``%j``, ``%u``, ``%x``, ``%A``, ``%a``, ``%%``) in directive paths.

The expansion follows what slurmstepd does for ``sbatch --output`` file names, so the
same pattern names the same thing in ``--output`` and ``--fsx-stage``: for a job that
is not part of an array, ``%A`` is the job id and ``%a`` is Slurm's NO_VAL array index,
``4294967294``. Field widths (``%4j``) and the other stdio letters (``%N``, ``%t``...)
are not supported: they mean nothing before the job runs on a node.
"""

from __future__ import annotations

from collections.abc import Mapping

PATTERN_LETTERS = "juxAa%"
#: Slurm's ``NO_VAL`` (0xfffffffe): what ``%a`` gives for a job outside an array.
NO_VAL_ARRAY_TASK_ID = 4294967294


class PatternError(ValueError):
    """A ``%`` not followed by a known pattern letter; ``offset`` is 0-based in the text."""

    def __init__(self, offset: int, message: str) -> None:
        super().__init__(message)
        self.offset = offset


def find_pattern_error(text: str) -> PatternError | None:
    """The first invalid ``%`` sequence in ``text``, or None when every one is valid."""
    i = 0
    while i < len(text):
        if text[i] == "%":
            if i + 1 == len(text):
                return PatternError(
                    i, "'%' at the end: expected %j, %u, %x, %A, %a or %% (a literal '%')"
                )
            if text[i + 1] not in PATTERN_LETTERS:
                return PatternError(
                    i,
                    f"unknown pattern '%{text[i + 1]}': expected %j, %u, %x, %A, %a "
                    "or %% (a literal '%')",
                )
            i += 2
        else:
            i += 1
    return None


def expand(text: str, values: Mapping[str, str]) -> str:
    """Replace each ``%<letter>`` in ``text`` by ``values[letter]`` (``%%`` gives ``%``).

    ``text`` must have passed :func:`find_pattern_error`.
    """
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "%":
            letter = text[i + 1]
            out.append("%" if letter == "%" else values[letter])
            i += 2
        else:
            out.append(char)
            i += 1
    return "".join(out)


def has_patterns(text: str) -> bool:
    return "%" in text
