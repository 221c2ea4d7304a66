"""The Prolog and Epilog end to end against SeaweedFS, without Slurm.

slurmd is replaced by a hook environment like the one it builds, and the Slurm commands
by recorders; everything else is real: the site config, the privilege-dropped worker
acting as the job user, the transfer core, the state directory and the pending queue.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import random
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.checkpoints.layout import checkpoint_object, newest_generation
from tests.hooks.sitecfg import Site, make_site
from tests.testbed.cluster import private_interpreter_dir
from tests.testbed.wait import wait_until

from fsx_stage.directives import encode_spank_values
from fsx_stage.hooks import epilog, flush, hook, prolog, staging
from fsx_stage.hooks.pending import PendingStore
from fsx_stage.hooks.state import EntryStatus, HookStatus, Phase, StateStore

_PRIVATE = private_interpreter_dir(Path(sys.prefix))
MiB = 1024 * 1024
pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the hooks run as root"),
    # The worker drops privileges in this very interpreter: the job user must be able
    # to read it (the e2e tests run the hooks from a venv over the system python).
    pytest.mark.skipif(
        _PRIVATE is not None,
        reason=f"this python lives under {_PRIVATE}, which the job user cannot read; "
        "run with a venv made from /usr/bin/python3",
    ),
]

HOST = socket.gethostname().split(".")[0]


@pytest.fixture
def site(s3_server: Any, bucket: str) -> Iterator[Site]:
    s = make_site(s3_server.access_key, s3_server.secret_key)
    s.write_config(s3_server.endpoint_url, [bucket])
    yield s
    s.cleanup()


class SlurmRecorder:
    """The hooks' `SlurmControl` here: answers ``scontrol show job`` as Slurm would and
    records what the hooks ask Slurm to do."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, str]] = []
        self.std_out = ""
        self.exit_code = "0:0"

    def show_job(self, job_id: int, env: Any = None) -> str:
        user = env["SLURM_JOB_USER"]
        uid = env["SLURM_JOB_UID"]
        return (
            f"JobId={job_id} JobName=test UserId={user}({uid}) GroupId=g({uid}) MCS_label=N/A "
            f"Priority=1 Nice=0 Account=(null) QOS=(null) JobState=RUNNING Reason=None "
            f"Restarts=0 BatchFlag=1 ExitCode={self.exit_code} NodeList={HOST} "
            f"StdErr={self.std_out} StdIn=/dev/null StdOut={self.std_out} Power="
        )

    def set_admin_comment(self, job_id: int, text: str, env: Any = None) -> None:
        self.calls.append(("comment", job_id, text))

    def cancel_job(self, job_id: int, env: Any = None) -> None:
        self.calls.append(("cancel", job_id, ""))

    def requeue_hold(self, job_id: int, env: Any = None) -> None:
        self.calls.append(("hold", job_id, ""))


@pytest.fixture
def slurm() -> SlurmRecorder:
    return SlurmRecorder()


def hook_env(
    site: Site, user: str, directives: list[str], job_id: int | None = None
) -> dict[str, str]:
    entry = pwd.getpwnam(user)
    return {
        "SLURM_JOB_ID": str(job_id or random.randint(100000, 999999)),
        "SLURM_JOB_USER": user,
        "SLURM_JOB_UID": str(entry.pw_uid),
        "SLURM_JOB_GID": str(entry.pw_gid),
        "SLURMD_NODENAME": HOST,
        "SLURM_NODELIST": HOST,
        "SLURM_JOB_RESTART_COUNT": "0",
        "SPANK_FSX_STAGE": encode_spank_values(directives),
        "FSX_STAGE_CONFIG": str(site.config),
    }


def state_of(site: Site, env: dict[str, str]) -> Any:
    return StateStore(site.state_dir).load(int(env["SLURM_JOB_ID"]))


def pending_store(site: Site) -> PendingStore:
    return PendingStore(StateStore(site.state_dir))


def flush_pending(site: Site) -> int:
    """``fsx-stage flush --pending`` (every job's pending record); its exit status."""
    return flush.run({"FSX_STAGE_CONFIG": str(site.config)})


