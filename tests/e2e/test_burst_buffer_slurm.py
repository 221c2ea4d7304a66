"""The burst_buffer/lua mode on the real Slurm cluster with SeaweedFS, as a non-root user.

The cluster (``bb_cluster``, ``$TESTBED/slurm-bb``) runs slurmctld as ``SlurmUser=slurm``
with ``slurm-conf-examples/burst_buffer.lua``; the lua reaches root only through the one
sudo rule for ``fsx-stage bb``. Jobs carry ordinary ``#SBATCH --fsx-stage`` lines. S3 is
reached through the fault proxy, so a test can slow it down (to watch the node while
bytes move) or stop it.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.e2e.test_hooks_slurm import Bed
from tests.hooks.sitecfg import make_site
from tests.testbed.cluster import ClusterError, SlurmCluster
from tests.testbed.demo import SITE_CONFIG_LOCK
from tests.testbed.faultproxy import FaultProxy
from tests.testbed.ports import free_port
from tests.testbed.wait import wait_until

from fsx_stage.hooks.epilog import Epilog
from fsx_stage.hooks.pending import PendingStore
from fsx_stage.hooks.state import (
    EntryState,
    EntryStatus,
    HookStatus,
    JobState,
    Phase,
    StateStore,
)

pytestmark = pytest.mark.slurm


@dataclass
class BBBed(Bed):
    proxy: FaultProxy | None = None

    def bb_config(self, *, alive: bool = True, flush_wait: float = 0) -> None:
        """The site config the hooks read on every call: S3 through the proxy (or a dead
        port), this cluster's paths directory for slurm_bb_paths."""
        assert self.proxy is not None
        url = self.proxy.endpoint_url if alive else f"http://127.0.0.1:{free_port()}"
        extra = (
            f'\n[burst_buffer]\npaths_dir = "{self.cluster.layout.bb_paths_dir}"\n'
            f"flush_wait = {flush_wait}\n"
        )
        self.site.write_config(url, [self.bucket], workers=2, extra=extra)

    def squeue_reason(self, job_id: int) -> str:
        """What ``squeue`` shows the user as the job's reason."""
        proc = self.cluster.user_command(
            self.user, ["/usr/bin/squeue", "-h", "-t", "all", "-j", str(job_id), "-o", "%r"]
        )
        return proc.stdout.strip()

    def record(self, job_id: int) -> dict[str, str]:
        return self.cluster.job(job_id)

    def watch(
        self, job_id: int, until: Callable[[dict[str, str]], bool], timeout: float = 120
    ) -> list[tuple[dict[str, str], str]]:
        """Sample (job record, node state) until ``until(record)``; return the samples.

        The node state is read between two reads of the job record and kept only when the job's
        state and reason did not change in between (the last sample is always kept): a job that
        starts between the two reads would otherwise pair "pending stage-in" with the node it was
        just allocated.
        """
        samples = []
        deadline = time.monotonic() + timeout
        record = self.record(job_id)
        while True:
            node = self.node_state()
            before, record = record, self.record(job_id)
            done = until(record)
            if done or _phase(before) == _phase(record):
                samples.append((record, node))
            if done:
                return samples
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id}: {record}")
            time.sleep(0.3)


@pytest.fixture(scope="module")
def bb(bb_cluster: SlurmCluster, s3_server: Any, s3_client: Any, job_user: str) -> Iterator[BBBed]:
    lock = os.open(bb_cluster.layout.root / SITE_CONFIG_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)
    config_path = bb_cluster.layout.fsx_stage_config
    site = make_site(s3_server.access_key, s3_server.secret_key, config=config_path)
    bucket = f"bb-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=bucket)
    bb_cluster.ensure_node_usable()
    with FaultProxy.for_endpoint(s3_server.endpoint_url) as proxy:
        bed = BBBed(bb_cluster, s3_server, s3_client, bucket, site, job_user, proxy=proxy)
        site.user_dir(job_user)
        bed.bb_config()
        yield bed
    config_path.unlink(missing_ok=True)
    s3_client.delete_bucket(Bucket=bucket)
    site.cleanup()
    os.close(lock)


def _held(record: dict[str, str]) -> bool:
    """Held by Slurm after a failed burst buffer phase (the reason is fsx-stage's message)."""
    return record.get("Priority") == "0"


def _phase(record: dict[str, str]) -> tuple[str, str]:
    return record["JobState"], record.get("Reason", "")


def _pending_stage_in(record: dict[str, str]) -> bool:
    return record["JobState"] == "PENDING" and record.get("Reason") == "BurstBufferStageIn"


def test_slurm_user_is_not_root(bb: BBBed) -> None:
    assert "SlurmUser=slurm" in bb.cluster.layout.slurm_conf.read_text()
    status = bb.cluster.scontrol("show", "config")
    assert "SlurmUser               = slurm(" in status


