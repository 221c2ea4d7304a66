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

-- Run `fsx-stage bb PHASE JOBID [EXTRA]` through sudo; return slurm.SUCCESS or slurm.ERROR
-- and a message ("BUSY" for a phase still in progress).
local function run(phase, job_id, extra)
	local id = tonumber(job_id)
	if id == nil then
		return slurm.ERROR, "fsx-stage: bad job id " .. tostring(job_id)
	end
	local command = string.format("sudo -n %s bb %s %d", FSX_STAGE_BB, phase, id)
	if extra ~= nil then
		command = command .. " " .. extra
	end
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

-- Instant hooks (inside slurmctld, locks held): no fork, no network.

function slurm_bb_job_process(job_script, uid, gid, job_info)
	return slurm.SUCCESS
end

function slurm_bb_pools(...)
	return slurm.SUCCESS
end

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

function slurm_bb_setup(job_id, uid, gid, pool, bb_size, job_script, job_info)
	return slurm.SUCCESS
end

function slurm_bb_data_in(job_id, job_script, uid, gid, job_info)
	return run("data_in", job_id)
end

function slurm_bb_test_data_in(job_id, job_script, uid, gid, job_info)
	return run("test_data_in", job_id)
end

function slurm_bb_real_size(job_id, uid, gid, job_info)
	return slurm.SUCCESS
end

function slurm_bb_pre_run(job_id, job_script, uid, gid, job_info)
	return slurm.SUCCESS
end

function slurm_bb_post_run(job_id, job_script, uid, gid, job_info)
	return slurm.SUCCESS
end

function slurm_bb_data_out(job_id, job_script, uid, gid, job_info)
	return run("data_out", job_id)
end

function slurm_bb_test_data_out(job_id, job_script, uid, gid, job_info)
	return run("test_data_out", job_id)
end

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
			job = args[i]
		end
	end
	local command = string.format("sudo -n %s bb status", FSX_STAGE_BB)
	if job ~= nil then
		command = string.format("%s %d", command, tonumber(job))
	end
	local output = capture(command)
	if output == nil then
		return slurm.ERROR, "fsx-stage: cannot run fsx-stage bb status"
	end
	return slurm.SUCCESS, output
end
