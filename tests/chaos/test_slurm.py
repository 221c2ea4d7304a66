"""Slurm-level chaos on the suite's own single-node cluster, jobs run as the job user.

Jobs are cancelled during stage-in, killed by their time limit while writing checkpoints,
requeued again and again; the Epilog runs out of its time budget or is killed outright;
slurmd is restarted while a Prolog stages data in.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
from tests.chaos.bed import ChaosBed, chaos_bed, hook_walls
from tests.chaos.conftest import full_only, scaled
from tests.chaos.invariants import SERVING_STATES, Checker, node_state
from tests.chaos.results import ScenarioResult
from tests.chaos.tools import MiB, payloads, put_all
from tests.testbed.faultproxy import FaultProxy
from tests.testbed.wait import wait_until

__all__ = ["chaos_bed"]
GROUP = "slurm"
pytestmark = pytest.mark.slurm


def _stage_in_job(bed: ChaosBed, prefix: str, extra: str = "sleep 2\n") -> str:
    return f"""#!/bin/sh
#SBATCH --fsx-stage=in,s3://{bed.bucket}/{prefix},{bed.scratch}/%u/%j/in/
{extra}"""


def _checks_after(bed: ChaosBed, checker: Checker, result: ScenarioResult, job_id: int) -> None:
    checker.confined(bed.uid, [bed.user_scratch], [bed.site.root])
    checker.no_secrets(bed.logs())
    checker.node_in_service(bed.cluster.env)
    state = bed.state(job_id)
    if state is not None:
        result.hook_wall_s.extend(hook_walls(state))


def _stage_in_progress(bed: ChaosBed, job_id: int) -> tuple[str, int] | None:
    """The Prolog's status and the objects its stage-in saved as staged so far."""
    state = bed.state(job_id)
    if state is None:
        return None
    staged = sum(e["objects"] for e in state["entries"] if e["phase"] == "stage_in")
    return state["prolog"]["status"], staged


def _wait_for_stage_in_under_way(bed: ChaosBed, job_id: int) -> None:
    def under_way() -> bool:
        progress = _stage_in_progress(bed, job_id)
        return progress is not None and progress[0] == "running" and progress[1] > 0

    wait_until(
        under_way,
        90,
        lambda: f"job {job_id} never showed a stage-in under way: {bed.state(job_id)}",
        interval=0.1,
    )


def test_job_cancelled_during_stage_in(
    scale: float,
    result: ScenarioResult,
    checker: Checker,
    chaos_bed: ChaosBed,
    fault_proxy: FaultProxy,
) -> None:
    """A job is cancelled (scancel) while its Prolog stages data in: every object GET
    waits in the fault proxy, so the stage-in takes seconds, and the cancel comes once
    some objects are staged and most are not. The Prolog is still staging when the
    cancel has landed; every staged file that exists is complete; the node stays in
    service; no secret in any log; nothing of the user outside its scratch root."""
    bed = chaos_bed
    rng = random.Random(21)
    contents = payloads(rng, scaled(scale, 400, 60), big=2, big_size=24 * MiB)
    put_all(bed.client, bed.bucket, "cancel/", contents)
    total = len(contents)
    bed.configure(fault_proxy.endpoint_url)
    try:
        for _ in range(scaled(scale, 6)):
            fault_proxy.set_faults(
                latency_s=1.0, latency_rate=1.0, methods={"GET"}, key_pattern=r"/cancel/."
            )
            job_id = bed.submit(_stage_in_job(bed, "cancel/", "sleep 30\n"))
            _wait_for_stage_in_under_way(bed, job_id)
            subprocess.run(
                ["/usr/bin/scancel", str(job_id)], env=bed.cluster.command_env(), check=True
            )
            at_cancel = _stage_in_progress(bed, job_id)
            assert at_cancel is not None and at_cancel[0] == "running", at_cancel
            assert 0 < at_cancel[1] < total, f"{at_cancel[1]} of {total} objects staged"
            fault_proxy.set_faults()
            result.faults["scancel"] += 1
            record = bed.cluster.wait(job_id, timeout=180)
            assert record["JobState"] == "CANCELLED", bed.show_job(job_id)
            result.runs += 1
            result.expected_failures += 1
            bed.wait_epilog(job_id)
            files = checker.no_torn_files(bed.user_scratch / str(job_id) / "in", contents)
            result.add_transfer(files, 0, 0)
            result.notes.append(f"job {job_id}: cancelled at {at_cancel[1]} of {total} objects")
            _checks_after(bed, checker, result, job_id)
    finally:
        fault_proxy.set_faults()
        bed.configure()