def test_stage_in_while_pending_with_the_node_idle_then_flush_after_release(bb: BBBed) -> None:
    assert bb.proxy is not None
    for name in ("a", "b", "c"):
        bb.client.put_object(Bucket=bb.bucket, Key=f"in/{name}.txt", Body=name.encode() * 1000)
    work = f"{bb.scratch}/%u/%j"
    bb.proxy.set_faults(latency_s=4.0, latency_rate=1.0, methods={"GET"})
    job_id = bb.submit(
        f"""#!/bin/sh
#SBATCH --fsx-stage=in,s3://{bb.bucket}/in/,{work}/in/
#SBATCH --fsx-stage=out,{work}/out/,s3://{bb.bucket}/out/%j/
echo "started $(date +%s.%N)"
echo "in=$FSX_STAGE_IN_1 out=$FSX_STAGE_OUT_1"
ls "$FSX_STAGE_IN_1"
mkdir -p "$FSX_STAGE_OUT_1"
wc -c "$FSX_STAGE_IN_1"/a.txt > "$FSX_STAGE_OUT_1/a.count"
"""
    )
    samples = bb.watch(job_id, lambda r: r["JobState"] != "PENDING")
    staging = [node for record, node in samples if _pending_stage_in(record)]
    assert len(staging) >= 3, samples  # four seconds of GETs at least
    assert set(staging) <= {"idle", "planned"}, staging  # nothing allocated while bytes move
    bb.proxy.set_faults(latency_s=4.0, latency_rate=1.0, methods={"PUT"})
    samples = bb.watch(job_id, lambda r: r["JobState"] in ("COMPLETED", "FAILED", "CANCELLED"))
    out_nodes = [node for record, node in samples if record["JobState"] == "STAGE_OUT"]
    # Released before the flush: idle, or "planned" when the scheduler already plans
    # another pending job on it (never allocated to this one).
    assert out_nodes and set(out_nodes) <= {"idle", "planned"}, samples
    bb.proxy.set_faults()
    assert samples[-1][0]["JobState"] == "COMPLETED", bb.show_job(job_id)
    state = StateStore(bb.site.state_dir).load(job_id)
    assert state is not None and state.mode == "burst_buffer"
    assert state.prolog.status is HookStatus.DONE and state.epilog.status is HookStatus.DONE
    assert all(e.status is EntryStatus.DONE for e in state.entries), state.entries
    output = bb.output(job_id)
    started = float(output.split()[1])
    assert state.prolog.finished_at is not None and started > state.prolog.finished_at
    in_dir = f"{bb.scratch}/{bb.user}/{job_id}/in/"
    assert f"in={in_dir} out={bb.scratch}/{bb.user}/{job_id}/out/" in output
    assert "a.txt\nb.txt\nc.txt" in output
    body = bb.client.get_object(Bucket=bb.bucket, Key=f"out/{job_id}/a.count")["Body"].read()
    assert body.split()[0] == b"1000"
    # The node's own Prolog/Epilog saw the job and left it to the burst buffer.
    assert {r.hook for r in bb.cluster.wait_hook_records(job_id, ["prolog", "epilog"])} == {
        "prolog",
        "epilog",
    }


def test_missing_object_holds_the_job_with_a_readable_reason(bb: BBBed) -> None:
    job_id = bb.submit(
        f"""#!/bin/sh
#SBATCH --fsx-stage=in,s3://{bb.bucket}/no/such/object.bin,{bb.scratch}/%u/%j/in/
echo never
"""
    )
    record = bb.watch(job_id, _held, timeout=60)[-1][0]
    assert record["JobState"] == "PENDING"
    reason = bb.squeue_reason(job_id)
    assert f"fsx-stage: job {job_id} cannot start: directive 1:" in reason, reason
    assert "no/such/object.bin" in reason and f"`scontrol release {job_id}`" in reason, reason
    assert "no/such/object.bin" in record["SystemComment"]
    assert bb.node_state() in ("idle", "planned")
    bb.cluster.user_command(bb.user, ["/usr/bin/scancel", str(job_id)])


