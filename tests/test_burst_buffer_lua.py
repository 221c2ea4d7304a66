"""slurm-conf-examples/burst_buffer.lua in the Lua 5.1 that Slurm links (liblua5.1), no Slurm.

Every asynchronous hook runs exactly one ``sudo -n fsx-stage bb PHASE JOBID`` and returns
its verdict, with the 22.05 and the 24.x argument lists alike; the instant hooks never
fork. ``io.popen`` is replaced by a recorder that answers with a chosen last line.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
from pathlib import Path

import pytest

LUA = Path(__file__).resolve().parents[1] / "slurm-conf-examples" / "burst_buffer.lua"
BB = "/opt/fsx-stage/bin/fsx-stage"


def _liblua() -> ctypes.CDLL:
    for name in ("liblua5.1.so.0", ctypes.util.find_library("lua5.1")):
        if name:
            try:
                return ctypes.CDLL(name)
            except OSError:
                continue
    pytest.skip("liblua5.1 (Slurm's Lua) is not installed")


# Calls the hooks as Slurm would; prints one JSON line per call: the commands it ran and
# what the hook returned.
_HARNESS = r"""
slurm = {SUCCESS = 0, ERROR = -1, log_error = function(...) end}
local commands = {}
local answer = "OK"
io.popen = function(command)
    table.insert(commands, command)
    return {read = function() return "some log\n" .. answer .. "\n" end,
            close = function() end}
end
local function q(s)
    s = string.gsub(tostring(s), "\\", "\\\\")
    s = string.gsub(s, '"', '\\"')
    s = string.gsub(s, "\n", "\\n")
    return '"' .. s .. '"'
end
local function call(name, reply, ...)
    commands = {}
    answer = reply
    local rc, msg = _G[name](...)
    local quoted = {}
    for i = 1, #commands do quoted[i] = q(commands[i]) end
    RESULTS = RESULTS .. "{" .. '"hook":' .. q(name) .. ',"rc":' .. tostring(rc)
        .. ',"msg":' .. q(msg or "") .. ',"commands":[' .. table.concat(quoted, ",") .. "]}\n"
end
RESULTS = ""
"""


def run_lua(calls: str) -> list[dict[str, object]]:
    lib = _liblua()
    lib.luaL_newstate.restype = ctypes.c_void_p
    lib.lua_tolstring.restype = ctypes.c_char_p
    state = ctypes.c_void_p(lib.luaL_newstate())
    lib.luaL_openlibs(state)
    chunk = (_HARNESS + LUA.read_text() + calls).encode()
    assert lib.luaL_loadbuffer(state, chunk, len(chunk), b"burst_buffer.lua") == 0, (
        lib.lua_tolstring(state, -1, None)
    )
    assert lib.lua_pcall(state, 0, 0, 0) == 0, lib.lua_tolstring(state, -1, None)
    lib.lua_getfield(state, -10002, b"RESULTS")  # LUA_GLOBALSINDEX in 5.1
    text = lib.lua_tolstring(state, -1, None).decode()
    lib.lua_close(state)
    return [json.loads(line) for line in text.splitlines()]


def _command(phase: str, job_id: int, extra: str = "") -> str:
    return f"sudo -n {BB} bb {phase} {job_id}{extra} 2>&1 </dev/null"


@pytest.mark.parametrize(
    ("hook", "phase"),
    [
        ("slurm_bb_data_in", "data_in"),
        ("slurm_bb_test_data_in", "test_data_in"),
        ("slurm_bb_data_out", "data_out"),
        ("slurm_bb_test_data_out", "test_data_out"),
    ],
)
def test_each_phase_hook_runs_one_command_with_both_generations_arguments(
    hook: str, phase: str
) -> None:
    results = run_lua(
        f"""
call("{hook}", "OK", "41", "/state/job.41/script", "1001", "1001")  -- 22.05
call("{hook}", "BUSY", 42, "/state/job.42/script", 1001, 1001, {{}})  -- 24.x: job_info
call("{hook}", "ERROR fsx-stage: job 43 waits for its data", "43", "/s", "1", "1", {{}})
call("{hook}", "Traceback (most recent call last):", "44", "/s", "1", "1")
"""
    )
    assert [r["commands"] for r in results] == [[_command(phase, n)] for n in (41, 42, 43, 44)]
    assert [(r["rc"], r["msg"]) for r in results] == [
        (0, ""),
        (0, "BUSY"),
        (-1, "fsx-stage: job 43 waits for its data"),
        (-1, f"fsx-stage bb {phase}: no verdict (see slurmctld log)"),
    ]


def test_teardown_passes_hurry_on() -> None:
    results = run_lua(
        """
call("slurm_bb_job_teardown", "OK", "7", "/s", "true", "1", "1")
call("slurm_bb_job_teardown", "OK", "8", "/s", "false", "1", "1", {})
"""
    )
    assert [r["commands"] for r in results] == [
        [_command("teardown", 7, " --hurry")],
        [_command("teardown", 8)],
    ]


def test_a_job_id_that_is_not_a_number_runs_nothing() -> None:
    [result] = run_lua('call("slurm_bb_data_out", "OK", "7; reboot", "/s", "1", "1")')
    assert result["commands"] == [] and result["rc"] == -1
    assert "bad job id" in str(result["msg"])


def test_instant_and_unused_hooks_never_fork() -> None:
    results = run_lua(
        """
call("slurm_bb_job_process", "OK", "/s", "1", "1", {})
call("slurm_bb_pools", "OK")
call("slurm_bb_setup", "OK", "9", "1", "1", "pool", "0", "/s")
call("slurm_bb_real_size", "OK", "9", "1", "1")
call("slurm_bb_pre_run", "OK", "9", "/s", "1", "1")
call("slurm_bb_post_run", "OK", "9", "/s", "1", "1")
"""
    )
    assert [(r["rc"], r["commands"]) for r in results] == [(0, [])] * 6


def test_get_status_names_the_job_when_given() -> None:
    results = run_lua(
        """
call("slurm_bb_get_status", "OK", "bbstat", "12")
call("slurm_bb_get_status", "OK")
"""
    )
    assert [r["commands"] for r in results] == [
        [f"sudo -n {BB} bb status 12 2>&1 </dev/null"],
        [f"sudo -n {BB} bb status 2>&1 </dev/null"],
    ]
    assert results[0]["msg"] == "some log\nOK\n"
