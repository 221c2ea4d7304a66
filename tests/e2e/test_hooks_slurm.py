"""The hooks on the real Slurm cluster with SeaweedFS, as the non-root job user.

Each test submits a real batch job with ``#SBATCH --fsx-stage`` lines; slurmd runs the
product Prolog/Epilog (``plugin/prolog`` -> ``fsx-stage prolog``) as root. The site config
these tests write is the cluster's ``fsx-stage.toml`` (restored afterwards).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import re
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.checkpoints.layout import newest_generation
from tests.hooks.sitecfg import Site, make_site
from tests.testbed.cluster import SlurmCluster
from tests.testbed.demo import SITE_CONFIG_LOCK
from tests.testbed.seaweed import READER_ACCESS_KEY, READER_SECRET_KEY
from tests.testbed.wait import wait_until

from fsx_stage.hooks.state import EntryStatus, HookStatus, JobState, Phase, StateStore

pytestmark = pytest.mark.slurm

HOOK_SETTLED = {HookStatus.DONE, HookStatus.SKIPPED, HookStatus.NODE_FAULT}


@dataclass
class Bed:
    cluster: SlurmCluster
    s3: Any
    client: Any
    bucket: str
    site: Site
    user: str

    @property
    def fsx_stage(self) -> str:
        """The installation the cluster's hooks run (readable by the job user)."""
        return str(self.cluster.hooks_home() / "bin" / "fsx-stage")

    @property
    def scratch(self) -> Path:
        return self.site.scratch

    def live_config(self, **kwargs: Any) -> None:
        self.site.write_config(self.s3.endpoint_url, [self.bucket], workers=2, **kwargs)

    @contextlib.contextmanager
    def s3_down(self) -> Iterator[None]:
        """The hooks see S3 unreachable (a port nobody listens on) until the block ends."""
        self.site.write_unreachable_config([self.bucket], workers=2)
        try:
            yield
        finally:
            self.live_config()

    def submit(self, script: str, *extra: str) -> int:
        return self.cluster.submit(script, self.user, list(extra))

    def run_job(
        self, script: str, *extra: str, ends: str = "COMPLETED", timeout: float = 90
    ) -> tuple[int, JobState]:
        """Submit ``script``, wait until Slurm reports it ``ends`` and its Epilog is done."""
        job_id = self.submit(script, *extra)
        record = self.cluster.wait(job_id, timeout=timeout)
        assert record["JobState"] == ends, self.show_job(job_id)
        return job_id, self.wait_epilog(job_id)

    def cancel(self, job_id: int) -> None:
        subprocess.run(
            ["/usr/bin/scancel", str(job_id)], env=self.cluster.command_env(), check=False
        )

    def flush_pending(self, job_id: int) -> None:
        """``fsx-stage flush --pending --job`` as root, as an admin runs it; it must succeed."""
        flush = subprocess.run(
            [self.fsx_stage, "flush", "--pending", "--job", str(job_id)],
            env={**os.environ, "FSX_STAGE_CONFIG": str(self.site.config)},
            capture_output=True,
            text=True,
            check=False,
        )
        assert flush.returncode == 0, flush.stdout + flush.stderr

    def state(self, job_id: int) -> JobState | None:
        return StateStore(self.site.state_dir).load(job_id)

    def wait_epilog(self, job_id: int, restart: int = 0, timeout: float = 90) -> JobState:
        """The Epilog runs after Slurm reports the job ended: wait for its state."""

        def settled() -> JobState | None:
            state = self.state(job_id)
            if state is None or state.restart_count != restart:
                return None
            return state if state.epilog.status in HOOK_SETTLED else None

        return wait_until(
            settled, timeout, lambda: f"job {job_id}: epilog not done: {self.state(job_id)}"
        )

    def job_task(self, job_id: int) -> int:
        """The array task id Slurm gave job ``job_id`` (for the array's own id, scontrol
        lists every task: take the line of ``job_id`` itself)."""
        shown = self.cluster.scontrol("show", "job", "-o", str(job_id))
        match = re.search(rf"^JobId={job_id} ArrayJobId=\d+ ArrayTaskId=(\d+) ", shown, re.M)
        assert match, shown
        return int(match.group(1))

    def show_job(self, job_id: int) -> str:
        return self.cluster.scontrol("show", "job", str(job_id))

    def output(self, job_id: int) -> str:
        path = self.cluster.user_workdir(self.user) / f"slurm-{job_id}.out"
        return path.read_text() if path.exists() else ""

    def node_state(self) -> str:
        proc = subprocess.run(
            ["/usr/bin/sinfo", "-h", "-N", "-o", "%T"],
            env=self.cluster.command_env(),
            capture_output=True,
            text=True,
            check=True,
        )
        return proc.stdout.strip()

    def assert_node_in_service(self) -> None:
        """Not drained, not down: idle (or busy with other sessions' jobs)."""
        state = self.node_state()
        assert state in {"idle", "mixed", "allocated", "completing"}, state

    def as_user(self, *argv: str) -> subprocess.CompletedProcess[str]:
        env = {"FSX_STAGE_CONFIG": str(self.site.config)}
        return subprocess.run(
            [
                "/usr/sbin/runuser",
                "-u",
                self.user,
                "--",
                "/usr/bin/env",
                *(f"{k}={v}" for k, v in env.items()),
                *argv,
            ],
            capture_output=True,
            text=True,
            check=False,
        )