def test_refused_flush_keeps_the_data_pending_with_the_reason_then_flush_pending_sends_it(
    bb: BBBed,
) -> None:
    """On 22.05 a failed data_out does not hold the job: it ends COMPLETED with fsx-stage's
    message as its reason; the data stays on scratch, recorded pending, and the site's
    ``fsx-stage flush --pending`` (timer) sends it once S3 is back."""
    flag = bb.scratch / bb.user / f"go-{uuid.uuid4().hex[:8]}"
    job_id = bb.submit(
        f"""#!/bin/sh
#SBATCH --fsx-stage=out,{bb.scratch}/%u/%j/out/,s3://{bb.bucket}/kept/%j/
mkdir -p "$FSX_STAGE_OUT_1"
echo result > "$FSX_STAGE_OUT_1/r.txt"
while [ ! -e {flag} ]; do sleep 0.2; done
"""
    )
    bb.watch(job_id, lambda r: r["JobState"] == "RUNNING")
    bb.bb_config(alive=False)  # S3 unreachable for the flush
    flag.touch()
    bb.watch(job_id, lambda r: r["JobState"] == "COMPLETED", timeout=90)
    reason = bb.squeue_reason(job_id)
    assert f"fsx-stage: job {job_id}: 1 result not in S3 yet, kept on scratch" in reason, reason
    assert "fsx-stage flush --pending" in reason, reason
    kept = bb.scratch / bb.user / str(job_id) / "out" / "r.txt"
    assert kept.read_text() == "result\n"
    pending = PendingStore(StateStore(bb.site.state_dir))
    record = pending.load(job_id)
    assert record is not None and [e.status for e in record.entries] == [EntryStatus.PENDING]
    listing = bb.client.list_objects_v2(Bucket=bb.bucket, Prefix=f"kept/{job_id}/")
    assert listing.get("KeyCount", 0) == 0
    bb.bb_config()
    env = {**os.environ, "FSX_STAGE_CONFIG": str(bb.site.config)}
    proc = subprocess.run(
        [bb.fsx_stage, "flush", "--pending", "--job", str(job_id)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    body = bb.client.get_object(Bucket=bb.bucket, Key=f"kept/{job_id}/r.txt")["Body"].read()
    assert body == b"result\n"
    assert pending.load(job_id) is None
    state = StateStore(bb.site.state_dir).load(job_id)
    assert state is not None
    assert [e.status for e in state.phase_entries(Phase.FLUSH)] == [EntryStatus.DONE]


def test_s3_down_at_stage_in_holds_the_job_and_release_completes_it_once_s3_is_back(
    bb: BBBed,
) -> None:
    bb.client.put_object(Bucket=bb.bucket, Key="later/x.bin", Body=b"x" * 4096)
    bb.bb_config(alive=False)
    job_id = bb.submit(
        f"""#!/bin/sh
#SBATCH --fsx-stage=in,s3://{bb.bucket}/later/x.bin,{bb.scratch}/%u/%j/x.bin
wc -c < "$FSX_STAGE_IN_1"
"""
    )
    bb.watch(job_id, _held, timeout=90)
    reason = bb.squeue_reason(job_id)
    assert f"fsx-stage: job {job_id} waits for its data" in reason, reason
    assert f"`scontrol release {job_id}` once S3 is back" in reason, reason
    bb.bb_config()
    bb.cluster.scontrol("release", str(job_id))
    final = bb.watch(job_id, lambda r: r["JobState"] == "COMPLETED", timeout=90)[-1][0]
    assert final["JobState"] == "COMPLETED"
    assert bb.output(job_id).strip() == "4096"
    state = StateStore(bb.site.state_dir).load(job_id)
    assert state is not None and state.prolog.status is HookStatus.DONE


def test_sbatch_command_line_directive_falls_back_to_the_prolog(bb: BBBed) -> None:
    """The burst buffer sees only the script: ``sbatch --fsx-stage=...`` on the command line
    is staged by the node's Prolog (in the allocation), as in the Prolog/Epilog mode."""
    bb.client.put_object(Bucket=bb.bucket, Key="cli/y.txt", Body=b"from the command line")
    work = f"{bb.scratch}/%u/%j"
    job_id = bb.submit(
        '#!/bin/sh\ncat "$(dirname "$0")" >/dev/null 2>&1; echo ok\n',
        f"--fsx-stage=in,s3://{bb.bucket}/cli/y.txt,{work}/y.txt",
    )
    record = bb.cluster.wait(job_id, timeout=90)
    assert record["JobState"] == "COMPLETED", bb.show_job(job_id)
    assert record.get("BurstBufferState") is None
    state = bb.wait_epilog(job_id)
    assert state.mode == "hooks" and state.prolog.status is HookStatus.DONE
    staged = bb.scratch / bb.user / str(job_id) / "y.txt"
    assert staged.read_bytes() == b"from the command line"


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("in,s3://not-{b}/in/,{s}/%u/%j/in/", "reading s3://not-{b}/in/ is not allowed"),
        ("out,{s}/%u/%j/out/,s3://{b}/out/,when=sucess", "got 'sucess'"),
    ],
)
def test_sbatch_refuses_a_refused_directive_before_the_job_reaches_the_lua(
    bb: BBBed, template: str, expected: str
) -> None:
    """The #SBATCH lines the burst buffer would stage are checked by sbatch (the SPANK
    plugin's checker): the job never reaches slurmctld, so neither job_process nor a
    stage-in ever sees it."""
    directive = template.format(b=bb.bucket, s=bb.scratch)
    name = f"bb-refused-{uuid.uuid4().hex[:8]}"
    script = bb.cluster.user_workdir(bb.user) / f"{name}.sbatch"
    script.write_text(f"#!/bin/sh\n#SBATCH --job-name={name}\n#SBATCH --fsx-stage={directive}\n")
    proc = bb.cluster.user_command(bb.user, ["/usr/bin/sbatch", str(script)], cwd=script.parent)
    assert proc.returncode != 0, proc
    assert f"sbatch: error: --fsx-stage={directive}: " in proc.stderr, proc.stderr
    assert expected.format(b=bb.bucket) in proc.stderr
    assert name not in bb.cluster.scontrol("show", "job", "-o")
    # Without the checker (another plugstack on the client) the same script is a burst
    # buffer job: the refusal above is the checker's.
    job_id = bb.cluster.without_submit_check().submit(script.read_text(), bb.user)
    shown = bb.show_job(job_id)
    bb.cluster.user_command(bb.user, ["/usr/bin/scancel", str(job_id)])
    assert f"JobName={name}" in shown and "BurstBuffer=" in shown, shown


