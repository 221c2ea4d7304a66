"""The ``--fsx-stage=KIND,SRC,DST[,OPTION=VALUE]...`` directive grammar.

One grammar everywhere: the SPANK option value, an ``#SBATCH`` line and
``fsx-stage check`` all go through :func:`parse_directive`. Errors are
:class:`DirectiveError` with the 1-based character position in the directive text.
The Prolog/Epilog receive the values through ``SPANK_FSX_STAGE``;
:func:`decode_spank_values` undoes the plugin's percent-encoding.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import NoReturn
from urllib.parse import unquote_to_bytes

from pydantic import BaseModel, ConfigDict

from fsx_stage.durations import EXPECTED as DURATION_EXPECTED
from fsx_stage.durations import DurationError, parse_duration
from fsx_stage.filters import Filter, FilterAction, patterns
from fsx_stage.patterns import find_pattern_error
from fsx_stage.s3url import S3Url, S3UrlError

OPTION_NAME = "--fsx-stage"
#: Bytes the SPANK plugin passes through unencoded; every other byte becomes ``%XX``.
SPANK_SAFE_BYTES = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~/:,=@+"
)
SPANK_SEPARATOR = ";"
_PATTERN_RE = re.compile(r"%[juxAa]")
_SPANK_ITEM_RE = re.compile(r"(?:[A-Za-z0-9\-._~/:,=@+]|%[0-9A-Fa-f]{2})*")


class Kind(StrEnum):
    IN = "in"
    OUT = "out"
    CHECKPOINT = "checkpoint"


class When(StrEnum):
    ALWAYS = "always"
    SUCCESS = "success"
    FAILURE = "failure"


class DirectiveError(ValueError):
    """A directive that does not parse: names the directive, the position and what was expected."""

    def __init__(self, directive: str, position: int, reason: str, *, label: str = "") -> None:
        self.directive = directive
        self.position = position
        self.reason = reason
        where = label or f"{OPTION_NAME}={printable(directive)}"
        super().__init__(f"{where}: position {position}: {reason}")


class Directive(BaseModel):
    """One parsed directive; ``src``/``dst`` still hold their ``%`` patterns."""

    model_config = ConfigDict(frozen=True)

    kind: Kind
    src: str
    dst: str
    when: When = When.ALWAYS
    filters: tuple[Filter, ...] = ()
    optional: bool = False
    keep: int | None = None  # checkpoint generations kept (docs/checkpoints.md); None: default
    every: int | None = None  # checkpoint: seconds between flushes while the job runs
    text: str

    @property
    def include(self) -> tuple[str, ...]:
        return patterns(self.filters, FilterAction.INCLUDE)

    @property
    def exclude(self) -> tuple[str, ...]:
        return patterns(self.filters, FilterAction.EXCLUDE)


def printable(text: str) -> str:
    """``text`` with control characters and lone surrogates shown as escapes."""
    return "".join(
        ascii(ch)[1:-1] if unicodedata.category(ch) in ("Cc", "Cs") else ch for ch in text
    )


@dataclass(frozen=True)
class _Field:
    """A comma-separated field with escapes resolved and each character's position."""

    value: str
    positions: tuple[int, ...]  # 1-based position in the text of each value character
    start: int  # position of the field's first character (or where it would be)
    end: int  # position just after the field

    def at(self, offset: int) -> int:
        return self.positions[offset] if offset < len(self.positions) else self.end


_KIND_WORDS = "in|out|checkpoint"
_OPTIONS = ("when", "include", "exclude", "optional", "keep", "every")
_ONCE = ("when", "optional", "keep", "every")
MAX_KEEP = 100
_BOOLEANS = {"yes": True, "true": True, "no": False, "false": False}


def parse_directive(text: str) -> Directive:
    """Parse one ``KIND,SRC,DST[,OPTION=VALUE]...`` value (without ``--fsx-stage=``)."""
    _check_characters(text)
    fields = _split_fields(text)
    kind = _parse_kind(text, fields[0])
    role_src, role_dst = _ROLES[kind]
    if len(fields) < 2:
        _fail(text, len(text) + 1, f"expected ',SRC' after KIND: SRC is {role_src.expected}")
    if len(fields) < 3:
        _fail(text, len(text) + 1, f"expected ',DST' after SRC: DST is {role_dst.expected}")
    src, dst = fields[1], fields[2]
    role_src.check(text, src, "SRC")
    role_dst.check(text, dst, "DST")
    if src.value.endswith("/") and not dst.value.endswith("/"):
        _fail(
            text,
            dst.end,
            "expected DST ending in '/': a prefix or directory SRC is copied into a "
            "prefix or directory",
        )
    options = _parse_options(text, kind, src, fields[3:])
    return Directive(kind=kind, src=src.value, dst=dst.value, text=text, **options)


def parse_directives(texts: Iterable[str]) -> list[Directive]:
    return [parse_directive(t) for t in texts]