@pytest.fixture(scope="module")
def bed(
    slurm_cluster: SlurmCluster, s3_server: Any, s3_client: Any, job_user: str
) -> Iterator[Bed]:
    # The cluster's site config is shared with `make demo`: one writer at a time.
    lock = os.open(slurm_cluster.layout.root / SITE_CONFIG_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)
    config_path = slurm_cluster.layout.fsx_stage_config
    previous = config_path.read_bytes() if config_path.exists() else None
    site = make_site(s3_server.access_key, s3_server.secret_key, config=config_path)
    bucket = f"e2e-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=bucket)
    slurm_cluster.ensure_node_usable()  # an earlier session may have drained it
    b = Bed(slurm_cluster, s3_server, s3_client, bucket, site, job_user)
    site.user_dir(job_user)
    b.live_config()
    yield b
    if previous is None:
        config_path.unlink(missing_ok=True)
    else:
        config_path.write_bytes(previous)
    s3_client.delete_bucket(Bucket=bucket)
    site.cleanup()
    os.close(lock)


def _objects(b: Bed, prefix: str) -> dict[str, bytes]:
    listing = b.client.list_objects_v2(Bucket=b.bucket, Prefix=prefix).get("Contents", [])
    return {
        o["Key"]: b.client.get_object(Bucket=b.bucket, Key=o["Key"])["Body"].read() for o in listing
    }


def test_job_stages_in_computes_and_flushes_out(bed: Bed) -> None:
    for name, text in {"a.txt": "one two", "b.txt": "three four five", "c.txt": "six"}.items():
        bed.client.put_object(Bucket=bed.bucket, Key=f"data/{name}", Body=text.encode())
    work = f"{bed.scratch}/%u/%j"
    job_id, state = bed.run_job(
        f"""#!/bin/sh
#SBATCH --fsx-stage=in,s3://{bed.bucket}/data/,{work}/in/
#SBATCH --fsx-stage=out,{work}/out/,s3://{bed.bucket}/results/%j/
cd {bed.scratch}/$(id -un)/$SLURM_JOB_ID
mkdir out
for f in in/*.txt; do wc -w < "$f" | tr -d ' ' > "out/$(basename "$f" .txt).count"; done
""",
        timeout=120,
    )
    assert state.prolog.status is HookStatus.DONE and state.epilog.status is HookStatus.DONE
    results = _objects(bed, f"results/{job_id}/")
    assert results == {
        f"results/{job_id}/a.count": b"2\n",
        f"results/{job_id}/b.count": b"3\n",
        f"results/{job_id}/c.count": b"1\n",
    }
    head = bed.client.head_object(Bucket=bed.bucket, Key=f"results/{job_id}/a.count")
    uid = pwd.getpwnam(bed.user).pw_uid
    meta = head["Metadata"]
    assert meta["file-owner"] == str(uid)
    assert {"file-group", "file-permissions", "file-mtime"} <= set(meta)
    staged = bed.scratch / bed.user / str(job_id) / "in" / "a.txt"
    assert staged.stat().st_uid == uid
    status = bed.as_user(bed.fsx_stage, "status", str(job_id))
    assert status.returncode == 0, status.stderr
    assert "stage_in" in status.stdout and "flush" in status.stdout and "done" in status.stdout


