"""The Slurm side: slurm.conf settings (``scontrol show config``) and the SPANK plugin.

The settings the hooks depend on are in docs/hooks.md ("Time budgets") and
slurm-conf-examples/slurm.conf.snippet.
"""

from __future__ import annotations

import glob
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

from fsx_stage.config import SiteConfig
from fsx_stage.doctor import Finding, fail, ok, warn
from fsx_stage.hooks.slurmctl import SLURM_BIN_DIRS, run_command, slurm_command

#: The hooks' own work besides the transfers (scontrol calls, credentials, state writes).
HOOK_MARGIN_S = 60
#: What ``scontrol show config`` prints for an unset PrologEpilogTimeout (wait forever).
UNLIMITED = 65534
PLUGIN_NAME = "fsx_stage.so"


class CommandFailed(Exception):
    """A Slurm command could not run or outlived its timeout."""


def _command(name: str) -> str | None:
    """Where the hooks find Slurm's ``name`` (see `slurmctl.slurm_command`), None if nowhere."""
    path = slurm_command(name)
    return path if Path(path).is_file() else None


def show_config(env: Mapping[str, str]) -> dict[str, str] | Finding:
    """``scontrol show config`` as ``{key: value}``, or the finding that it failed."""
    scontrol = _command("scontrol")
    if scontrol is None:
        where = ", ".join(SLURM_BIN_DIRS)
        return fail("slurm", f"scontrol is in none of {where}: the hooks cannot reach Slurm")
    try:
        proc = run_command([scontrol, "show", "config"], env, CommandFailed, "scontrol show config")
    except CommandFailed as exc:
        return fail("slurm", str(exc))
    if proc.returncode != 0:
        return fail("slurm", f"scontrol show config: {proc.stderr.strip()}: is slurmctld up?")
    return parse_show_config(proc.stdout)


def parse_show_config(text: str) -> dict[str, str]:
    """``KEY = VALUE`` lines as a dict. Slurm 24.x lists several Prolog/Epilog scripts as
    ``Prolog[0] = ...``, ``Prolog[1] = ...``: they are joined as 22.05's comma list."""
    settings: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(" = ")
        key = key.strip()
        if not sep or not key or " " in key:
            continue
        indexed = re.fullmatch(r"(\w+)\[\d+\]", key)
        if indexed and indexed.group(1) in settings:
            settings[indexed.group(1)] += "," + value.strip()
        else:
            settings[indexed.group(1) if indexed else key] = value.strip()
    return settings


def _seconds(value: str | None) -> int | None:
    match = re.match(r"^\s*(\d+)", value or "")
    return int(match.group(1)) if match else None


def settings(config: SiteConfig | None, conf: Mapping[str, str]) -> Iterator[Finding]:
    """PrologFlags, Prolog, Epilog, and (against a valid site config's budgets)
    PrologEpilogTimeout and BatchStartTimeout."""
    flags = [f.strip().lower() for f in conf.get("PrologFlags", "").split(",")]
    if "alloc" in flags:
        yield ok("PrologFlags", conf["PrologFlags"])
    else:
        yield fail(
            "PrologFlags",
            f"{conf.get('PrologFlags', '(unset)')}: add PrologFlags=Alloc so the Prolog stages "
            "inputs before the job starts (also for salloc)",
        )
    for hook in ("Prolog", "Epilog"):
        yield _hook_setting(hook, conf.get(hook, ""))
    if config is not None:
        yield from _timeouts(config, conf)


def _timeouts(config: SiteConfig, conf: Mapping[str, str]) -> Iterator[Finding]:
    budget = max(config.timeouts.stage_in, config.timeouts.flush)
    needed = int(budget) + HOOK_MARGIN_S
    hook_timeout = _seconds(conf.get("PrologEpilogTimeout"))
    if hook_timeout is None or hook_timeout >= UNLIMITED:
        yield warn(
            "PrologEpilogTimeout",
            f"unset (wait forever): set PrologEpilogTimeout={needed} "
            "(max of [timeouts] stage_in/flush + 60 s)",
        )
    elif hook_timeout < needed:
        yield fail(
            "PrologEpilogTimeout",
            f"{hook_timeout} s < [timeouts] budget {budget:.0f} s + {HOOK_MARGIN_S} s: Slurm "
            f"kills the hook and drains the node first. Set PrologEpilogTimeout={needed}, or "
            f"lower [timeouts] stage_in/flush to {hook_timeout - HOOK_MARGIN_S}",
        )
    else:
        yield ok("PrologEpilogTimeout", f"{hook_timeout} s >= {budget:.0f} s budget + margin")
    batch = _seconds(conf.get("BatchStartTimeout"))
    reference = needed if hook_timeout is None or hook_timeout >= UNLIMITED else hook_timeout
    if batch is None or batch < reference:
        yield fail(
            "BatchStartTimeout",
            f"{batch} s < {reference} s: a batch job's launch times out while its Prolog "
            f"stages; set BatchStartTimeout={reference} (>= PrologEpilogTimeout)",
        )
    else:
        yield ok("BatchStartTimeout", f"{batch} s")