def _fail(text: str, position: int, reason: str) -> NoReturn:
    raise DirectiveError(text, position, reason)


def _check_characters(text: str) -> None:
    for offset, ch in enumerate(text):
        category = unicodedata.category(ch)
        if ch == "\0":
            _fail(text, offset + 1, "NUL character not allowed")
        if category == "Cc":
            _fail(text, offset + 1, f"control character U+{ord(ch):04X} not allowed")
        if category == "Cs":
            _fail(text, offset + 1, f"invalid character U+{ord(ch):04X} (not valid UTF-8)")


def _split_fields(text: str) -> list[_Field]:
    """Split on unescaped commas, resolving ``\\,`` and ``\\\\``."""
    fields: list[_Field] = []
    chars: list[str] = []
    positions: list[int] = []
    start = 1
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            following = text[i + 1] if i + 1 < len(text) else ""
            if following not in (",", "\\"):
                got = f"'{printable(following)}'" if following else "the end"
                _fail(text, i + 1, f"expected '\\,' or '\\\\' after a backslash, got {got}")
            chars.append(following)
            positions.append(i + 1)
            i += 2
            continue
        if ch == ",":
            fields.append(_Field("".join(chars), tuple(positions), start, i + 1))
            chars, positions, start = [], [], i + 2
        else:
            chars.append(ch)
            positions.append(i + 1)
        i += 1
    fields.append(_Field("".join(chars), tuple(positions), start, len(text) + 1))
    return fields


def _parse_kind(text: str, field: _Field) -> Kind:
    try:
        return Kind(field.value)
    except ValueError:
        got = printable(field.value)
        _fail(text, field.start, f"expected KIND {_KIND_WORDS}, got '{got}'")


@dataclass(frozen=True)
class _Role:
    """What one side (SRC or DST) of a KIND must be."""

    s3: bool
    directory: bool  # must end in '/'
    expected: str

    def check(self, text: str, field: _Field, name: str) -> None:
        value = field.value
        if not value:
            _fail(text, field.start, f"expected {name}: {self.expected}, got nothing")
        error = find_pattern_error(value)
        if error is not None:
            _fail(text, field.at(error.offset), f"in {name}: {error}")
        if self.s3:
            _check_s3(text, field, name, self.expected)
        elif not value.startswith("/"):
            _fail(text, field.start, f"expected {name}: {self.expected}, got a relative path")
        if self.directory and not value.endswith("/"):
            _fail(text, field.end, f"expected {name} ending in '/': {self.expected}")


def _check_s3(text: str, field: _Field, name: str, expected: str) -> None:
    value = field.value
    if not value.startswith("s3://"):
        _fail(text, field.start, f"expected {name}: {expected}")
    bucket, slash, key = value[len("s3://") :].partition("/")
    if not slash:
        _fail(
            text,
            field.end,
            f"expected '/' after the bucket name in {name} (the whole bucket is s3://{bucket}/)",
        )
    try:
        # Patterns in the bucket name are checked again once expanded (plan).
        S3Url.parse("s3://" + _PATTERN_RE.sub("x0x", bucket) + "/")
    except S3UrlError as exc:
        _fail(text, field.at(len("s3://")), f"in {name}: {exc}")
    offset = len("s3://") + len(bucket) + 1
    for segment in key.split("/"):
        if segment in (".", ".."):
            _fail(text, field.at(offset), f"in {name}: S3 key segment '{segment}' not allowed")
        offset += len(segment) + 1


_ROLES: dict[Kind, tuple[_Role, _Role]] = {
    Kind.IN: (
        _Role(True, False, "an s3://bucket/key or s3://bucket/prefix/ URL"),
        _Role(False, False, "an absolute path (ending in '/' for a directory)"),
    ),
    Kind.OUT: (
        _Role(False, False, "an absolute path (ending in '/' for a directory)"),
        _Role(True, False, "an s3://bucket/key or s3://bucket/prefix/ URL"),
    ),
    Kind.CHECKPOINT: (
        _Role(False, True, "an absolute directory path ending in '/'"),
        _Role(True, True, "an s3://bucket/prefix/ URL ending in '/'"),
    ),
}