def test_stage_in_compute_flush_out(
    site: Site, s3_client: Any, bucket: str, job_user: str, slurm: SlurmRecorder
) -> None:
    s3_client.put_object(Bucket=bucket, Key="data/a.txt", Body=b"alpha")
    s3_client.put_object(Bucket=bucket, Key="data/sub/b.txt", Body=b"beta")
    s3_client.put_object(Bucket=bucket, Key="ref/one.bin", Body=b"1" * 1000)
    home = site.user_dir(job_user)
    env = hook_env(
        site,
        job_user,
        [
            f"in,s3://{bucket}/data/,{home}/in/",
            f"in,s3://{bucket}/ref/one.bin,{home}/ref/",
            f"out,{home}/results/,s3://{bucket}/results/%j/",
        ],
    )
    assert prolog.run(env, slurm) == 0
    uid = pwd.getpwnam(job_user).pw_uid
    assert (home / "in" / "a.txt").read_bytes() == b"alpha"
    assert (home / "in" / "sub" / "b.txt").read_bytes() == b"beta"
    assert (home / "ref" / "one.bin").stat().st_size == 1000
    for path in (home / "in", home / "in" / "sub", home / "in" / "sub" / "b.txt"):
        assert path.stat().st_uid == uid  # created for the user, owned by the user
    state = state_of(site, env)
    assert state.prolog.status is HookStatus.DONE
    assert [e.status for e in state.phase_entries(Phase.STAGE_IN)] == [EntryStatus.DONE] * 2
    assert slurm.calls == []

    # The job computes, as the user.
    results = home / "results"
    results.mkdir()
    (results / "count.txt").write_text("2\n")
    os.chown(results, uid, -1)
    os.chown(results / "count.txt", uid, -1)

    assert epilog.run(env, slurm) == 0
    key = f"results/{env['SLURM_JOB_ID']}/count.txt"
    obj = s3_client.get_object(Bucket=bucket, Key=key)
    assert obj["Body"].read() == b"2\n"
    assert obj["Metadata"]["file-owner"] == str(uid)
    state = state_of(site, env)
    assert state.epilog.status is HookStatus.DONE and state.job_succeeded is True
    flushed = state.phase_entries(Phase.FLUSH)
    assert [(e.kind, e.status) for e in flushed] == [("out", EntryStatus.DONE)]
    assert flushed[0].bytes == 2

    # A second run of either hook (slurmd retrying after a crash) changes nothing.
    assert prolog.run(env, slurm) == 0
    assert epilog.run(env, slurm) == 0
    assert '"event":"prolog.already_done"' in site.log_file.read_text()


def test_policy_refusal_fails_the_job_and_tells_the_user(
    site: Site, bucket: str, job_user: str, slurm: SlurmRecorder
) -> None:
    home = site.user_dir(job_user)
    slurm.std_out = str(home / "job.out")
    env = hook_env(site, job_user, [f"in,s3://not-allowed-bucket/x/,{home}/in/"])
    assert prolog.run(env, slurm) == 0  # the node stays in service
    job_id = int(env["SLURM_JOB_ID"])
    kinds = [c[0] for c in slurm.calls]
    assert kinds == ["comment", "cancel"]
    reason = slurm.calls[0][2]
    assert "directive 1" in reason and "not-allowed-bucket" in reason
    told = (home / "job.out").read_text()
    assert told.startswith(f"fsx-stage: job {job_id} not started: directive 1")
    assert (home / "job.out").stat().st_uid == pwd.getpwnam(job_user).pw_uid
    state = state_of(site, env)
    assert state.prolog.status is HookStatus.FAILED_JOB
    assert "not-allowed-bucket" in state.failure_reason
    assert '"event":"prolog.job_failed"' in site.log_file.read_text()
    # The epilog of such a job flushes nothing.
    assert epilog.run(env, slurm) == 0
    assert state_of(site, env).epilog.status is HookStatus.SKIPPED


def test_bad_directive_fails_the_job(site: Site, job_user: str, slurm: SlurmRecorder) -> None:
    env = hook_env(site, job_user, ["in,s3://b/k,relative/path"])
    assert prolog.run(env, slurm) == 0
    assert [c[0] for c in slurm.calls] == ["comment", "cancel"]
    assert "directive 1" in slurm.calls[0][2]


def test_missing_object_fails_the_job(
    site: Site, bucket: str, job_user: str, slurm: SlurmRecorder
) -> None:
    home = site.user_dir(job_user)
    env = hook_env(site, job_user, [f"in,s3://{bucket}/nothing-here.dat,{home}/in/"])
    assert prolog.run(env, slurm) == 0
    assert [c[0] for c in slurm.calls] == ["comment", "cancel"]
    assert "nothing-here.dat" in slurm.calls[0][2]
    entry = state_of(site, env).entries[0]
    assert entry.status is EntryStatus.FAILED and entry.error_category == "not_found"


def test_missing_optional_input_is_fine(
    site: Site, bucket: str, job_user: str, slurm: SlurmRecorder
) -> None:
    home = site.user_dir(job_user)
    env = hook_env(site, job_user, [f"in,s3://{bucket}/absent.dat,{home}/in/,optional=yes"])
    assert prolog.run(env, slurm) == 0
    assert slurm.calls == []
    assert state_of(site, env).entries[0].status is EntryStatus.SKIPPED


def test_scratch_not_mounted_is_a_node_fault(
    site: Site, bucket: str, job_user: str, slurm: SlurmRecorder
) -> None:
    home = site.user_dir(job_user)
    env = hook_env(site, job_user, [f"in,s3://{bucket}/k,{home}/in/"])
    site.scratch.rename(site.root / "unmounted")
    assert prolog.run(env, slurm) == 1  # Slurm drains the node and requeues the job
    assert slurm.calls == []
    assert state_of(site, env).prolog.status is HookStatus.NODE_FAULT


def test_no_credentials_on_the_node_is_a_node_fault(
    site: Site, bucket: str, job_user: str, slurm: SlurmRecorder
) -> None:
    site.credentials.unlink()
    home = site.user_dir(job_user)
    env = hook_env(site, job_user, [f"in,s3://{bucket}/k,{home}/in/"])
    assert prolog.run(env, slurm) == 1
    assert "credentials unavailable" in site.log_file.read_text()