def test_job_killed_by_its_time_limit_still_flushes_its_checkpoint(bed: Bed) -> None:
    job_id, state = bed.run_job(
        f"""#!/bin/sh
#SBATCH --time=0:05
#SBATCH --fsx-stage=checkpoint,{bed.scratch}/%u/ckpt-%j/,s3://{bed.bucket}/ckpt/%j/
d={bed.scratch}/$(id -un)/ckpt-$SLURM_JOB_ID
mkdir -p $d
echo "step 1 of a long run" > $d/state
sleep 600
""",
        ends="TIMEOUT",
        timeout=150,
    )
    assert state.job_succeeded is False
    assert newest_generation(bed.client, bed.bucket, f"ckpt/{job_id}/") == {
        "state": b"step 1 of a long run\n"
    }


def test_requeued_job_restores_its_checkpoint(bed: Bed) -> None:
    job_id = bed.submit(
        f"""#!/bin/sh
#SBATCH --fsx-stage=checkpoint,{bed.scratch}/%u/ckpt-%j/,s3://{bed.bucket}/ckpt/%j/
#SBATCH --fsx-stage=out,{bed.scratch}/%u/res-%j/,s3://{bed.bucket}/res/%j/
me=$(id -un)
d={bed.scratch}/$me/ckpt-$SLURM_JOB_ID
r={bed.scratch}/$me/res-$SLURM_JOB_ID
mkdir -p $d $r
if [ -f $d/step ]; then echo "resumed after: $(cat $d/step)" > $r/result.txt; exit 0; fi
echo "first run" > $d/step
sleep 600
"""
    )
    step = bed.scratch / bed.user / f"ckpt-{job_id}" / "step"
    wait_until(step.exists, 60, lambda: bed.show_job(job_id))
    bed.cluster.scontrol("requeue", str(job_id))
    first = bed.wait_epilog(job_id, restart=0)
    assert first.job_succeeded is False
    assert newest_generation(bed.client, bed.bucket, f"ckpt/{job_id}/") == {"step": b"first run\n"}
    assert _objects(bed, f"res/{job_id}/") == {}  # results flush when the job ends
    # The rerun may land on another node: scratch there has no checkpoint.
    shutil.rmtree(step.parent)
    record = bed.cluster.wait(job_id, timeout=120)
    assert record["JobState"] == "COMPLETED", bed.show_job(job_id)
    assert record["Restarts"] == "1"
    bed.wait_epilog(job_id, restart=1)
    assert _objects(bed, f"res/{job_id}/") == {
        f"res/{job_id}/result.txt": b"resumed after: first run\n"
    }


def _assert_refused(bed: Bed, directive: str, expected: str) -> None:
    """The Prolog enforces the policy: sbatch's check is a convenience a client can skip
    (here: a client whose plugstack has no checker, tests/testbed/cluster.py)."""
    marker = bed.scratch / bed.user / f"ran-{uuid.uuid4().hex[:8]}"
    job_id = bed.cluster.without_submit_check().submit(
        f"#!/bin/sh\n#SBATCH --fsx-stage={directive}\ntouch {marker}\n", bed.user
    )
    record = bed.cluster.wait(job_id, timeout=90)
    shown = bed.show_job(job_id)
    assert record["JobState"] == "CANCELLED", shown
    assert f"AdminComment=fsx-stage: job {job_id} not started:" in shown
    assert expected in shown
    assert not marker.exists()  # the user's script never ran
    told = bed.output(job_id)
    assert f"fsx-stage: job {job_id} not started" in told and expected in told
    state = bed.wait_epilog(job_id)
    bed.assert_node_in_service()
    assert state.prolog.status is HookStatus.FAILED_JOB
    assert state.epilog.status is HookStatus.SKIPPED


def test_bad_directive_fails_the_job_not_the_node(bed: Bed) -> None:
    # Passes the SPANK plugin's syntax check, fails Python validation.
    _assert_refused(bed, f"in,s3://{bed.bucket}/data/,relative/dir/", "relative/dir/")