def _staging_pids(job_id: int, phase: str) -> list[int]:
    """The ``fsx-stage bb PHASE JOBID`` processes of this job (python, not sudo or sh)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [a.decode(errors="replace") for a in argv if a]
        if words[-3:] == ["bb", phase, str(job_id)] and "python" in words[0]:
            pids.append(int(entry))
    return pids


def test_staging_process_killed_during_data_in_holds_then_release_completes_once(
    bb: BBBed,
) -> None:
    assert bb.proxy is not None
    names = [f"k{i}.bin" for i in range(4)]
    prefix = f"kill-{uuid.uuid4().hex[:6]}"
    for name in names:
        bb.client.put_object(Bucket=bb.bucket, Key=f"{prefix}/{name}", Body=name.encode() * 999)
    bb.proxy.set_faults(latency_s=10.0, latency_rate=1.0, methods={"GET"})
    job_id = bb.submit(
        f"""#!/bin/sh
#SBATCH --fsx-stage=in,s3://{bb.bucket}/{prefix}/,{bb.scratch}/%u/%j/in/
ls "$FSX_STAGE_IN_1"
"""
    )
    store = StateStore(bb.site.state_dir)

    def running(_record: dict[str, str]) -> bool:
        state = store.load(job_id)
        return state is not None and state.prolog.status is HookStatus.RUNNING

    bb.watch(job_id, running, timeout=90)
    pids = _staging_pids(job_id, "data_in")
    assert pids
    for pid in pids:
        os.kill(pid, 9)
    bb.watch(job_id, _held, timeout=60)
    assert "no verdict" in bb.squeue_reason(job_id)
    bb.proxy.set_faults()
    bb.cluster.scontrol("release", str(job_id))
    final = bb.watch(job_id, lambda r: r["JobState"] in ("COMPLETED", "FAILED"), timeout=120)
    assert final[-1][0]["JobState"] == "COMPLETED", bb.show_job(job_id)
    staged = bb.scratch / bb.user / str(job_id) / "in"
    assert sorted(p.name for p in staged.iterdir()) == names  # no temporary left behind
    for name in names:
        assert (staged / name).read_bytes() == name.encode() * 999
    assert sorted(bb.output(job_id).split()) == names


def test_scancel_hurry_skips_the_flush_and_records_the_results_pending(bb: BBBed) -> None:
    job_id = bb.submit(
        f"""#!/bin/sh