def test_flush_during_an_outage_is_kept_and_completed_later(
    s3_server: Any,
    site: Site,
    s3_client: Any,
    bucket: str,
    job_user: str,
    slurm: SlurmRecorder,
) -> None:
    home = site.user_dir(job_user)
    uid = pwd.getpwnam(job_user).pw_uid
    ckpt = home / "ckpt"
    ckpt.mkdir()
    (ckpt / "step-1").write_bytes(b"state" * 100)
    for p in (ckpt, ckpt / "step-1"):
        os.chown(p, uid, -1)
    env = hook_env(site, job_user, [f"checkpoint,{ckpt}/,s3://{bucket}/ckpt/"])
    assert prolog.run(env, slurm) == 0  # nothing to restore yet
    site.write_unreachable_config([bucket], scratch_after_flush="remove")
    assert epilog.run(env, slurm) == 0  # an S3 outage never takes the node down
    job_id = int(env["SLURM_JOB_ID"])
    pending = pending_store(site)
    record = pending.load(job_id)
    assert record is not None and record.remove_scratch
    assert [e.status for e in record.entries] == [EntryStatus.PENDING]
    assert (ckpt / "step-1").read_bytes() == b"state" * 100  # data untouched
    assert state_of(site, env).phase_entries(Phase.FLUSH)[0].status is EntryStatus.PENDING

    assert flush_pending(site) == 1  # still down
    site.write_config(s3_server.endpoint_url, [bucket], scratch_after_flush="remove")
    assert flush_pending(site) == 0
    assert checkpoint_object(s3_client, bucket, "ckpt/", "step-1") == b"state" * 100
    assert pending.load(job_id) is None
    assert state_of(site, env).phase_entries(Phase.FLUSH)[0].status is EntryStatus.DONE
    assert not ckpt.exists()  # removed only once verified in S3


def _events(site: Site, event: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in site.log_file.read_text().splitlines()]
    return [line for line in lines if line.get("event") == event]


def test_flush_pending_on_a_node_without_the_scratch_keeps_the_record(
    s3_server: Any,
    site: Site,
    s3_client: Any,
    bucket: str,
    job_user: str,
    slurm: SlurmRecorder,
) -> None:
    # Every source looks deleted where the scratch tree is absent (a login node, an
    # unmounted file system); a deleted source is final, so without the Epilog's scratch
    # check the record would be dropped and the results never flushed.
    out, env = _started_job_with_results(site, job_user, bucket, slurm)
    site.write_unreachable_config([bucket])
    assert epilog.run(env, slurm) == 0
    job_id = int(env["SLURM_JOB_ID"])
    pending = pending_store(site)
    site.write_config(s3_server.endpoint_url, [bucket])
    away = site.scratch.with_name(site.scratch.name + ".away")
    site.scratch.rename(away)
    try:
        assert flush_pending(site) == 1
        record = pending.load(job_id)
        assert record is not None and [e.status for e in record.entries] == [EntryStatus.PENDING]
        assert "is not available on this node" in (record.last_error or "")
        assert "run flush --pending on a node that mounts it" in (record.last_error or "")
    finally:
        away.rename(site.scratch)
    assert (out / "r.txt").read_bytes() == b"result"  # untouched
    assert flush_pending(site) == 0
    assert s3_client.get_object(Bucket=bucket, Key="out/r.txt")["Body"].read() == b"result"
    assert pending.load(job_id) is None


def test_a_pending_flush_records_and_logs_its_entry_as_the_epilog_does(
    s3_server: Any, site: Site, bucket: str, job_user: str, slurm: SlurmRecorder
) -> None:
    _out, env = _started_job_with_results(site, job_user, bucket, slurm)
    site.write_unreachable_config([bucket])
    assert epilog.run(env, slurm) == 0
    site.write_config(s3_server.endpoint_url, [bucket])
    # An epilog whose budget ran out midway records the bytes it moved: a retry counts
    # its own attempt (sync sends everything not in S3 yet), as the epilog does.
    pending = pending_store(site)
    record = pending.load(int(env["SLURM_JOB_ID"]))
    assert record is not None
    record.entries[0].bytes, record.entries[0].objects = 4, 0
    pending.save(record)
    assert flush_pending(site) == 0
    entry = state_of(site, env).phase_entries(Phase.FLUSH)[0]
    assert (entry.status, entry.bytes, entry.objects) == (EntryStatus.DONE, len(b"result"), 1)
    (epilog_line,) = _events(site, "flush.entry")
    retried = _events(site, "flush_pending.entry")
    assert retried and all(line.keys() == epilog_line.keys() for line in retried)
    assert retried[-1]["bytes"] == len(b"result") and retried[-1]["status"] == "done"


def _user_tree(home: Path, name: str, files: dict[str, bytes], uid: int) -> Path:
    top = home / name
    top.mkdir()
    os.chown(top, uid, -1)
    for rel, data in files.items():
        (top / rel).write_bytes(data)
        os.chown(top / rel, uid, -1)
    return top