def _configured_paths(value: str) -> list[Path]:
    """The programs of a Prolog/Epilog value (comma list; globs as slurmd expands them)."""
    paths: list[Path] = []
    for item in value.split(","):
        item = item.strip()
        if not item or item == "(null)":
            continue
        matches = sorted(glob.glob(item))  # noqa: PTH207 (absolute patterns) if any(c in item for c in "*?[") else [item]
        paths.extend(Path(m) for m in matches)
    return paths


def _runs_fsx_stage(path: Path, hook: str, depth: int = 1) -> bool:
    """``path`` runs ``fsx-stage HOOK``, itself or through a script it names (a wrapper)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")[:65536]
    except OSError:
        return False
    if re.search(rf'fsx-stage"?\s+{hook}\b', text):
        return True
    if depth == 0:
        return False
    for named in set(re.findall(r"(/[^\s'\"`;|&()]+)", text)):
        candidate = Path(named)
        wrapped = candidate != path and candidate.name == hook and candidate.is_file()
        if wrapped and _runs_fsx_stage(candidate, hook, depth - 1):
            return True
    return False


def _hook_setting(hook: str, value: str) -> Finding:
    lower = hook.lower()
    expected = f"{hook}=/opt/fsx-stage/libexec/fsx-stage/{lower}"
    paths = _configured_paths(value)
    if not paths:
        return fail(hook, f"not set: set {expected} (or call it from your {hook})")
    for path in paths:
        if _runs_fsx_stage(path, lower):
            return ok(hook, f"{path} runs fsx-stage {lower}")
    listed = ", ".join(str(p) for p in paths)
    return fail(
        hook,
        f"{listed} does not run fsx-stage {lower}: set {expected}, or call it from your "
        f"{hook} (docs/install.md, 'Chaining')",
    )


def _plugstack_lines(path: Path, depth: int = 2) -> Iterator[list[str]]:
    """The non-comment lines of a plugstack.conf, following ``include`` globs."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if words[0] == "include" and len(words) > 1 and depth > 0:
            for included in sorted(glob.glob(words[1])):  # noqa: PTH207
                yield from _plugstack_lines(Path(included), depth - 1)
        else:
            yield words


def plugin(conf: Mapping[str, str], env: Mapping[str, str]) -> Iterator[Finding]:
    """plugstack.conf loads fsx_stage.so (required), and sbatch offers --fsx-stage."""
    plugstack = Path(conf.get("PlugStackConfig") or "/etc/slurm/plugstack.conf")
    if plugstack.name == "(null)":
        plugstack = Path("/etc/slurm/plugstack.conf")
    entries = [w for w in _plugstack_lines(plugstack) if len(w) > 1 and w[1].endswith(PLUGIN_NAME)]
    if not entries:
        yield fail(
            "plugstack",
            f"{plugstack} does not load {PLUGIN_NAME}: add "
            f"'required /opt/fsx-stage/lib/fsx-stage/{PLUGIN_NAME}'",
        )
    else:
        kind, so = entries[0][0], Path(entries[0][1])
        if not so.is_file():
            yield fail("plugstack", f"{so} (listed in {plugstack}) does not exist: make install")
        elif kind != "required":
            yield warn(
                "plugstack",
                f"{so} is '{kind}': a host that cannot load it silently drops every job's "
                "--fsx-stage; make it 'required' once it is rolled out",
            )
        else:
            yield ok("plugstack", f"{plugstack}: required {so}")
    sbatch = _command("sbatch")
    if sbatch is None:
        yield warn("sbatch", "sbatch not found on this host: cannot check the plugin loads")
        return
    try:
        proc = run_command([sbatch, "--help"], env, CommandFailed, "sbatch --help")
    except CommandFailed as exc:
        yield fail("sbatch", str(exc))
        return
    if "--fsx-stage" in proc.stdout:
        yield ok("sbatch", "sbatch --help offers --fsx-stage (the plugin loads)")
    else:
        error = proc.stderr.strip().splitlines()
        detail = f" ({error[0]})" if error else ""
        yield fail(
            "sbatch",
            f"sbatch --help has no --fsx-stage{detail}: the plugin does not load; rebuild it "
            "against this Slurm's headers (make install SLURM_INCLUDE=...) after a Slurm upgrade",
        )