def test_policy_refusal_fails_the_job_not_the_node(bed: Bed) -> None:
    _assert_refused(bed, f"in,s3://not-{bed.bucket}/data/,{bed.scratch}/%u/x/", f"not-{bed.bucket}")


def test_missing_object_fails_the_job_not_the_node(bed: Bed) -> None:
    _assert_refused(bed, f"in,s3://{bed.bucket}/no/such.dat,{bed.scratch}/%u/m/", "no/such.dat")


def test_flush_during_s3_outage_is_kept_then_completed(bed: Bed) -> None:
    with bed.s3_down():
        job_id, state = bed.run_job(
            f"""#!/bin/sh
#SBATCH --fsx-stage=out,{bed.scratch}/%u/out-%j/,s3://{bed.bucket}/kept/%j/
d={bed.scratch}/$(id -un)/out-$SLURM_JOB_ID
mkdir -p $d && echo precious > $d/result.txt
"""
        )
    assert state.epilog.status is HookStatus.DONE  # exit 0: the node is not drained
    bed.assert_node_in_service()
    kept = bed.scratch / bed.user / f"out-{job_id}" / "result.txt"
    assert kept.read_text() == "precious\n"
    assert (bed.site.state_dir / "pending" / f"{job_id}.json").exists()
    status = bed.as_user(bed.fsx_stage, "status", str(job_id))
    assert "pending" in status.stdout, status.stdout + status.stderr
    bed.flush_pending(job_id)
    assert _objects(bed, f"kept/{job_id}/") == {f"kept/{job_id}/result.txt": b"precious\n"}
    assert not (bed.site.state_dir / "pending" / f"{job_id}.json").exists()


def test_s3_refusing_the_flush_keeps_it_pending(bed: Bed) -> None:
    admin = bed.site.credentials.read_text()
    bed.site.credentials.write_text(
        f"[default]\naws_access_key_id = {READER_ACCESS_KEY}\n"
        f"aws_secret_access_key = {READER_SECRET_KEY}\n"
    )
    try:
        job_id, state = bed.run_job(
            f"""#!/bin/sh
#SBATCH --fsx-stage=out,{bed.scratch}/%u/ro-%j/,s3://{bed.bucket}/ro/%j/
d={bed.scratch}/$(id -un)/ro-$SLURM_JOB_ID
mkdir -p $d && echo kept > $d/r.txt
"""
        )
    finally:
        bed.site.credentials.write_text(admin)
    entry = state.phase_entries(Phase.FLUSH)[0]
    assert (entry.status, entry.error_category) == (EntryStatus.PENDING, "access_denied")
    assert (bed.scratch / bed.user / f"ro-{job_id}" / "r.txt").read_text() == "kept\n"
    bed.assert_node_in_service()
    bed.flush_pending(job_id)
    assert _objects(bed, f"ro/{job_id}/") == {f"ro/{job_id}/r.txt": b"kept\n"}


def test_scratch_not_mounted_drains_the_node(bed: Bed) -> None:
    unmounted = bed.site.root / "unmounted"
    bed.scratch.rename(unmounted)
    job_id = 0
    try:
        job_id = bed.submit(
            f"#!/bin/sh\n#SBATCH --fsx-stage=in,s3://{bed.bucket}/data/,{bed.scratch}/%u/x/\ntrue\n"
        )
        wait_until(lambda: "drain" in bed.node_state(), 60, lambda: bed.show_job(job_id))
        state = bed.state(job_id)
        assert state is not None and state.prolog.status is HookStatus.NODE_FAULT
        assert "not available on this node" in (state.prolog.message or "")
        record = bed.cluster.wait(job_id, timeout=60)
        assert record["JobState"] == "PENDING"  # requeued by Slurm, held
    finally:
        unmounted.rename(bed.scratch)
        if job_id:
            bed.cancel(job_id)
        bed.cluster.ensure_node_usable()