def _started_job_with_results(
    site: Site, user: str, bucket: str, slurm: SlurmRecorder
) -> tuple[Path, dict[str, str]]:
    """A job past its Prolog whose ``out/r.txt`` (``b"result"``) flushes to ``out/``."""
    home = site.user_dir(user)
    out = _user_tree(home, "out", {"r.txt": b"result"}, pwd.getpwnam(user).pw_uid)
    env = hook_env(site, user, [f"out,{out}/,s3://{bucket}/out/"])
    assert prolog.run(env, slurm) == 0
    return out, env


def test_an_epilog_killed_midway_leaves_its_flush_pending(
    site: Site,
    s3_client: Any,
    bucket: str,
    job_user: str,
    slurm: SlurmRecorder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _out, env = _started_job_with_results(site, job_user, bucket, slurm)

    def killed(*args: Any, **kwargs: Any) -> None:
        raise SystemExit("killed by slurmd at PrologEpilogTimeout")

    monkeypatch.setattr(hook, "run_entry", killed)  # the transfer step every hook shares
    with pytest.raises(SystemExit):
        epilog.run(env, slurm)
    monkeypatch.setattr(hook, "run_entry", staging.run_entry)
    record = pending_store(site).load(int(env["SLURM_JOB_ID"]))
    assert record is not None
    assert [(e.status, e.error) for e in record.entries] == [
        (EntryStatus.PENDING, "flush interrupted")
    ]
    assert flush_pending(site) == 0
    assert s3_client.get_object(Bucket=bucket, Key="out/r.txt")["Body"].read() == b"result"


def test_no_credentials_at_flush_keeps_the_results_pending_and_drains(
    site: Site, bucket: str, job_user: str, slurm: SlurmRecorder
) -> None:
    out, env = _started_job_with_results(site, job_user, bucket, slurm)
    site.credentials.unlink()
    assert epilog.run(env, slurm) == 1  # the node's fault: Slurm drains it
    record = pending_store(site).load(int(env["SLURM_JOB_ID"]))
    assert record is not None
    assert [e.status for e in record.entries] == [EntryStatus.PENDING]
    assert "credentials unavailable" in (record.entries[0].error or "")
    assert (out / "r.txt").read_bytes() == b"result"  # data untouched on scratch
    assert state_of(site, env).epilog.status is HookStatus.NODE_FAULT


def test_an_exhausted_flush_budget_keeps_the_rest_pending(
    s3_server: Any, site: Site, bucket: str, job_user: str, slurm: SlurmRecorder
) -> None:
    site.write_config(s3_server.endpoint_url, [bucket], flush_budget=1)
    _out, env = _started_job_with_results(site, job_user, bucket, slurm)
    assert epilog.run(env, slurm) == 0
    entry = state_of(site, env).phase_entries(Phase.FLUSH)[0]
    assert entry.status is EntryStatus.PENDING and entry.error_category == "timeout"
    assert pending_store(site).load(int(env["SLURM_JOB_ID"])) is not None


def test_each_checkpoint_flush_across_a_requeue_is_a_whole_generation(
    site: Site, s3_client: Any, bucket: str, job_user: str, slurm: SlurmRecorder
) -> None:
    home = site.user_dir(job_user)
    uid = pwd.getpwnam(job_user).pw_uid
    ckpt = _user_tree(home, "ckpt", {"a": b"A" * 100, "b": b"B" * 100}, uid)
    env = hook_env(site, job_user, [f"checkpoint,{ckpt}/,s3://{bucket}/ck/"])
    assert prolog.run(env, slurm) == 0
    requeued = dict(env, SLURM_JOB_RESTART_COUNT="1")  # slurmd's view after `scontrol requeue`
    assert epilog.run(requeued, slurm) == 0
    first = state_of(site, env).phase_entries(Phase.FLUSH)[0]
    assert (first.status, first.objects) == (EntryStatus.DONE, 2)
    assert prolog.run(requeued, slurm) == 0  # the rerun restores: both files already identical
    (ckpt / "b").write_bytes(b"C" * 100)
    assert epilog.run(requeued, slurm) == 0
    second = state_of(site, env).phase_entries(Phase.FLUSH)[0]
    # A new generation: only the changed file is uploaded, its manifest names both.
    assert (second.status, second.objects, second.skipped_objects) == (EntryStatus.DONE, 1, 0)
    assert newest_generation(s3_client, bucket, "ck/") == {"a": b"A" * 100, "b": b"C" * 100}


def test_a_pending_checkpoint_is_not_overwritten_by_an_older_restore(
    fault_proxy: Any,
    site: Site,
    s3_client: Any,
    bucket: str,
    job_user: str,
    slurm: SlurmRecorder,
) -> None:
    site.write_config(fault_proxy.endpoint_url, [bucket])
    home = site.user_dir(job_user)
    uid = pwd.getpwnam(job_user).pw_uid
    ckpt = _user_tree(home, "ckpt", {"a": b"v1"}, uid)
    env = hook_env(site, job_user, [f"checkpoint,{ckpt}/,s3://{bucket}/ck/"])
    run = [dict(env, SLURM_JOB_RESTART_COUNT=str(n)) for n in range(3)]
    assert prolog.run(run[0], slurm) == 0
    assert epilog.run(run[1], slurm) == 0  # requeued: v1 flushed
    assert prolog.run(run[1], slurm) == 0
    (ckpt / "a").write_bytes(b"v2, further along")  # the second run gets further
    fault_proxy.set_faults(methods=["PUT", "POST"], error500_rate=1.0)  # S3 takes no writes
    assert epilog.run(run[2], slurm) == 0  # requeued again: v2 stays pending on scratch
    assert prolog.run(run[2], slurm) == 0  # the retry fails again: v1 must not come back
    assert (ckpt / "a").read_bytes() == b"v2, further along"
    restore = state_of(site, env).phase_entries(Phase.STAGE_IN)[0]
    assert restore.status is EntryStatus.SKIPPED and "waiting to be flushed" in restore.error
    fault_proxy.set_faults()
    assert flush_pending(site) == 0
    assert checkpoint_object(s3_client, bucket, "ck/", "a") == b"v2, further along"


def test_checkpoint_generations_flush_and_restore_across_requeues(
    site: Site, s3_client: Any, bucket: str, job_user: str, slurm: SlurmRecorder
) -> None:
    """``keep=``: each Epilog publishes a generation (manifest last), the next Prolog
    restores the newest one exactly; a file deleted on scratch does not come back."""
    home = site.user_dir(job_user)
    uid = pwd.getpwnam(job_user).pw_uid
    ckpt = _user_tree(home, "ckpt", {"a": b"A1", "b": b"B1"}, uid)
    env = hook_env(site, job_user, [f"checkpoint,{ckpt}/,s3://{bucket}/ck/,keep=1"])
    run = [dict(env, SLURM_JOB_RESTART_COUNT=str(n)) for n in range(3)]
    assert prolog.run(run[0], slurm) == 0  # nothing to restore yet
    assert epilog.run(run[1], slurm) == 0  # requeued: generation 1
    assert prolog.run(run[1], slurm) == 0  # the rerun restores generation 1, then runs:
    (ckpt / "a").unlink()
    (ckpt / "b").write_bytes(b"B2")
    assert epilog.run(run[2], slurm) == 0  # generation 2; keep=1 removes generation 1
    flushed = state_of(site, env).phase_entries(Phase.FLUSH)[0]
    assert flushed.status is EntryStatus.DONE
    listed = s3_client.list_objects_v2(Bucket=bucket, Prefix="ck/")["Contents"]
    assert sorted(o["Key"] for o in listed) == [
        "ck/.fsx-stage/gen/2/b",
        "ck/.fsx-stage/manifests/2.json",
    ]
    for path in ckpt.iterdir():
        path.unlink()  # the next run lands on a node with empty scratch
    assert prolog.run(run[2], slurm) == 0
    assert state_of(site, env).phase_entries(Phase.STAGE_IN)[0].status is EntryStatus.DONE
    assert {p.name: p.read_bytes() for p in ckpt.iterdir()} == {"b": b"B2"}
    assert (ckpt / "b").stat().st_uid == uid  # restored as the user


def test_a_checkpoint_generation_s3_refuses_stays_pending(
    site: Site, s3_server: Any, s3_client: Any, bucket: str, job_user: str, slurm: SlurmRecorder
) -> None:
    home = site.user_dir(job_user)
    ckpt = _user_tree(home, "ckpt", {"a": b"A"}, pwd.getpwnam(job_user).pw_uid)
    env = hook_env(site, job_user, [f"checkpoint,{ckpt}/,s3://{bucket}/ck/,keep=2"])
    assert prolog.run(env, slurm) == 0
    site.write_unreachable_config([bucket])
    assert epilog.run(env, slurm) == 0
    [entry] = state_of(site, env).phase_entries(Phase.FLUSH)
    assert entry.status is EntryStatus.PENDING and entry.error_category == "network"
    assert entry.error and "http://" not in entry.error, entry.error  # worded, no endpoint URL
    site.write_config(s3_server.endpoint_url, [bucket])
    assert flush_pending(site) == 0
    body = s3_client.get_object(Bucket=bucket, Key="ck/.fsx-stage/gen/1/a")["Body"].read()
    assert body == b"A"
    s3_client.head_object(Bucket=bucket, Key="ck/.fsx-stage/manifests/1.json")
    published = [g for g in state_of(site, env).generations if g.state == "complete"]
    assert [(g.generation, g.files, g.bytes, g.by) for g in published] == [
        (1, 1, 1, "flush --pending")
    ]  # what `fsx-stage status` lists


def test_s3_down_at_stage_in_holds_the_job(
    site: Site, bucket: str, job_user: str, slurm: SlurmRecorder
) -> None:
    site.write_unreachable_config([bucket])
    home = site.user_dir(job_user)
    slurm.std_out = str(home / "held.out")
    env = hook_env(site, job_user, [f"in,s3://{bucket}/data/,{home}/in/"])
    assert prolog.run(env, slurm) == 0  # not the node's fault, not the user's
    assert [c[0] for c in slurm.calls] == ["comment", "hold"]
    reason = slurm.calls[0][2]
    assert "held (S3 unavailable)" in reason and "scontrol release" in reason
    assert "held (S3 unavailable)" in (home / "held.out").read_text()
    assert "could not " in reason and "http://" not in reason  # no endpoint URLs
    entry = state_of(site, env).entries[0]
    assert entry.status is EntryStatus.PENDING and entry.error_category == "network"


def test_a_prolog_rerun_after_a_crash_resumes(
    site: Site,
    s3_client: Any,
    bucket: str,
    job_user: str,
    slurm: SlurmRecorder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s3_client.put_object(Bucket=bucket, Key="one/a", Body=b"a")
    s3_client.put_object(Bucket=bucket, Key="two/b", Body=b"b")
    home = site.user_dir(job_user)
    env = hook_env(
        site,
        job_user,
        [f"in,s3://{bucket}/one/,{home}/one/", f"in,s3://{bucket}/two/,{home}/two/"],
    )
    real = hook.run_entry
    calls = []

    def crash_on_second(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[1].index)
        if len(calls) == 2:
            raise SystemExit("slurmd killed the prolog")
        return real(*args, **kwargs)

    monkeypatch.setattr(hook, "run_entry", crash_on_second)
    with pytest.raises(SystemExit):
        prolog.run(env, slurm)
    monkeypatch.setattr(hook, "run_entry", real)
    assert prolog.run(env, slurm) == 0
    first, second = state_of(site, env).phase_entries(Phase.STAGE_IN)
    assert (first.status, first.attempts) == (EntryStatus.DONE, 1)  # not redone
    assert (second.status, second.attempts) == (EntryStatus.DONE, 2)
    assert (home / "two" / "b").read_bytes() == b"b"


def test_when_and_a_missing_output_after_a_failed_job(
    site: Site, s3_client: Any, bucket: str, job_user: str, slurm: SlurmRecorder
) -> None:
    home = site.user_dir(job_user)
    uid = pwd.getpwnam(job_user).pw_uid
    good = _user_tree(home, "good", {"g": b"g"}, uid)
    bad = _user_tree(home, "bad", {"b": b"b"}, uid)
    env = hook_env(
        site,
        job_user,
        [
            f"out,{home}/never-written/,s3://{bucket}/a/",
            f"out,{good}/,s3://{bucket}/b/,when=success",
            f"out,{bad}/,s3://{bucket}/c/,when=failure",
        ],
    )
    assert prolog.run(env, slurm) == 0
    slurm.exit_code = "1:0"  # the batch script failed
    assert epilog.run(env, slurm) == 0
    state = state_of(site, env)
    assert state.job_succeeded is False
    statuses = [(e.index, e.status, e.error_category) for e in state.phase_entries(Phase.FLUSH)]
    assert statuses == [
        (1, EntryStatus.FAILED, "source_missing"),  # nothing to keep: final, not pending
        (2, EntryStatus.SKIPPED, None),
        (3, EntryStatus.DONE, None),
    ]
    assert pending_store(site).load(int(env["SLURM_JOB_ID"])) is None
    keys = {o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket).get("Contents", [])}
    assert keys == {"c/b"}


def test_a_symlink_to_a_root_directory_gets_nothing_written(
    site: Site, s3_client: Any, bucket: str, job_user: str, slurm: SlurmRecorder
) -> None:
    s3_client.put_object(Bucket=bucket, Key="data/passwd", Body=b"pwned")
    home = site.user_dir(job_user)
    protected = site.root / "root-only"
    protected.mkdir(mode=0o755)
    (home / "in").symlink_to(protected)  # planted by the user before the job
    env = hook_env(site, job_user, [f"in,s3://{bucket}/data/,{home}/in/"])
    assert prolog.run(env, slurm) == 0  # the user's doing: the job fails, the node stays
    assert [c[0] for c in slurm.calls] == ["comment", "cancel"]
    assert list(protected.iterdir()) == []
    entry = state_of(site, env).entries[0]
    assert entry.status is EntryStatus.FAILED


@pytest.fixture
def small_scratch(site: Site) -> Iterator[Path]:
    """The site's scratch on an 8 MiB tmpfs (root only); skipped where mounts are forbidden."""
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m,mode=0755", "tmpfs", str(site.scratch)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {proc.stderr.strip()}")
    try:
        yield site.scratch
    finally:
        subprocess.run(["umount", "-l", str(site.scratch)], check=False)