@full_only
def test_time_limit_while_writing_checkpoints(
    scale: float, result: ScenarioResult, checker: Checker, chaos_bed: ChaosBed
) -> None:
    """A job writes checkpoint files in a loop (new files and one rewritten in place) until
    its time limit kills it. After the Epilog, every byte on scratch under the checkpoint
    source is identical in S3, or still on scratch and listed in the pending record."""
    bed = chaos_bed
    for _ in range(scaled(scale, 3)):
        job_id = bed.submit(
            f"""#!/bin/sh
#SBATCH --time=0:05
#SBATCH --fsx-stage=checkpoint,{bed.scratch}/%u/ck-%j/,s3://{bed.bucket}/ck/%j/
d={bed.scratch}/$(id -un)/ck-$SLURM_JOB_ID
mkdir -p $d
i=0
while true; do
  i=$((i+1))
  head -c 200000 /dev/urandom > $d/step-$i.bin
  head -c 300000 /dev/urandom > $d/latest.bin
  sleep 0.2
done
"""
        )
        record = bed.cluster.wait(job_id, timeout=240)
        assert record["JobState"] == "TIMEOUT", bed.show_job(job_id)
        result.runs += 1
        result.faults["time limit"] += 1
        result.expected_failures += 1
        bed.wait_epilog(job_id)
        local = bed.user_scratch / f"ck-{job_id}"
        written = {
            p.relative_to(local).as_posix(): p.read_bytes() for p in local.rglob("*") if p.is_file()
        }
        outcome = checker.flushed_or_pending(
            bed.bucket, f"ck/{job_id}/", local, written, bed.pending_record(job_id)
        )
        result.add_transfer(len(written), sum(map(len, written.values())), 0)
        result.notes.append(f"job {job_id}: {len(written)} checkpoint files, {outcome}")
        _checks_after(bed, checker, result, job_id)


def test_requeue_loop_restores_checkpoints(
    scale: float, result: ScenarioResult, checker: Checker, chaos_bed: ChaosBed
) -> None:
    """One job is requeued again and again while it runs; every run adds a checkpoint
    file; the scratch copy is wiped between runs (the next run may land on another node)
    so each run must get the checkpoints back from S3. The last run sees all of them."""
    bed = chaos_bed
    loops = scaled(scale, 5)
    job_id = bed.submit(
        f"""#!/bin/sh
#SBATCH --fsx-stage=checkpoint,{bed.scratch}/%u/rq-%j/,s3://{bed.bucket}/rq/%j/
d={bed.scratch}/$(id -un)/rq-$SLURM_JOB_ID
mkdir -p $d
n=$(ls $d | grep -c '^run-')
n=$((n+1))
head -c 70000 /dev/urandom > $d/run-$n.bin
if [ $n -gt {loops} ]; then exit 0; fi
sleep 600
"""
    )
    local = bed.user_scratch / f"rq-{job_id}"
    for restart in range(loops):
        marker = local / f"run-{restart + 1}.bin"
        wait_until(marker.exists, 120, lambda: bed.show_job(job_id))
        time.sleep(0.3)
        bed.cluster.scontrol("requeue", str(job_id))
        result.faults["requeue"] += 1
        state = bed.wait_epilog(job_id, restart=restart)
        result.hook_wall_s.extend(hook_walls(state))
        written = {p.name: p.read_bytes() for p in local.iterdir() if p.is_file()}
        checker.flushed_or_pending(
            bed.bucket, f"rq/{job_id}/", local, written, bed.pending_record(job_id)
        )
        subprocess.run(["rm", "-rf", str(local)], check=True)
        result.runs += 1
    record = bed.cluster.wait(job_id, timeout=180)
    assert record["JobState"] == "COMPLETED", bed.show_job(job_id)
    assert int(record["Restarts"]) == loops
    bed.wait_epilog(job_id, restart=loops)
    result.runs += 1
    runs = sorted(p.name for p in local.iterdir())
    assert runs == sorted(f"run-{i}.bin" for i in range(1, loops + 2)), runs
    written = {p.name: p.read_bytes() for p in local.iterdir()}
    assert (
        checker.flushed_or_pending(
            bed.bucket, f"rq/{job_id}/", local, written, bed.pending_record(job_id)
        )
        == "flushed"
    )
    result.add_transfer(len(written), sum(map(len, written.values())), 0)
    _checks_after(bed, checker, result, job_id)