def test_array_tasks_expand_their_own_patterns(bed: Bed) -> None:
    bed.client.put_object(Bucket=bed.bucket, Key="arr/in.txt", Body=b"x")
    first = bed.submit(
        f"""#!/bin/sh
#SBATCH --array=1-2
#SBATCH --job-name=arr
#SBATCH --fsx-stage=in,s3://{bed.bucket}/arr/in.txt,{bed.scratch}/%u/%x-%A-%a/
#SBATCH --fsx-stage=out,{bed.scratch}/%u/%x-%A-%a/,s3://{bed.bucket}/arr-out/%A/%a/
d={bed.scratch}/$(id -un)/arr-${{SLURM_ARRAY_JOB_ID}}-${{SLURM_ARRAY_TASK_ID}}
echo "task $SLURM_ARRAY_TASK_ID" > $d/out.txt
"""
    )

    # `scontrol show job ARRAY_ID` lists every task with its own job id.
    def both_tasks() -> set[int] | None:
        shown = bed.cluster.scontrol("show", "job", "-o", str(first))
        tasks = {int(m) for m in re.findall(rf"^JobId=(\d+) ArrayJobId={first} ", shown, re.M)}
        return tasks if len(tasks) == 2 else None

    tasks = wait_until(both_tasks, 60, lambda: bed.show_job(first))
    for job_id in sorted(tasks):
        assert bed.cluster.wait(job_id, timeout=120)["JobState"] == "COMPLETED"
        bed.wait_epilog(job_id)
    found = _objects(bed, "arr-out/")
    assert found[f"arr-out/{first}/1/out.txt"] == b"task 1\n"
    assert found[f"arr-out/{first}/2/out.txt"] == b"task 2\n"
    # `fsx-stage status A_T` names the task as Slurm does (not job "A" + "T" read as one int).
    for job_id in sorted(tasks):
        task = bed.job_task(job_id)
        status = bed.as_user(bed.fsx_stage, "status", f"{first}_{task}")
        assert status.returncode == 0, status.stdout + status.stderr
        assert status.stdout.startswith(f"job {job_id} (array task {first}_{task})"), status.stdout


def _admin_comment(bed: Bed, job_id: int) -> str:
    return bed.cluster.job(job_id).get("AdminComment", "").strip()


def test_a_flush_that_failed_shows_in_the_output_file_and_status(bed: Bed) -> None:
    job_id, state = bed.run_job(
        f"""#!/bin/sh
#SBATCH --fsx-stage=out,{bed.scratch}/%u/never-%j/,s3://{bed.bucket}/never/%j/
echo computed
"""
    )
    assert state.phase_entries(Phase.FLUSH)[0].status is EntryStatus.FAILED
    bed.assert_node_in_service()
    expected = f"fsx-stage: job {job_id}: not all results reached S3: directive 1 failed:"
    assert expected in bed.output(job_id)  # the job ended: Slurm takes no AdminComment now
    status = bed.as_user(bed.fsx_stage, "status", str(job_id))
    assert status.returncode == 1, status.stdout + status.stderr
    assert "error: " in status.stdout and "failed_job" not in status.stdout


def test_an_out_directory_written_without_its_slash_reaches_s3(bed: Bed) -> None:
    job_id, state = bed.run_job(
        f"""#!/bin/sh
#SBATCH --fsx-stage=out,{bed.scratch}/%u/%j/results,s3://{bed.bucket}/noslash/%j/
d={bed.scratch}/$(id -un)/$SLURM_JOB_ID/results
mkdir -p $d && echo 42 > $d/answer.txt
"""
    )
    assert state.phase_entries(Phase.FLUSH)[0].status is EntryStatus.DONE
    assert _objects(bed, f"noslash/{job_id}/") == {f"noslash/{job_id}/results/answer.txt": b"42\n"}
    assert bed.as_user(bed.fsx_stage, "status", str(job_id)).returncode == 0
    assert _admin_comment(bed, job_id) in ("", "(null)")


def test_a_pending_flush_shows_in_the_output_file_and_status(bed: Bed) -> None:
    with bed.s3_down():
        job_id, _state = bed.run_job(
            f"""#!/bin/sh
#SBATCH --fsx-stage=out,{bed.scratch}/%u/pend-%j/,s3://{bed.bucket}/pend/%j/
d={bed.scratch}/$(id -un)/pend-$SLURM_JOB_ID
mkdir -p $d && echo later > $d/r.txt
"""
        )
    told = bed.output(job_id)
    assert "directive 1 pending: " in told and "fsx-stage flush --pending" in told
    assert "http://" not in told  # no endpoint URLs: what failed, in words
    assert bed.as_user(bed.fsx_stage, "status", str(job_id)).returncode == 3
    bed.flush_pending(job_id)
    assert bed.as_user(bed.fsx_stage, "status", str(job_id)).returncode == 0