@pytest.mark.parametrize("size_mib", [3, 12])  # one GET, and ranged GETs (a TaskGroup)
def test_full_scratch_holds_the_job_and_keeps_the_node(
    s3_server: Any,
    site: Site,
    s3_client: Any,
    bucket: str,
    job_user: str,
    slurm: SlurmRecorder,
    small_scratch: Path,
    size_mib: int,
) -> None:
    site.write_config(s3_server.endpoint_url, [bucket], multipart_threshold="5MiB")
    s3_client.put_object(Bucket=bucket, Key="big/blob", Body=os.urandom(size_mib * MiB))
    home = site.user_dir(job_user)
    (small_scratch / "ballast").write_bytes(b"\0" * (6 * MiB))  # another user's files
    slurm.std_out = str(home / "job.out")
    env = hook_env(site, job_user, [f"in,s3://{bucket}/big/blob,{home}/in/"])
    assert prolog.run(env, slurm) == 0  # shared scratch being full is no reason to drain this node
    assert [c[0] for c in slurm.calls] == ["comment", "hold"]
    reason = slurm.calls[0][2]
    assert f"held (scratch full): directive 1: s3://{bucket}/big/blob:" in reason
    assert f"scratch {home}/in/blob is full (no space left on device)" in reason
    assert "once there is room on scratch" in reason
    assert "S3" not in reason and "ExceptionGroup" not in reason
    assert "held (scratch full)" in (home / "job.out").read_text()
    entry = state_of(site, env).entries[0]
    assert (entry.status, entry.error_category) == (EntryStatus.PENDING, "no_space")
    assert not list((home / "in").iterdir())  # no partial file under any name


