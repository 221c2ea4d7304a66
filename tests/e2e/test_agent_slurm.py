"""``fsx-stage checkpoint`` and the node agent on the real Slurm cluster with SeaweedFS.

A real batch job of the non-root job user asks the agent (root, started by the test bed)
to publish its ``keep=`` checkpoint while it runs; callers that are not the job's
processes are refused (SO_PEERCRED + the job's slurmstepd ancestry)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.e2e.test_hooks_slurm import Bed, bed
from tests.testbed.agent import AgentServer
from tests.testbed.wait import wait_until

from fsx_stage.agent.peer import under_job_stepd

pytestmark = pytest.mark.slurm

__all__ = ["bed"]


@pytest.fixture(scope="module")
def agent(bed: Bed) -> Iterator[AgentServer]:
    run = Path(tempfile.mkdtemp(prefix="fsx-stage-agent-"))  # the job user reaches the socket
    run.chmod(0o755)
    server = AgentServer(
        Path(bed.fsx_stage), bed.site.config, run / "agent.sock", run / "agent.log"
    )
    with server:
        yield server
    shutil.rmtree(run, ignore_errors=True)


def _manifests(bed: Bed, prefix: str) -> list[str]:
    listing = bed.client.list_objects_v2(Bucket=bed.bucket, Prefix=f"{prefix}.fsx-stage/manifests/")
    return sorted(o["Key"] for o in listing.get("Contents", []))


def _wait_for(bed: Bed, job_id: int, path: Path, timeout: float = 120) -> str:
    """The text of ``path`` once the job wrote its ``rc=`` line."""
    return wait_until(
        lambda: path.exists() and "rc=" in (text := path.read_text()) and text,
        timeout,
        lambda: f"{path} never written: {bed.show_job(job_id)} {bed.output(job_id)}",
    )


def _checkpoint_job(
    bed: Bed, tag: str, options: str, body: str, *, agent: AgentServer | None = None
) -> tuple[int, str, Path]:
    """Submit a job whose checkpoint is ``{scratch}/USER/{tag}-JOBID/`` (``$d`` in
    ``body``, created first) to ``s3://BUCKET/{tag}/JOBID/``, with ``options`` (``keep=2``,
    ``every=3s``); ``agent``: its socket is the job's. Returns (job id, prefix, ``$d``'s parent)."""
    work = bed.scratch / bed.user
    socket = f"export FSX_STAGE_AGENT_SOCKET={agent.socket_path}\n" if agent else ""
    directive = f"checkpoint,{bed.scratch}/%u/{tag}-%j/,s3://{bed.bucket}/{tag}/%j/,{options}"
    job_id = bed.submit(
        f"#!/bin/sh\n#SBATCH --fsx-stage={directive}\n"
        f"{socket}d={work}/{tag}-$SLURM_JOB_ID\nmkdir -p $d\n{body}"
    )
    return job_id, f"{tag}/{job_id}/", work


def _wait_for_generations(
    bed: Bed, agent: AgentServer, job_id: int, prefix: str, count: int = 2
) -> None:
    """Wait until the agent published ``count`` generations of the job's checkpoint."""
    wait_until(
        lambda: len(_manifests(bed, prefix)) >= count,
        90,
        lambda: (bed.show_job(job_id), agent.log.read_text()),
        interval=0.5,
    )


@contextlib.contextmanager
def _every_allowed_from_2s(bed: Bed) -> Iterator[None]:
    """The site allows ``every=`` down to 2 s while the block runs (the default is 5 min)."""
    bed.live_config(extra='\n[checkpoints]\nmin_every = "2s"\n')
    try:
        yield
    finally:
        bed.live_config()


def _end(bed: Bed, job_id: int) -> None:
    bed.cancel(job_id)
    bed.wait_epilog(job_id)