#SBATCH --fsx-stage=out,{bb.scratch}/%u/%j/out/,s3://{bb.bucket}/hurry/%j/
mkdir -p "$FSX_STAGE_OUT_1"
echo partial > "$FSX_STAGE_OUT_1/p.txt"
sleep 600
"""
    )
    bb.watch(job_id, lambda r: r["JobState"] == "RUNNING")
    kept = bb.scratch / bb.user / str(job_id) / "out" / "p.txt"
    wait_until(kept.exists, 30, f"the job did not write {kept}")
    cancel = bb.cluster.user_command(bb.user, ["/usr/bin/scancel", "--hurry", str(job_id)])
    assert cancel.returncode == 0, cancel.stderr
    store = StateStore(bb.site.state_dir)

    def torn_down() -> bool:
        # A flush records what it owes before it decides on it: the record is the
        # teardown's last word once its run is done.
        state = store.load(job_id)
        return state is not None and state.epilog.status is HookStatus.DONE

    wait_until(torn_down, 60, lambda: bb.show_job(job_id))
    record = PendingStore(store).load(job_id)
    assert record is not None and [e.status for e in record.entries] == [EntryStatus.PENDING]
    assert "scancel --hurry" in (record.entries[0].error or "")
    assert kept.read_text() == "partial\n"
    listing = bb.client.list_objects_v2(Bucket=bb.bucket, Prefix=f"hurry/{job_id}/")
    assert listing.get("KeyCount", 0) == 0
    env = {**os.environ, "FSX_STAGE_CONFIG": str(bb.site.config)}
    proc = subprocess.run(
        [bb.fsx_stage, "flush", "--pending", "--job", str(job_id)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    body = bb.client.get_object(Bucket=bb.bucket, Key=f"hurry/{job_id}/p.txt")["Body"].read()
    assert body == b"partial\n"


def test_flush_wait_keeps_the_job_in_stage_out_until_s3_takes_the_results(bb: BBBed) -> None:
    """With ``flush_wait`` an S3 outage at the end of a job keeps it in STAGE_OUT: its
    ``afterburstbuffer`` dependent starts only once the results are in S3."""
    flag = bb.scratch / bb.user / f"go-{uuid.uuid4().hex[:8]}"
    job_id = bb.submit(
        f"""#!/bin/sh