def _out_job(bed: ChaosBed, files: int) -> str:
    return f"""#!/bin/sh
#SBATCH --fsx-stage=out,{bed.scratch}/%u/o-%j/,s3://{bed.bucket}/o/%j/
d={bed.scratch}/$(id -un)/o-$SLURM_JOB_ID
mkdir -p $d
i=0
while [ $i -lt {files} ]; do i=$((i+1)); head -c 20000 /dev/urandom > $d/r-$i.bin; done
"""


def _flush_pending(bed: ChaosBed, job_id: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [bed.fsx_stage(), "flush", "--pending", "--job", str(job_id)],
        env={**os.environ, "FSX_STAGE_CONFIG": str(bed.site.config)},
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def test_epilog_runs_out_of_its_time_budget(
    scale: float,
    result: ScenarioResult,
    checker: Checker,
    chaos_bed: ChaosBed,
    fault_proxy: FaultProxy,
) -> None:
    """S3 is slow (1 s latency on every upload through the fault proxy) and the flush
    budget is 10 s: the Epilog stops in time, keeps the rest on scratch, lists it as
    pending and exits 0 (node in service); ``flush --pending`` later completes it."""
    bed = chaos_bed
    bed.configure(fault_proxy.endpoint_url, flush_budget=10)
    try:
        for _ in range(scaled(scale, 3)):
            fault_proxy.set_faults(latency_s=1.0, latency_rate=1.0, methods={"PUT", "POST"})
            job_id = bed.submit(_out_job(bed, 150))
            record = bed.cluster.wait(job_id, timeout=120)
            assert record["JobState"] == "COMPLETED", bed.show_job(job_id)
            state = bed.wait_epilog(job_id)
            result.add_faults(fault_proxy.injected)
            result.hook_wall_s.extend(hook_walls(state))
            result.runs += 1
            assert state["epilog"]["status"] == "done", state
            local = bed.user_scratch / f"o-{job_id}"
            written = {p.name: p.read_bytes() for p in local.iterdir()}
            outcome = checker.flushed_or_pending(
                bed.bucket, f"o/{job_id}/", local, written, bed.pending_record(job_id)
            )
            assert outcome != "flushed", "the flush beat its budget: make S3 slower"
            result.expected_failures += 1
            checker.node_in_service(bed.cluster.env)
            fault_proxy.set_faults()
            flushed = _flush_pending(bed, job_id)
            assert flushed.returncode == 0, flushed.stdout + flushed.stderr
            assert (
                checker.flushed_or_pending(
                    bed.bucket, f"o/{job_id}/", local, written, bed.pending_record(job_id)
                )
                == "flushed"
            )
            assert not bed.pending_record(job_id).exists()
            result.add_transfer(len(written), sum(map(len, written.values())), 0)
            _checks_after(bed, checker, result, job_id)
    finally:
        fault_proxy.set_faults()
        bed.configure()


def _epilog_pids(job_id: int) -> list[int]:
    """Processes of the Epilog of ``job_id`` (the hook and its privilege-dropped worker)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            b"fsx-stage" in cmdline
            and f"SLURM_JOB_ID={job_id}".encode() in environ
            and (b"SLURM_SCRIPT_CONTEXT=epilog_slurmd" in environ or b"epilog" in cmdline)
        ):
            pids.append(int(entry.name))
    return pids


def test_epilog_killed_mid_flush(
    scale: float,
    result: ScenarioResult,
    checker: Checker,
    chaos_bed: ChaosBed,
    fault_proxy: FaultProxy,
) -> None:
    """The Epilog is killed with SIGKILL in the middle of its flush, as slurmd kills it at
    PrologEpilogTimeout. What it had not flushed is still on scratch and already listed
    in the pending record (intent is written first); ``flush --pending`` completes it."""
    bed = chaos_bed
    bed.configure(fault_proxy.endpoint_url)
    drained = 0
    try:
        for _ in range(scaled(scale, 3)):
            fault_proxy.set_faults(latency_s=0.5, latency_rate=1.0, methods={"PUT", "POST"})
            job_id = bed.submit(_out_job(bed, 120))
            bed.wait_state(job_id, "epilog", {"running"}, timeout=120)
            time.sleep(2.0)
            pids = _epilog_pids(job_id)
            assert pids, "no epilog process found"
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
            result.faults["epilog kill -9"] += 1
            result.add_faults(fault_proxy.injected)
            result.runs += 1
            result.expected_failures += 1
            fault_proxy.set_faults()
            local = bed.user_scratch / f"o-{job_id}"
            written = {p.name: p.read_bytes() for p in local.iterdir()}
            outcome = checker.flushed_or_pending(
                bed.bucket, f"o/{job_id}/", local, written, bed.pending_record(job_id)
            )
            assert outcome != "flushed"
            state = bed.cluster.node_state() or ""
            if "drain" in state:
                # Slurm drains a node whose Epilog failed: the site's timeout, not the user's.
                drained += 1
            bed.cluster.ensure_node_usable()
            flushed = _flush_pending(bed, job_id)
            assert flushed.returncode == 0, flushed.stdout + flushed.stderr
            assert (
                checker.flushed_or_pending(
                    bed.bucket, f"o/{job_id}/", local, written, bed.pending_record(job_id)
                )
                == "flushed"
            )
            result.add_transfer(len(written), sum(map(len, written.values())), 0)
            _checks_after(bed, checker, result, job_id)
    finally:
        fault_proxy.set_faults()
        bed.configure()
    result.notes.append(
        f"Slurm drained the node after {drained} of {result.runs} killed Epilogs"
        " (resumed by the test)"
    )


def _wait_in_service(bed: ChaosBed, timeout: float) -> None:
    """Wait (without resuming anything) for the node to serve jobs again."""
    wait_until(
        lambda: node_state(bed.cluster.env).rstrip("*~#!%$@^-+") in SERVING_STATES,
        timeout,
        lambda: f"node still {node_state(bed.cluster.env)}",
        interval=0.5,
    )


@full_only
def test_slurmd_restarted_during_stage_in(
    scale: float, result: ScenarioResult, checker: Checker, chaos_bed: ChaosBed
) -> None:
    """slurmd is stopped and started again while a Prolog stages data in. Every staged
    file that exists is complete, the node comes back into service by itself, and the
    same data staged by a fresh job afterwards is complete and identical."""
    bed = chaos_bed
    rng = random.Random(23)
    contents = payloads(rng, scaled(scale, 400, 60), big=2, big_size=24 * MiB)
    put_all(bed.client, bed.bucket, "restart/", contents)
    outcomes: list[str] = []
    for _ in range(scaled(scale, 3)):
        job_id = bed.submit(_stage_in_job(bed, "restart/"))
        bed.wait_state(job_id, "prolog", {"running"}, 90)
        time.sleep(rng.uniform(0.2, 1.0))
        pid = bed.cluster.pids()["slurmd"]
        assert pid is not None
        os.kill(pid, signal.SIGTERM)
        wait_until(
            lambda: bed.cluster.pids()["slurmd"] is None, 60, "slurmd survived SIGTERM", 0.05
        )
        time.sleep(1.0)
        bed.cluster._start_slurm_daemon("slurmd", 60)
        result.faults["slurmd restart"] += 1
        result.runs += 1
        record = bed.cluster.wait(job_id, timeout=300)
        outcomes.append(record["JobState"])
        checker.no_torn_files(bed.user_scratch / str(job_id) / "in", contents)
        _wait_in_service(bed, 120)
        _checks_after(bed, checker, result, job_id)
    job_id = bed.submit(_stage_in_job(bed, "restart/"))
    record = bed.cluster.wait(job_id, timeout=300)
    assert record["JobState"] == "COMPLETED", bed.show_job(job_id)
    files = checker.staged_in(bed.bucket, "restart/", bed.user_scratch / str(job_id) / "in")
    result.add_transfer(files, sum(map(len, contents.values())), 0)
    _checks_after(bed, checker, result, job_id)
    result.notes.append(f"job states after the restarts: {', '.join(outcomes)}")