def test_checkpoint_wait_inside_the_job_returns_once_the_manifest_is_in_s3(
    bed: Bed, agent: AgentServer
) -> None:
    job_id, prefix, work = _checkpoint_job(
        bed,
        "ag",
        "keep=2",
        f"""echo "step 1" > $d/state
{bed.fsx_stage} checkpoint --wait --timeout 60 > $d.first 2>&1; echo "rc=$?" >> $d.first
echo "step 2" > $d/state
{bed.fsx_stage} checkpoint --wait --timeout 60 > $d.second 2>&1; echo "rc=$?" >> $d.second
sleep 30
""",
        agent=agent,
    )
    first = _wait_for(bed, job_id, work / f"ag-{job_id}.first")
    assert "rc=0" in first and "published" in first, first
    # The agent answered only after the manifest was written: it is in S3 now.
    second = _wait_for(bed, job_id, work / f"ag-{job_id}.second")
    assert "rc=0" in second, second
    assert _manifests(bed, prefix) == [
        f"{prefix}.fsx-stage/manifests/1.json",
        f"{prefix}.fsx-stage/manifests/2.json",
    ]
    body = bed.client.get_object(Bucket=bed.bucket, Key=f"{prefix}.fsx-stage/manifests/2.json")
    assert [f["path"] for f in json.loads(body["Body"].read())["files"]] == ["state"]
    data = bed.client.get_object(Bucket=bed.bucket, Key=f"{prefix}.fsx-stage/gen/2/state")
    assert data["Body"].read() == b"step 2\n"

    # The same user outside the job, with the job's id in its environment: refused.
    outside = subprocess.run(
        [
            "/usr/sbin/runuser",
            "-u",
            bed.user,
            "--",
            "/usr/bin/env",
            f"SLURM_JOB_ID={job_id}",
            f"FSX_STAGE_AGENT_SOCKET={agent.socket_path}",
            bed.fsx_stage,
            "checkpoint",
            "--wait",
            "--timeout",
            "10",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert outside.returncode == 1
    assert f"not a process of job {job_id}" in outside.stderr
    # Another user (root here) is refused before anything else.
    other = subprocess.run(
        [bed.fsx_stage, "checkpoint", "--wait"],
        env={"SLURM_JOB_ID": str(job_id), "FSX_STAGE_AGENT_SOCKET": str(agent.socket_path)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert other.returncode == 1 and "belongs to another user" in other.stderr
    _end(bed, job_id)


def test_an_agent_killed_mid_flush_resumes_its_queue_and_never_half_publishes(
    bed: Bed, agent: AgentServer
) -> None:
    job_id, prefix, work = _checkpoint_job(
        bed,
        "ak",
        "keep=2",
        f"""for i in 1 2 3 4 5 6 7 8; do head -c 4000000 /dev/urandom > $d/part-$i; done
{bed.fsx_stage} checkpoint > $d.req 2>&1; echo "rc=$?" >> $d.req
sleep 60
""",
        agent=agent,
    )
    assert "rc=0" in (req := _wait_for(bed, job_id, work / f"ak-{job_id}.req")), req
    queued = bed.site.state_dir / "agent" / "queue" / f"{job_id}.json"
    assert queued.exists()  # the request is on disk before the agent answers "queued"
    agent.kill()  # mid-flush (or just before it): nothing is cleaned up
    assert _manifests(bed, prefix) in ([], [f"{prefix}.fsx-stage/manifests/1.json"])
    agent.start()  # the restarted agent finds the request in its queue
    wait_until(lambda: not queued.exists(), 120, lambda: agent.log.read_text(), interval=0.5)
    manifests = _manifests(bed, prefix)
    assert manifests, "the resumed flush published nothing"
    newest = manifests[-1]
    files = json.loads(bed.client.get_object(Bucket=bed.bucket, Key=newest)["Body"].read())
    stored_in = {f["path"]: f["stored_in"] for f in files["files"]}  # unchanged: reused
    assert sorted(stored_in) == [f"part-{i}" for i in range(1, 9)]
    for i in range(1, 9):
        key = f"{prefix}.fsx-stage/gen/{stored_in[f'part-{i}']}/part-{i}"
        data = bed.client.get_object(Bucket=bed.bucket, Key=key)["Body"].read()
        assert data == (work / f"ak-{job_id}" / f"part-{i}").read_bytes()
    _end(bed, job_id)


def test_every_publishes_generations_while_the_job_runs(bed: Bed, agent: AgentServer) -> None:
    """``every=3s`` (the test site allows 2 s): the agent publishes generations while the
    job writes, each one a complete manifest naming the file's content of that moment;
    ``status`` lists them; the Epilog's final flush is the last generation."""
    with _every_allowed_from_2s(bed):
        job_id, prefix, _work = _checkpoint_job(
            bed,
            "ev",
            "every=3s",
            """i=0
while [ $i -lt 40 ]; do
  i=$((i+1)); echo "step $i" > $d/state.tmp; mv $d/state.tmp $d/state; sleep 0.5
done
""",
        )
        _wait_for_generations(bed, agent, job_id, prefix)
        assert bed.cluster.job(job_id)["JobState"] == "RUNNING"  # published while it runs
        for key in _manifests(bed, prefix):
            manifest = json.loads(bed.client.get_object(Bucket=bed.bucket, Key=key)["Body"].read())
            n = manifest["generation"]
            body = bed.client.get_object(Bucket=bed.bucket, Key=f"{prefix}.fsx-stage/gen/{n}/state")
            assert body["Body"].read().startswith(b"step ")
        state = bed.wait_epilog(job_id, timeout=150)
        assert state.epilog.status.value == "done"
        by = [g.by for g in state.generations if g.state != "failed"]
        assert "agent every=" in by and by[-1] == "epilog", by
        final = _manifests(bed, prefix)[-1]
        manifest = json.loads(bed.client.get_object(Bucket=bed.bucket, Key=final)["Body"].read())
        body = bed.client.get_object(
            Bucket=bed.bucket,
            Key=f"{prefix}.fsx-stage/gen/{manifest['files'][0]['stored_in']}/state",
        )
        assert body["Body"].read() == b"step 40\n"
        assert len(_manifests(bed, prefix)) <= 2  # keep=2 by default
        status = bed.as_user(bed.fsx_stage, "status", str(job_id))
        assert "checkpoint generations:" in status.stdout and "agent every=" in status.stdout
        registration = bed.site.state_dir / "agent" / "periodic" / f"{job_id}.json"
        # The agent drops the registration once the Epilog began.
        wait_until(lambda: not registration.exists(), 10, f"{registration} still there")


def _kill_job_and_slurmd(bed: Bed, job_id: int) -> None:
    """SIGKILL the node's slurmd and every process of the job (its slurmstepds and what
    runs under them): what a node crash leaves, without an Epilog."""
    wanted = f"[{job_id}.".encode()
    stepds = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                cmdline = (entry / "cmdline").read_bytes()
                if cmdline.startswith(b"slurmstepd") and wanted in cmdline:
                    stepds.append(int(entry.name))
    assert stepds
    # The job's processes are found by their slurmstepd ancestry (the agent's own check).
    job = [int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit()]
    job = [pid for pid in job if under_job_stepd(pid, job_id)]
    bed.cluster.kill_daemon("slurmd")
    for pid in [*stepds, *job]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_slurmd_and_job_killed_the_requeued_job_restores_the_newest_generation(
    bed: Bed, agent: AgentServer
) -> None:
    bed.live_config(extra='\n[checkpoints]\nmin_every = "2s"\n')
    work = bed.scratch / bed.user
    try:
        job_id = bed.submit(
            f"""#!/bin/sh
#SBATCH --requeue
#SBATCH --fsx-stage=checkpoint,{bed.scratch}/%u/ek-%j/,s3://{bed.bucket}/ek/%j/,every=2s
d={work}/ek-$SLURM_JOB_ID
if [ "${{SLURM_RESTART_COUNT:-0}}" -gt 0 ]; then
  cat $d/a $d/b > {work}/ek-$SLURM_JOB_ID.restored; exit 0
fi
mkdir -p $d
i=0
while true; do
  i=$((i+1))
  head -c 300000 /dev/urandom > $d/a.tmp; mv $d/a.tmp $d/a
  echo "step $i" > $d/b.tmp; mv $d/b.tmp $d/b
  sleep 0.3
done
"""
        )
        prefix = f"ek/{job_id}/"
        _wait_for_generations(bed, agent, job_id, prefix)
        _kill_job_and_slurmd(bed, job_id)
        shutil.rmtree(work / f"ek-{job_id}")  # the rerun may land on a node without it
        bed.cluster.restart_daemon("slurmd")
        deadline = time.monotonic() + 240
        while int(bed.cluster.job(job_id).get("Restarts", "0")) < 1:
            assert time.monotonic() < deadline, bed.show_job(job_id)
            if (
                bed.cluster.job(job_id)["JobState"] == "RUNNING"
                and time.monotonic() > deadline - 180
            ):
                bed.cluster.scontrol("requeue", str(job_id))  # Slurm did not notice by itself
            time.sleep(2)
        record = bed.cluster.wait(job_id, timeout=240)
        assert record["JobState"] == "COMPLETED", bed.show_job(job_id)
        state = bed.wait_epilog(job_id, restart=int(record["Restarts"]))
        restored = [g for g in state.generations if g.state == "restored"]
        assert restored, state.generations
        n = restored[-1].generation
        files = {}
        for name in ("a", "b"):
            key = f"{prefix}.fsx-stage/gen/{n}/{name}"
            files[name] = bed.client.get_object(Bucket=bed.bucket, Key=key)["Body"].read()
        got = (work / f"ek-{job_id}.restored").read_bytes()
        assert got == files["a"] + files["b"]  # byte-identical, both from generation n
        assert len(files["a"]) == 300000 and files["b"].startswith(b"step ")
    finally:
        bed.live_config()
        bed.cluster.ensure_node_usable()


def _check_generation(bed: Bed, prefix: str, n: int, size: int) -> dict[str, str]:
    """Every file of generation ``n`` in S3 (the objects its manifest names) has the
    manifest's SHA-256 and is one version throughout; path -> SHA-256."""
    key = f"{prefix}.fsx-stage/manifests/{n}.json"
    manifest = json.loads(bed.client.get_object(Bucket=bed.bucket, Key=key)["Body"].read())
    digests = {}
    for f in manifest["files"]:
        stored = f"{prefix}.fsx-stage/gen/{f['stored_in']}/{f['path']}"
        data = bed.client.get_object(Bucket=bed.bucket, Key=stored)["Body"].read()
        assert hashlib.sha256(data).hexdigest() == f["sha256"], f"generation {n}: {f['path']}"
        assert len(data) == size and len(set(data)) == 1, f"generation {n}: {f['path']} torn"
        digests[f["path"]] = f["sha256"]
    assert sorted(digests) == ["f0", "f1", "f2"], manifest
    return digests


def test_a_writer_rewriting_files_in_place_never_publishes_or_restores_a_torn_file(
    bed: Bed, agent: AgentServer
) -> None:
    """The job rewrites three files in place (``>``: open, truncate, write) every 0.1 s
    while the agent flushes ``every=2s``; every published generation's files are one
    version each with the manifest's checksums, and a second job restoring the prefix
    while the writer runs gets exactly one generation's files."""
    size = 262144
    with _every_allowed_from_2s(bed):
        writer, prefix, work = _checkpoint_job(
            bed,
            "ew",
            "every=2s,keep=50",
            f"""i=0
end=$(($(date +%s) + 25))
while [ $(date +%s) -lt $end ]; do
  i=$((i+1))
  for f in f0 f1 f2; do head -c {size} /dev/zero | tr '\\0' "$((i % 10))" > $d/$f; done
  sleep 0.1
done
""",
        )
        _wait_for_generations(bed, agent, writer, prefix)
        reader = bed.submit(
            f"""#!/bin/sh
#SBATCH --fsx-stage=checkpoint,{bed.scratch}/%u/er-%j/,s3://{bed.bucket}/{prefix},keep=50
cd {work}/er-$SLURM_JOB_ID && sha256sum f0 f1 f2 > {work}/er-$SLURM_JOB_ID.sums
for f in f0 f1 f2; do tr -d "$(head -c 1 $f)" < $f | wc -c; done >> {work}/er-$SLURM_JOB_ID.sums
echo "rc=$?" >> {work}/er-$SLURM_JOB_ID.sums
"""
        )
        sums = _wait_for(bed, reader, work / f"er-{reader}.sums", timeout=180)
        state = bed.wait_epilog(writer, timeout=240)
        assert state.epilog.status.value == "done"
        published = [
            int(key.rsplit("/", 1)[1].removesuffix(".json")) for key in _manifests(bed, prefix)
        ]
        assert len(published) >= 3, published
        checked = {n: _check_generation(bed, prefix, n, size) for n in published}
        restored = [g for g in bed.wait_epilog(reader).generations if g.state == "restored"]
        assert restored, sums
        got = dict(reversed(line.split()) for line in sums.splitlines()[:3])
        assert got == checked[restored[-1].generation]  # exactly that generation's files
        assert sums.splitlines()[3:6] == ["0", "0", "0"], sums  # each file one version