def test_scratch_with_no_room_at_all_holds_the_job(
    site: Site, bucket: str, job_user: str, slurm: SlurmRecorder, small_scratch: Path
) -> None:
    home = site.user_dir(job_user)
    with contextlib.suppress(OSError):
        (small_scratch / "ballast").write_bytes(b"\0" * (9 * MiB))
    env = hook_env(site, job_user, [f"in,s3://{bucket}/k,{home}/in/"])
    assert prolog.run(env, slurm) == 0
    assert [c[0] for c in slurm.calls] == ["comment", "hold"]
    assert f"scratch {site.scratch}/ is full (no space left on device)" in slurm.calls[0][2]


@pytest.mark.parametrize(("dst", "key"), [("r/", "r/results/r.txt"), ("r", "r/r.txt")])
def test_an_out_directory_written_without_its_slash_is_flushed_as_the_directory(
    site: Site, s3_client: Any, bucket: str, job_user: str, slurm: SlurmRecorder, dst: str, key: str
) -> None:
    home = site.user_dir(job_user)
    uid = pwd.getpwnam(job_user).pw_uid
    results = _user_tree(home, "results", {"r.txt": b"result"}, uid)
    env = hook_env(site, job_user, [f"out,{results},s3://{bucket}/{dst}"])
    assert prolog.run(env, slurm) == 0
    assert epilog.run(env, slurm) == 0
    entry = state_of(site, env).phase_entries(Phase.FLUSH)[0]
    assert (entry.status, entry.objects) == (EntryStatus.DONE, 1)
    assert s3_client.get_object(Bucket=bucket, Key=key)["Body"].read() == b"result"
    assert slurm.calls == []  # nothing to tell


