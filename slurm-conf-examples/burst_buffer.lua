--[[
fsx-stage burst_buffer/lua mode (see docs/modes.md): stage a job's inputs in while it
is PENDING and flush its results after its nodes are released.

Thin on purpose: every asynchronous hook runs one command,

    sudo -n FSX_STAGE_BB PHASE JOBID

and returns its verdict. All logic (directives, policy, privilege drop, state,
pending flushes) lives in Python (`fsx-stage bb`), which re-derives the user and the
directives from Slurm and trusts nothing but the job id. The command prints its
verdict as its last stdout line:

    OK                 the phase is done (or was done before: every phase is idempotent)
    BUSY               24.05+ test_data_in/test_data_out: still running, ask again
    ERROR <message>    Slurm shows <message> as the job's reason and in its SystemComment;
                       after data_in it holds the job and `scontrol release JOBID` runs
                       the phase again (22.05 does not hold a job after a failed
                       data_out: its data stays pending for `fsx-stage flush --pending`)

No verdict line (sudo refused, crash) is an ERROR with the command's output.

Slurm 22.05 calls slurm_bb_data_in/data_out and waits for them: they block until the
work is done. 24.05+ call them too, then poll slurm_bb_test_data_in/test_data_out: the
same blocking data_in/data_out serve both generations, and the test hooks answer from the
saved state (OK once the phase is done, BUSY while another run of it holds the job).

slurm_bb_job_process, slurm_bb_pools and slurm_bb_paths run inside slurmctld with its
locks held: they never fork. slurm_bb_paths reads the environment file the stage-in
wrote (PATHS_DIR/JOBID.env).

`make install` replaces the two paths below.
--]]

local FSX_STAGE_BB = "/opt/fsx-stage/bin/fsx-stage"
local PATHS_DIR = "/var/spool/fsx-stage/bb-paths"

local lua_script_name = "burst_buffer.lua"

local function verdict(output)
	local last = nil
	for line in string.gmatch(output, "[^\n]+") do
		if line == "OK" or line == "BUSY" or string.sub(line, 1, 6) == "ERROR " then
			last = line
		end
	end
	return last
end

-- The combined output of a shell command (stdin closed), or nil when it cannot start.
local function capture(command)
	local pipe = io.popen(command .. " 2>&1 </dev/null")
	if pipe == nil then
		return nil
	end
	local output = pipe:read("*a") or ""
	pipe:close()
	return output
end

-- The command line of `fsx-stage bb PHASE [JOBID] [EXTRA]` through sudo.
local function bb_command(phase, id, extra)
	local command = string.format("sudo -n %s bb %s", FSX_STAGE_BB, phase)
	if id ~= nil then
		command = string.format("%s %d", command, id)
	end
	if extra ~= nil then
		command = command .. " " .. extra
	end
	return command
end

-- Run `fsx-stage bb PHASE JOBID [EXTRA]`; return slurm.SUCCESS or slurm.ERROR and a
-- message ("BUSY" for a phase still in progress).
local function run(phase, job_id, extra)
	local id = tonumber(job_id)
	if id == nil then
		return slurm.ERROR, "fsx-stage: bad job id " .. tostring(job_id)
	end
	local command = bb_command(phase, id, extra)
	local output = capture(command)
	if output == nil then
		return slurm.ERROR, "fsx-stage bb " .. phase .. ": cannot run " .. command
	end
	local result = verdict(output)
	if result == "OK" then
		return slurm.SUCCESS, ""
	elseif result == "BUSY" then
		return slurm.SUCCESS, "BUSY"
	elseif result ~= nil then
		return slurm.ERROR, string.sub(result, 7)
	end
	slurm.log_error("%s: %s job %d: no verdict: %s", lua_script_name, phase, id, output)
	return slurm.ERROR, "fsx-stage bb " .. phase .. ": no verdict (see slurmctld log)"
end

-- The hook of one phase: every asynchronous hook takes the job id first (22.05 and
-- 24.x alike; the other arguments come from SlurmUser and are not used).
local function phase_hook(phase)
	return function(job_id, ...)
		return run(phase, job_id)
	end
end

-- A hook with nothing to do in this mode.
local function nothing_to_do(...)
	return slurm.SUCCESS
end

-- Instant hooks (inside slurmctld, locks held): no fork, no network.

slurm_bb_job_process = nothing_to_do
slurm_bb_pools = nothing_to_do

function slurm_bb_paths(job_id, job_script, path_file, uid, gid, job_info)
	local id = tonumber(job_id)
	if id == nil then
		return slurm.SUCCESS
	end
	local source = io.open(string.format("%s/%d.env", PATHS_DIR, id), "r")
	if source == nil then
		return slurm.SUCCESS
	end
	local text = source:read("*a") or ""
	source:close()
	local target = io.open(path_file, "a")
	if target == nil then
		return slurm.ERROR, "fsx-stage: cannot write " .. tostring(path_file)
	end
	target:write(text)
	target:close()
	return slurm.SUCCESS
end

-- Asynchronous hooks (slurmscriptd's child, as SlurmUser).

slurm_bb_setup = nothing_to_do
slurm_bb_data_in = phase_hook("data_in")
slurm_bb_test_data_in = phase_hook("test_data_in")
slurm_bb_real_size = nothing_to_do
slurm_bb_pre_run = nothing_to_do
slurm_bb_post_run = nothing_to_do
slurm_bb_data_out = phase_hook("data_out")
slurm_bb_test_data_out = phase_hook("test_data_out")

function slurm_bb_job_teardown(job_id, job_script, hurry, uid, gid, job_info)
	if hurry == "true" or hurry == true then
		return run("teardown", job_id, "--hurry")
	end
	return run("teardown", job_id)
end

function slurm_bb_get_status(...)
	local args = { ... }
	local job = nil
	for i = 1, #args do
		if tonumber(args[i]) ~= nil then
			job = tonumber(args[i])
		end
	end
	local output = capture(bb_command("status", job))
	if output == nil then
		return slurm.ERROR, "fsx-stage: cannot run fsx-stage bb status"
	end
	return slurm.SUCCESS, output
end