def test_a_held_job_released_after_the_outage_loses_its_held_comment(bed: Bed) -> None:
    bed.client.put_object(Bucket=bed.bucket, Key="held/in.txt", Body=b"x")
    with bed.s3_down():
        job_id = bed.submit(
            f"#!/bin/sh\n#SBATCH --fsx-stage=in,s3://{bed.bucket}/held/,{bed.scratch}/%u/h-%j/\n"
            "true\n"
        )
        record = bed.cluster.wait(job_id, timeout=90)
    assert record["JobState"] == "SPECIAL_EXIT", bed.show_job(job_id)  # requeued held
    assert "held (S3 unavailable)" in _admin_comment(bed, job_id)
    bed.cluster.scontrol("release", str(job_id))
    wait_until(
        lambda: bed.cluster.job(job_id)["JobState"] == "COMPLETED",
        120,
        lambda: bed.show_job(job_id),
    )
    bed.wait_epilog(job_id, restart=1)
    assert _admin_comment(bed, job_id) in ("", "(null)"), bed.show_job(job_id)


def test_full_scratch_holds_the_job_and_keeps_the_node(bed: Bed) -> None:
    bed.client.put_object(Bucket=bed.bucket, Key="big/blob", Body=os.urandom(12 * 1024 * 1024))
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m,mode=0755", "tmpfs", str(bed.scratch)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mount.stderr.strip()}")
    job_id = 0
    try:
        bed.site.user_dir(bed.user)
        bed.live_config(multipart_threshold="5MiB")
        job_id = bed.submit(
            f"#!/bin/sh\n#SBATCH --fsx-stage=in,s3://{bed.bucket}/big/blob,{bed.scratch}/%u/b/\n"
            "true\n"
        )
        record = bed.cluster.wait(job_id, timeout=90)
        assert record["JobState"] == "SPECIAL_EXIT", bed.show_job(job_id)  # held, not run
        comment = _admin_comment(bed, job_id)
        assert f"held (scratch full): directive 1: s3://{bed.bucket}/big/blob:" in comment
        assert "is full (no space left on device)" in comment and "S3 is back" not in comment
        bed.assert_node_in_service()  # one user filling shared scratch drains no node
    finally:
        if job_id:
            bed.cancel(job_id)
        subprocess.run(["umount", "-l", str(bed.scratch)], check=False)
        bed.live_config()
        bed.cluster.ensure_node_usable()


def test_an_afterok_dependent_waits_for_the_epilog_but_not_for_s3(bed: Bed) -> None:
    """What `afterok` means in Prolog/Epilog mode (docs/hooks.md): the dependent starts only
    after the Epilog ended, but a flush left pending does not fail the job it belongs to."""
    silent = socket.socket()  # takes connections, never answers: a flush that hangs
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    bed.site.write_config(
        f"http://127.0.0.1:{silent.getsockname()[1]}", [bed.bucket], workers=2, flush_budget=12
    )
    try:
        first = bed.submit(
            f"""#!/bin/sh
#SBATCH --fsx-stage=out,{bed.scratch}/%u/dep-%j/,s3://{bed.bucket}/dep/%j/
d={bed.scratch}/$(id -un)/dep-$SLURM_JOB_ID
mkdir -p $d && echo r > $d/r.txt
"""
        )
        second = bed.submit("#!/bin/sh\ndate +%s.%N\n", f"--dependency=afterok:{first}")
        assert bed.cluster.wait(second, timeout=120)["JobState"] == "COMPLETED"
        state = bed.wait_epilog(first)
    finally:
        bed.live_config()
        silent.close()
    assert bed.cluster.job(first)["JobState"] == "COMPLETED"  # its flush is pending
    assert state.phase_entries(Phase.FLUSH)[0].status is EntryStatus.PENDING
    started = float(bed.output(second).split()[0])
    assert state.epilog.finished_at is not None and started > state.epilog.finished_at