def test_a_flush_that_fails_is_told_in_the_output_file(
    site: Site, s3_client: Any, bucket: str, job_user: str, slurm: SlurmRecorder
) -> None:
    home = site.user_dir(job_user)
    slurm.std_out = str(home / "job.out")
    env = hook_env(site, job_user, [f"out,{home}/never-written/,s3://{bucket}/r/"])
    job_id = int(env["SLURM_JOB_ID"])
    assert prolog.run(env, slurm) == 0
    assert epilog.run(env, slurm) == 0  # the user's mistake: the node stays in service
    entry = state_of(site, env).phase_entries(Phase.FLUSH)[0]
    assert entry.status is EntryStatus.FAILED
    expected = (
        f"fsx-stage: job {job_id}: not all results reached S3: directive 1 failed: "
        f"{home}/never-written/: no such file or directory\n"
    )
    assert (home / "job.out").read_text() == expected
    assert slurm.calls == []  # an ended job's AdminComment cannot be changed
    assert "1 entry failed" in (state_of(site, env).epilog.message or "")


def test_a_pending_flush_is_told_too(
    s3_server: Any, site: Site, bucket: str, job_user: str, slurm: SlurmRecorder
) -> None:
    out, env = _started_job_with_results(site, job_user, bucket, slurm)
    slurm.std_out = str(out.parent / "job.out")
    job_id = int(env["SLURM_JOB_ID"])
    site.write_unreachable_config([bucket])
    assert epilog.run(env, slurm) == 0
    told = (out.parent / "job.out").read_text()
    assert told.startswith(f"fsx-stage: job {job_id}: not all results reached S3: directive 1 ")
    assert "could not " in told and "http://" not in told  # in words, no endpoint URL
    assert "pending data stays on scratch and is retried by `fsx-stage flush --pending`" in told


def test_a_released_job_loses_its_stale_held_comment(
    s3_server: Any, site: Site, s3_client: Any, bucket: str, job_user: str, slurm: SlurmRecorder
) -> None:
    s3_client.put_object(Bucket=bucket, Key="data/a", Body=b"a")
    home = site.user_dir(job_user)
    env = hook_env(site, job_user, [f"in,s3://{bucket}/data/,{home}/in/"])
    site.write_unreachable_config([bucket])
    assert prolog.run(env, slurm) == 0
    assert [c[0] for c in slurm.calls] == ["comment", "hold"]
    site.write_config(s3_server.endpoint_url, [bucket])
    released = dict(env, SLURM_JOB_RESTART_COUNT="1")  # `scontrol release` runs it again
    assert prolog.run(released, slurm) == 0
    assert slurm.calls[2:] == [("comment", int(env["SLURM_JOB_ID"]), "")]
    state = state_of(site, env)
    assert state.prolog.status is HookStatus.DONE and state.admin_comment is None