def _parse_options(text: str, kind: Kind, src: _Field, fields: list[_Field]) -> dict[str, object]:
    seen: set[str] = set()
    when = When.ALWAYS
    optional = False
    keep: int | None = None
    every: int | None = None
    filters: list[Filter] = []
    for field in fields:
        name, eq, value = field.value.partition("=")
        if not eq:
            got = f"'{printable(field.value)}'" if field.value else "nothing"
            _fail(
                text,
                field.start,
                f"expected OPTION=VALUE ({', '.join(_OPTIONS)}), got {got}",
            )
        if name not in _OPTIONS:
            _fail(
                text,
                field.start,
                f"unknown option '{printable(name)}': expected one of {', '.join(_OPTIONS)}",
            )
        value_position = field.at(len(name) + 1)
        if name in _ONCE and name in seen:
            _fail(text, field.start, f"option '{name}' given twice")
        seen.add(name)
        if name == "when":
            if kind is not Kind.OUT:
                _fail(
                    text,
                    field.start,
                    f"option 'when' applies to 'out' only (a '{kind}' directive has no "
                    "end-of-job condition)",
                )
            try:
                when = When(value)
            except ValueError:
                _fail(
                    text,
                    value_position,
                    f"expected when=always|success|failure, got '{printable(value)}'",
                )
        elif name == "keep":
            if kind is not Kind.CHECKPOINT:
                _fail(text, field.start, "option 'keep' applies to 'checkpoint' only")
            if not (value.isascii() and value.isdigit() and 1 <= int(value) <= MAX_KEEP):
                _fail(
                    text,
                    value_position,
                    f"expected keep=N (generations kept, 1 to {MAX_KEEP}), "
                    f"got '{printable(value)}'",
                )
            keep = int(value)
        elif name == "every":
            if kind is not Kind.CHECKPOINT:
                _fail(text, field.start, "option 'every' applies to 'checkpoint' only")
            try:
                every = parse_duration(value)
            except DurationError as exc:
                _fail(
                    text,
                    field.at(len(name) + 1 + exc.offset),
                    f"expected every=DURATION ({DURATION_EXPECTED}), got '{printable(value)}'",
                )
        elif name == "optional":
            if value.lower() not in _BOOLEANS:
                _fail(
                    text,
                    value_position,
                    f"expected optional=yes|no|true|false, got '{printable(value)}'",
                )
            optional = _BOOLEANS[value.lower()]
        else:
            if not value:
                _fail(text, value_position, f"expected {name}=GLOB, got an empty GLOB")
            if not src.value.endswith("/"):
                _fail(
                    text,
                    field.start,
                    f"option '{name}' needs a prefix or directory SRC ending in '/'",
                )
            filters.append(Filter(action=FilterAction(name), pattern=value))
    return {
        "when": when,
        "optional": optional,
        "keep": keep,
        "every": every,
        "filters": tuple(filters),
    }


def filter_warnings(directive: Directive) -> list[str]:
    """Warnings for a valid directive: each ``include=`` before any ``exclude=``.

    Everything is selected until an ``exclude=`` removes something, so such an
    ``include`` selects nothing more: ``include=*.h5`` alone copies everything.
    """
    label = f"{OPTION_NAME}={printable(directive.text)}"
    warnings: list[str] = []
    for field in _split_fields(directive.text)[3:]:
        name, _, glob = field.value.partition("=")
        if name == FilterAction.EXCLUDE:
            break
        if name == FilterAction.INCLUDE:
            shown = printable(glob.replace("\\", "\\\\").replace(",", "\\,"))
            warnings.append(
                f"{label}: position {field.start}: include={shown} has no effect: everything "
                "is selected until an exclude= removes something (include only matters after "
                f"an exclude); to copy only {shown}, write exclude=*,include={shown}"
            )
    return warnings


# --- SPANK transport -------------------------------------------------------------


def encode_spank_values(values: Iterable[str]) -> str:
    """Encode directive values as the SPANK plugin does (tests and tools)."""
    return SPANK_SEPARATOR.join(
        "".join(
            chr(byte) if byte in SPANK_SAFE_BYTES else f"%{byte:02X}"
            for byte in value.encode("utf-8", "surrogatepass")
        )
        for value in values
    )


def decode_spank_values(env_value: str) -> list[str]:
    """Decode ``SPANK_FSX_STAGE`` into the directive values, in order.

    An empty variable means no directives. Raises :class:`DirectiveError` naming the
    value (1-based index) when an item is not in the plugin's encoding or is not UTF-8.
    """
    if env_value == "":
        return []
    values: list[str] = []
    for index, item in enumerate(env_value.split(SPANK_SEPARATOR), start=1):
        label = f"SPANK_FSX_STAGE value {index}"
        match = _SPANK_ITEM_RE.match(item)
        if match is None or match.end() != len(item):
            bad = match.end() if match is not None else 0
            raise DirectiveError(
                item,
                bad + 1,
                f"expected a percent-encoded byte, got {printable(item[bad : bad + 3])!r}",
                label=label,
            )
        raw = unquote_to_bytes(item)
        try:
            values.append(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise DirectiveError(
                item,
                _encoded_position(item, exc.start),
                f"directive {index} is not valid UTF-8 (byte {exc.start + 1} of the value)",
                label=label,
            ) from None
    return values


def _encoded_position(item: str, byte_index: int) -> int:
    """The 1-based position in the encoded ``item`` of decoded byte ``byte_index``."""
    position = 0
    for _ in range(byte_index):
        position += 3 if item[position] == "%" else 1
    return position + 1
