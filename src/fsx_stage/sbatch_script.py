"""Reading ``#SBATCH`` options from a batch script the way sbatch does.

sbatch reads lines starting with ``#SBATCH`` (or the deprecated ``#SLURM``) until
the first line that is neither blank nor a comment (the ``#!`` line is a comment);
later ``#SBATCH`` lines are ignored. Each line is split into arguments like
sbatch's ``_get_argument``: whitespace separates, ``'...'`` and ``"..."`` group, a
backslash makes the next character literal (also inside quotes) and is removed, an
unquoted ``#`` starts a comment. The arguments of all lines form one command line,
so ``--fsx-stage VALUE`` may take its value from the next argument.

Because sbatch removes one level of backslashes, a directive's ``\\,`` (escaped
comma) is written ``\\\\,`` on an ``#SBATCH`` line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAGIC_WORDS = ("#SBATCH", "#SLURM")
_WHITESPACE = " \t\n\v\f\r"


@dataclass(frozen=True)
class Argument:
    line: int
    text: str


@dataclass(frozen=True)
class ScriptProblem:
    line: int
    message: str


@dataclass
class ScriptOptions:
    """What ``fsx-stage check`` needs from a script header."""

    directives: list[Argument] = field(default_factory=list)  # --fsx-stage values
    job_name: str | None = None
    account: str | None = None
    array: str | None = None
    errors: list[ScriptProblem] = field(default_factory=list)
    warnings: list[ScriptProblem] = field(default_factory=list)


def split_line(text: str) -> tuple[list[str], str | None]:
    """Split the part of an ``#SBATCH`` line after the magic word into arguments.

    Returns the arguments and an error message (sbatch's fatal errors) or None.
    """
    args: list[str] = []
    i = 0
    while True:
        while i < len(text) and text[i] in _WHITESPACE:
            i += 1
        if i == len(text):
            return args, None
        if text[i] == ":":
            return args, "unexpected ':' (sbatch refuses this line)"
        chars: list[str] = []
        quote = ""
        escaped = False
        while i < len(text) and (quote or text[i] not in _WHITESPACE):
            ch = text[i]
            i += 1
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
                continue
            elif quote:
                if ch == quote:
                    quote = ""
                    continue
            elif ch in "\"'":
                quote = ch
                continue
            elif ch == "#":
                i = len(text)  # the rest of the line is a comment
                break
            chars.append(ch)
        if quote:
            return args, f"unmatched {quote} (sbatch refuses this line)"
        if not chars:
            # sbatch stops reading the line at an argument that came out empty.
            return args, None
        args.append("".join(chars))


def header_arguments(script: str) -> tuple[list[Argument], list[ScriptProblem], list[int]]:
    """The header's arguments, sbatch's fatal errors, and ignored ``#SBATCH`` line numbers."""
    arguments: list[Argument] = []
    errors: list[ScriptProblem] = []
    ignored: list[int] = []
    in_header = True
    for number, line in enumerate(script.split("\n"), start=1):
        magic = next((w for w in MAGIC_WORDS if line.startswith(w)), None)
        if not in_header:
            if magic is not None and "--fsx" in line:
                ignored.append(number)
            continue
        if magic is None:
            stripped = line.lstrip(_WHITESPACE)
            if stripped and not stripped.startswith("#"):
                in_header = False
            continue
        args, error = split_line(line[len(magic) :])
        arguments.extend(Argument(number, a) for a in args)
        if error is not None:
            errors.append(ScriptProblem(number, error))
    return arguments, errors, ignored


_VALUE_OPTIONS = {
    "--job-name": "job_name",
    "-J": "job_name",
    "--account": "account",
    "-A": "account",
    "--array": "array",
    "-a": "array",
}


def read_options(script: str) -> ScriptOptions:
    """The ``--fsx-stage`` values (with their lines) and the job name/account/array."""
    arguments, errors, ignored = header_arguments(script)
    result = ScriptOptions(errors=list(errors))
    result.warnings.extend(
        ScriptProblem(n, "#SBATCH line after the first command: sbatch ignores it") for n in ignored
    )
    i = 0
    while i < len(arguments):
        arg = arguments[i]
        text = arg.text
        i += 1
        if text == "--":
            break
        name, eq, value = text.partition("=") if text.startswith("--") else (text, "", "")
        if name == "--fsx-stage":
            if not eq:
                if i == len(arguments):
                    result.errors.append(ScriptProblem(arg.line, "--fsx-stage requires a value"))
                    break
                arg, i = arguments[i], i + 1
                value = arg.text
            result.directives.append(Argument(arg.line, value))
        elif name.startswith("--fsx"):
            result.errors.append(
                ScriptProblem(
                    arg.line,
                    f"unknown option {name!r}: write the full option name --fsx-stage",
                )
            )
        elif name in _VALUE_OPTIONS or (len(text) > 2 and text[:2] in ("-J", "-A", "-a")):
            attribute = _VALUE_OPTIONS.get(name) or _VALUE_OPTIONS[text[:2]]
            if name.startswith("--") and eq:
                pass
            elif name in _VALUE_OPTIONS:
                if i == len(arguments):
                    break
                value, i = arguments[i].text, i + 1
            else:
                value = text[2:]
            setattr(result, attribute, value)
    return result


def first_array_index(spec: str) -> int | None:
    """The first task index of an ``--array`` spec such as ``1-10:2%4``."""
    match = re.match(r"\s*(\d+)", spec)
    return int(match.group(1)) if match else None