def test_a_forgotten_slash_on_an_in_prefix_gets_a_hint(
    site: Site, s3_client: Any, bucket: str, job_user: str, slurm: SlurmRecorder
) -> None:
    s3_client.put_object(Bucket=bucket, Key="dataset/part-1", Body=b"1")
    home = site.user_dir(job_user)
    env = hook_env(
        site,
        job_user,
        [f"in,s3://{bucket}/dataset,{home}/d/", f"in,s3://{bucket}/nothing,{home}/n/"],
    )
    assert prolog.run(env, slurm) == 0
    assert [c[0] for c in slurm.calls] == ["comment", "cancel"]
    reason = slurm.calls[0][2]
    assert f"directive 1: s3://{bucket}/dataset: 1 object failed: dataset: not found" in reason
    assert f"did you mean s3://{bucket}/dataset/ (a prefix: everything under it)?" in reason
    assert reason.count("did you mean") == 1  # no such prefix for `nothing`


def _modes(root: Path) -> dict[str, int]:
    return {
        p.relative_to(root).as_posix() + ("/" if p.is_dir() else ""): p.stat().st_mode & 0o777
        for p in sorted(root.rglob("*"))
    }


def test_staged_in_tree_is_private_to_the_user_by_default(
    site: Site, s3_client: Any, bucket: str, job_user: str, slurm: SlurmRecorder
) -> None:
    s3_client.put_object(Bucket=bucket, Key="m/sub/a.txt", Body=b"a")
    home = site.user_dir(job_user)
    env = hook_env(site, job_user, [f"in,s3://{bucket}/m/,{home}/private/"])
    assert prolog.run(env, slurm) == 0
    assert _modes(home / "private") == {"sub/": 0o700, "sub/a.txt": 0o600}


def test_a_shared_project_root_gets_its_own_umask(
    s3_server: Any, site: Site, s3_client: Any, bucket: str, job_user: str, slurm: SlurmRecorder
) -> None:
    # Project scratch shared by an account: the site gives that root umask 0o027, so the
    # group can read what was staged; the user's own root keeps the default.
    s3_client.put_object(Bucket=bucket, Key="m/sub/a.txt", Body=b"a")
    home = site.user_dir(job_user)
    project = home / "project"
    project.mkdir()
    entry = pwd.getpwnam(job_user)
    os.chown(project, entry.pw_uid, entry.pw_gid)
    site.write_config(
        s3_server.endpoint_url,
        [bucket],
        top_level=f'umask = 0o077\n[root_umask]\n"{site.scratch}/{{user}}/project/" = 0o027\n',
    )
    env = hook_env(
        site,
        job_user,
        [f"in,s3://{bucket}/m/,{project}/shared/", f"in,s3://{bucket}/m/,{home}/mine/"],
    )
    assert prolog.run(env, slurm) == 0
    assert _modes(project / "shared") == {"sub/": 0o750, "sub/a.txt": 0o640}
    assert _modes(home / "mine") == {"sub/": 0o700, "sub/a.txt": 0o600}


def test_status_shows_live_counts_while_an_entry_stages(
    site: Site,
    s3_client: Any,
    bucket: str,
    job_user: str,
    slurm: SlurmRecorder,
    fault_proxy: Any,
) -> None:
    # Every object GET waits 1.5 s in the proxy: 32 objects at 8 at a time take ~6 s,
    # long enough for the state file to show counts before the entry ends.
    import threading

    from fsx_stage.cli.hooks import render_status

    for i in range(32):
        s3_client.put_object(Bucket=bucket, Key=f"live/{i:02d}", Body=b"z" * 4096)
    site.write_config(fault_proxy.endpoint_url, [bucket])
    fault_proxy.set_faults(
        latency_s=1.5, latency_rate=1.0, methods=frozenset({"GET"}), key_pattern=r"/live/\d"
    )
    home = site.user_dir(job_user)
    env = hook_env(site, job_user, [f"in,s3://{bucket}/live/,{home}/live/"])
    outcome: list[int] = []
    runner = threading.Thread(target=lambda: outcome.append(prolog.run(env, slurm)))
    runner.start()

    def live_counts() -> tuple[int, int, str] | None:
        state = state_of(site, env)
        entry = state.entries[0] if state is not None and state.entries else None
        if entry is not None and entry.status is EntryStatus.RUNNING and entry.objects > 0:
            return entry.objects, entry.bytes, render_status(state)
        return None

    objects, moved, view = wait_until(
        live_counts, 30, "no live counts were saved while the entry ran"
    )
    runner.join(60)
    assert outcome == [0]
    assert 0 < objects < 32 and moved == objects * 4096
    assert f"so far: {objects} objects, " in view and "/s)" in view
    final = state_of(site, env).entries[0]
    assert (final.status, final.objects, final.bytes) == (EntryStatus.DONE, 32, 32 * 4096)