#SBATCH --fsx-stage=out,{bb.scratch}/%u/%j/out/,s3://{bb.bucket}/wait/%j/
mkdir -p "$FSX_STAGE_OUT_1"
echo late > "$FSX_STAGE_OUT_1/w.txt"
while [ ! -e {flag} ]; do sleep 0.2; done
"""
    )
    dependent = bb.submit("#!/bin/sh\necho dependent\n", f"--dependency=afterburstbuffer:{job_id}")
    bb.watch(job_id, lambda r: r["JobState"] == "RUNNING")
    bb.bb_config(alive=False, flush_wait=120)
    flag.touch()
    pending = PendingStore(StateStore(bb.site.state_dir))

    def refused() -> bool:
        # A first attempt failed (before it, the record holds only the flush's intent).
        record = pending.load(job_id)
        return record is not None and all(e.error != Epilog.intent for e in record.entries)

    wait_until(refused, 60, lambda: bb.show_job(job_id))
    # The flush starts as the script ends: the node's Epilog may still show COMPLETING.
    assert bb.record(job_id)["JobState"] in ("COMPLETING", "STAGE_OUT")
    assert bb.record(dependent)["JobState"] == "PENDING"
    bb.bb_config(flush_wait=120)  # S3 is back: the next attempt (within 5 s) flushes
    final = bb.watch(job_id, lambda r: r["JobState"] == "COMPLETED", timeout=90)[-1][0]
    assert final["JobState"] == "COMPLETED"
    body = bb.client.get_object(Bucket=bb.bucket, Key=f"wait/{job_id}/w.txt")["Body"].read()
    assert body == b"late\n"
    assert pending.load(job_id) is None
    assert "fsx-stage" not in bb.squeue_reason(job_id)
    state = StateStore(bb.site.state_dir).load(job_id)
    assert state is not None
    [entry] = state.phase_entries(Phase.FLUSH)
    assert entry.status is EntryStatus.DONE and entry.finished_at is not None
    dep = bb.watch(dependent, lambda r: r["JobState"] == "COMPLETED", timeout=90)[-1][0]
    assert _ts(dep["StartTime"]) >= int(entry.finished_at)  # scontrol: whole seconds
    bb.bb_config()


def _ts(text: str) -> float:
    return time.mktime(time.strptime(text, "%Y-%m-%dT%H:%M:%S"))


# -- slurmctld restarts and a killed flush (every phase idempotent) -------------------------


def _kill_and_restart_slurmctld(cluster: SlurmCluster) -> None:
    """SIGKILL slurmctld by its pid (no state save, no goodbye to its scripts), then start
    it again from the same StateSaveLocation and wait until it answers."""
    cluster.kill_daemon("slurmctld")
    cluster.restart_daemon("slurmctld")
    deadline = time.monotonic() + 60
    while True:
        try:
            cluster.scontrol("ping")
            return
        except ClusterError:
            assert time.monotonic() < deadline, "slurmctld did not come back"
            time.sleep(0.5)


def _saved_after(cluster: SlurmCluster, name: str, moment: float) -> bool:
    """slurmctld wrote its state file ``name`` after ``moment``: ``job_state`` (soon after a
    job is submitted: a SIGKILL before that loses the job itself) or ``burst_buffer_lua_state``
    (every 30 s at most on 22.05)."""
    path = cluster.layout.state_dir / name
    return path.exists() and path.stat().st_mtime > moment


def _random_objects(bb: BBBed, prefix: str, count: int, size: int) -> dict[str, bytes]:
    bodies = {f"r{i}.bin": os.urandom(size) for i in range(count)}
    for name, body in bodies.items():
        bb.client.put_object(Bucket=bb.bucket, Key=f"{prefix}/{name}", Body=body)
    return bodies


def _keys(bb: BBBed, prefix: str) -> list[str]:
    listing = bb.client.list_objects_v2(Bucket=bb.bucket, Prefix=prefix)
    return sorted(item["Key"] for item in listing.get("Contents", []))


def _sha256_lines(bodies: dict[str, bytes]) -> list[str]:
    return [f"{hashlib.sha256(body).hexdigest()}  {name}" for name, body in sorted(bodies.items())]


def test_slurmctld_killed_during_data_in_restages_and_the_job_runs_on_complete_inputs(
    bb: BBBed,
) -> None:
    """SIGKILL of slurmctld while data_in moves bytes: the data_in process outlives it
    (slurmscriptd's child), the restarted slurmctld runs data_in again, and the second run
    waits for the first under the job's lock, then finds the stage-in done. The job starts
    once, after every input is in place, byte for byte."""
    assert bb.proxy is not None
    prefix = f"ctld-in-{uuid.uuid4().hex[:6]}"
    bodies = _random_objects(bb, prefix, 8, 64 * 1024)
    bb.proxy.set_faults(latency_s=8.0, latency_rate=1.0, methods={"GET"})
    submitted = time.time()
    job_id = bb.submit(
        f"""#!/bin/sh
#SBATCH --fsx-stage=in,s3://{bb.bucket}/{prefix}/,{bb.scratch}/%u/%j/in/
echo "started $(date +%s.%N)"
cd "$FSX_STAGE_IN_1" && ls -A && sha256sum r*.bin
"""
    )
    store = StateStore(bb.site.state_dir)

    def staging(_record: dict[str, str]) -> bool:
        state = store.load(job_id)
        return (
            state is not None
            and state.prolog.status is HookStatus.RUNNING
            and state.prolog.started_at is not None
            and _saved_after(bb.cluster, "job_state", submitted)
            and _saved_after(bb.cluster, "burst_buffer_lua_state", state.prolog.started_at)
        )

    try:
        bb.watch(job_id, staging, timeout=90)
        assert _staging_pids(job_id, "data_in")
        _kill_and_restart_slurmctld(bb.cluster)
        samples = bb.watch(job_id, lambda r: r["JobState"] != "PENDING", timeout=240)
    finally:
        bb.proxy.set_faults()
    assert all(record["JobState"] == "PENDING" for record, _node in samples[:-1]), samples
    final = bb.watch(job_id, lambda r: r["JobState"] in ("COMPLETED", "FAILED"), timeout=120)
    assert final[-1][0]["JobState"] == "COMPLETED", bb.show_job(job_id)
    state = store.load(job_id)
    assert state is not None and state.mode == "burst_buffer"
    assert state.prolog.status is HookStatus.DONE and state.prolog.finished_at is not None
    [entry] = state.phase_entries(Phase.STAGE_IN)
    assert entry.status is EntryStatus.DONE
    assert (entry.objects, entry.bytes) == (8, 8 * 64 * 1024)
    output = bb.output(job_id)
    assert float(output.split()[1]) > state.prolog.finished_at  # started on complete inputs
    lines = output.splitlines()
    assert lines[1:9] == sorted(bodies), output  # ls -A: no temporary left behind
    assert lines[9:] == _sha256_lines(bodies), output
    assert not _staging_pids(job_id, "data_in")  # the orphaned run ended too


def _write_results_script(bb: BBBed, prefix: str, bodies: dict[str, bytes], flag: Path) -> str:
    """A job that writes ``bodies`` (from a copy in the user's scratch) as its results,
    then waits for ``flag``."""
    source = bb.scratch / bb.user / f"src-{uuid.uuid4().hex[:8]}"
    source.mkdir()
    for name, body in bodies.items():
        (source / name).write_bytes(body)
    shutil.chown(source, user=bb.user)
    return f"""#!/bin/sh
#SBATCH --fsx-stage=out,{bb.scratch}/%u/%j/out/,s3://{bb.bucket}/{prefix}/%j/
mkdir -p "$FSX_STAGE_OUT_1"
cp {source}/*.bin "$FSX_STAGE_OUT_1"/
while [ ! -e {flag} ]; do sleep 0.2; done
"""


def _flushing(
    store: StateStore, job_id: int, also: Callable[[JobState], bool] = lambda _state: True
) -> Callable[[dict[str, str]], bool]:
    """A `BBBed.watch` test: the job's flush is running (and ``also`` holds for its state)."""

    def test(_record: dict[str, str]) -> bool:
        state = store.load(job_id)
        return state is not None and state.epilog.status is HookStatus.RUNNING and also(state)

    return test


def _assert_results_once(bb: BBBed, prefix: str, job_id: int, bodies: dict[str, bytes]) -> None:
    """Every result in S3 exactly once, byte for byte, and nothing else under the prefix."""
    assert _keys(bb, f"{prefix}/") == sorted(f"{prefix}/{job_id}/{n}" for n in bodies)
    for name, body in bodies.items():
        got = bb.client.get_object(Bucket=bb.bucket, Key=f"{prefix}/{job_id}/{name}")
        assert got["Body"].read() == body, name


def _stage_out_saved(cluster: SlurmCluster, state: JobState) -> bool:
    """slurmctld saved the job in stage-out (``job_state``, within seconds of a change): a
    SIGKILL before that recovers the job as it was before it ran, and runs it again."""
    started = state.epilog.started_at
    return started is not None and _saved_after(cluster, "job_state", started)


def _stage_out_recovered(cluster: SlurmCluster, state: JobState) -> bool:
    """A SIGKILLed slurmctld will run data_out again for this job once restarted: its job
    is saved in stage-out and its burst buffer record is in ``burst_buffer_lua_state``
    (written after the stage-in created it; 22.05 saves that file every 30 s at most, from
    slurmctld's start)."""
    started = state.prolog.started_at
    return (
        started is not None
        and _saved_after(cluster, "burst_buffer_lua_state", started)
        and _stage_out_saved(cluster, state)
    )


def _results_job(
    bb: BBBed, prefix: str, put_latency_s: float
) -> tuple[int, dict[str, bytes], Path]:
    """A running job writing six random results, waiting for the returned flag before it
    ends; from now on every PUT through the proxy waits ``put_latency_s``."""
    assert bb.proxy is not None
    bodies = {f"o{i}.bin": os.urandom(48 * 1024) for i in range(6)}
    flag = bb.scratch / bb.user / f"go-{uuid.uuid4().hex[:8]}"
    job_id = bb.submit(_write_results_script(bb, prefix, bodies, flag))
    bb.watch(job_id, lambda r: r["JobState"] == "RUNNING")
    bb.proxy.set_faults(latency_s=put_latency_s, latency_rate=1.0, methods={"PUT"})
    return job_id, bodies, flag


def _assert_flushed_once(
    bb: BBBed, store: StateStore, prefix: str, job_id: int, bodies: dict[str, bytes]
) -> EntryState:
    """Every result in S3 once, complete; the flush DONE; no pending record. Returns the
    flush entry (its counts are those of the attempt that finished it)."""
    _assert_results_once(bb, prefix, job_id, bodies)
    state = store.load(job_id)
    assert state is not None and state.epilog.status is HookStatus.DONE
    [entry] = state.phase_entries(Phase.FLUSH)
    assert entry.status is EntryStatus.DONE
    assert PendingStore(store).load(job_id) is None
    return entry


def _wait_no_staging(job_id: int, phase: str, timeout: float = 90) -> None:
    wait_until(
        lambda: not _staging_pids(job_id, phase),
        timeout,
        f"fsx-stage bb {phase} {job_id} still runs",
        interval=0.5,
    )


def test_slurmctld_killed_during_data_out_flushes_every_result_once(bb: BBBed) -> None:
    """SIGKILL of slurmctld while data_out sends results, once slurmctld saved the job's
    burst buffer record: the restarted slurmctld runs the stage-out again; the second
    data_out waits for the first under the job's lock and finds the flush done. Every
    result lands once, complete; the job ends COMPLETED."""
    assert bb.proxy is not None
    prefix = f"ctld-out-{uuid.uuid4().hex[:6]}"
    store = StateStore(bb.site.state_dir)
    try:
        job_id, bodies, flag = _results_job(bb, prefix, put_latency_s=10.0)
        state = store.load(job_id)
        assert state is not None and state.prolog.started_at is not None
        started = state.prolog.started_at
        bb.watch(job_id, lambda r: _saved_after(bb.cluster, "burst_buffer_lua_state", started))
        flag.touch()

        recoverable = _flushing(store, job_id, lambda s: _stage_out_recovered(bb.cluster, s))
        bb.watch(job_id, recoverable, timeout=90)
        assert _staging_pids(job_id, "data_out")
        _kill_and_restart_slurmctld(bb.cluster)
        final = bb.watch(job_id, lambda r: r["JobState"] in ("COMPLETED", "FAILED"), timeout=240)
    finally:
        bb.proxy.set_faults()
    assert final[-1][0]["JobState"] == "COMPLETED", bb.show_job(job_id)
    assert "fsx-stage" not in bb.squeue_reason(job_id)
    entry = _assert_flushed_once(bb, store, prefix, job_id, bodies)
    assert (entry.attempts, entry.objects) == (1, len(bodies))  # the rerun sent nothing
    _wait_no_staging(job_id, "data_out")  # the orphaned run ends too


def test_slurmctld_killed_before_saving_the_stage_out_the_flush_completes_and_status_says_so(
    bb: BBBed,
) -> None:
    """SIGKILL of slurmctld during data_out before it saved the job's burst buffer record
    (a job shorter than 22.05's 30 s state save): Slurm shows the job STAGE_OUT and never
    runs data_out again (its limitation; no command ends the job, docs/modes.md). The
    orphaned data_out still finishes the flush, and ``fsx-stage status`` says that the
    results are all in S3 and that nothing is left to do. Slurm counts the stage-out as
    done: an ``afterburstbuffer`` dependent starts."""
    assert bb.proxy is not None
    _kill_and_restart_slurmctld(bb.cluster)  # its 30 s state-save clock starts now
    prefix = f"ctld-lost-{uuid.uuid4().hex[:6]}"
    store = StateStore(bb.site.state_dir)
    try:
        job_id, bodies, flag = _results_job(bb, prefix, put_latency_s=6.0)
        flag.touch()
        bb.watch(job_id, _flushing(store, job_id, lambda s: _stage_out_saved(bb.cluster, s)))
        state = store.load(job_id)
        assert state is not None and state.prolog.started_at is not None
        assert not _saved_after(bb.cluster, "burst_buffer_lua_state", state.prolog.started_at)
        _kill_and_restart_slurmctld(bb.cluster)
        _wait_no_staging(job_id, "data_out")  # the orphaned run finished its flush
    finally:
        bb.proxy.set_faults()
    entry = _assert_flushed_once(bb, store, prefix, job_id, bodies)
    assert (entry.attempts, entry.objects) == (1, len(bodies))
    time.sleep(5)  # Slurm would have run data_out (and ended the job) by now
    assert bb.record(job_id)["JobState"] == "STAGE_OUT", bb.show_job(job_id)
    slurm_conf = f"SLURM_CONF={bb.cluster.env['SLURM_CONF']}"
    status = bb.as_user(slurm_conf, bb.fsx_stage, "status", str(job_id))
    assert status.returncode == 0, status.stdout + status.stderr
    assert f"job {job_id} shows STAGE_OUT but its flush is done" in status.stdout
    assert "no command ends it" in status.stdout, status.stdout
    cancel = bb.cluster.user_command(bb.user, ["/usr/bin/scancel", "--hurry", str(job_id)])
    assert cancel.returncode == 0, cancel.stderr
    dependent = bb.submit("#!/bin/sh\necho dependent\n", f"--dependency=afterburstbuffer:{job_id}")
    bb.watch(dependent, lambda r: r["JobState"] == "COMPLETED", timeout=60)
    assert bb.record(job_id)["JobState"] == "STAGE_OUT"  # scancel --hurry changed nothing
    _assert_flushed_once(bb, store, prefix, job_id, bodies)


def test_staging_process_killed_during_data_out_the_teardown_finishes_the_flush(
    bb: BBBed,
) -> None:
    """SIGKILL of ``fsx-stage bb data_out`` while it PUTs (slowed): the lua gets no verdict,
    Slurm 22.05 fails the stage-out and runs the teardown (``Flags=TeardownFailure``) with
    the job still STAGE_OUT; the teardown finishes the flush. The job ends COMPLETED only
    with every result in S3 once, complete, no pending record."""
    assert bb.proxy is not None
    prefix = f"kill-out-{uuid.uuid4().hex[:6]}"
    store = StateStore(bb.site.state_dir)
    try:
        job_id, bodies, flag = _results_job(bb, prefix, put_latency_s=6.0)
        flag.touch()
        bb.watch(job_id, _flushing(store, job_id), timeout=60)
        time.sleep(2)  # PUTs under way
        pids = _staging_pids(job_id, "data_out")
        assert pids
        for pid in pids:
            os.kill(pid, 9)
        flush_when_released: list[HookStatus] = []

        def released(record: dict[str, str]) -> bool:
            if record["JobState"] in ("COMPLETING", "STAGE_OUT"):
                return False
            state = store.load(job_id)
            flush_when_released.append(state.epilog.status if state else HookStatus.NOT_RUN)
            return True

        final = bb.watch(job_id, released)[-1][0]
    finally:
        bb.proxy.set_faults()
    assert final["JobState"] == "COMPLETED", bb.show_job(job_id)
    assert flush_when_released == [HookStatus.DONE]  # never COMPLETED with results missing
    entry = _assert_flushed_once(bb, store, prefix, job_id, bodies)
    assert entry.attempts == 2  # the killed run, then the teardown's
    scratch = bb.scratch / bb.user / str(job_id) / "out"
    assert sorted(p.name for p in scratch.iterdir()) == sorted(bodies)  # nothing torn
