"""``make demo``: a staged job on the local S3 (SeaweedFS) and the single-node Slurm.

Brings up (or reuses) SeaweedFS in ``$TESTBED/s3`` and the cluster in
``$TESTBED/slurm``, uploads a small text corpus, writes the cluster's site
config, submits ``slurm-conf-examples/demo-job.sbatch`` as the job user (its
``#SBATCH --fsx-stage`` lines stage the corpus in and the word counts out),
waits, and reports what happened: job state, the hook records, the objects in
S3. Every step is real; when a step cannot happen yet (no ``fsx-stage
prolog``), the demo says so and stops there with a non-zero exit.

The servers are left running for inspection: ``make cluster-down s3-down``.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes

from tests.testbed.cluster import (
    BIN,
    REPO_ROOT,
    ClusterError,
    HookRecord,
    SlurmCluster,
    ensure_user,
    private_interpreter_dir,
    repo_venv,
)
from tests.testbed.seaweed import SeaweedServer

JOB_USER = "fsxuser"
SITE_CONFIG_LOCK = ".site-config.lock"  # shared with tests/e2e/test_hooks_slurm.py
BUCKET = "fsx-stage-demo"
JOB_TEMPLATE = REPO_ROOT / "slurm-conf-examples" / "demo-job.sbatch"
CORPUS = {
    "corpus/lustre.txt": "Lustre stripes files across object storage targets. "
    "Scratch is fast, scratch is shared, scratch is not a backup.\n",
    "corpus/s3.txt": "S3 keeps objects durable. Objects are written whole or not at all: "
    "a reader never sees half an object.\n",
    "corpus/slurm.txt": "Slurm runs the prolog before the job and the epilog after it, "
    "whatever the job's fate: success, failure, timeout or cancel.\n",
}


def testbed_dir() -> Path:
    return Path(os.environ.get("TESTBED") or REPO_ROOT / ".testbed")


def say(message: str) -> None:
    print(f"demo: {message}", flush=True)


def start_s3(directory: Path) -> SeaweedServer:
    server = SeaweedServer(directory)
    if server.running_pid() is not None:
        say(f"reusing SeaweedFS in {directory}")
        return server.attach()
    say(f"starting SeaweedFS in {directory}")
    return server.start()


def prepare_scratch(root: Path, user: str) -> Path:
    """``root/USER``, owned by the job user (stands in for an FSx for Lustre mount)."""
    user_dir = root / user
    user_dir.mkdir(parents=True, exist_ok=True)
    for path in (root.parent, root):
        path.chmod(0o755)
    shutil.chown(user_dir, user=user, group=user)
    return root


def site_config(s3: SeaweedServer, scratch_root: Path, state_dir: Path, log_file: Path) -> str:
    return textwrap.dedent(
        f"""\
        # Written by tests/testbed/demo.py for the local test bed.
        scratch_roots = ["{scratch_root}/{{user}}/"]
        state_dir = "{state_dir}"

        [log]
        destination = "{log_file}"
        level = "info"

        [s3]
        endpoint_url = "{s3.endpoint_url}"
        region = "{s3.region}"
        addressing_style = "path"

        [s3.encryption]
        mode = "none"

        [[s3.allow]]
        bucket = "{BUCKET}"
        prefix = ""
        users = ["{JOB_USER}"]
        access = ["read", "write"]
        """
    )


def hold_site_config(cluster: SlurmCluster) -> int:
    """Take the cluster's site-config lock for the rest of this process.

    The hooks' e2e tests write the same ``fsx-stage.toml``: a demo run during them (or
    the other way round) would point the jobs at the wrong site.
    """
    path = cluster.layout.root / SITE_CONFIG_LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def write_hook_credentials(cluster: SlurmCluster, s3: SeaweedServer) -> None:
    """The S3 keys the hooks resolve as root (DIR/aws/credentials, mode 0600)."""
    aws = cluster.layout.aws_dir
    aws.mkdir(mode=0o700, exist_ok=True)
    path = aws / "credentials"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(
            f"[default]\naws_access_key_id = {s3.access_key}\n"
            f"aws_secret_access_key = {s3.secret_key}\n"
        )


def upload_corpus(client: Any) -> None:
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    if BUCKET not in existing:
        client.create_bucket(Bucket=BUCKET)
    for key, text in CORPUS.items():
        client.put_object(Bucket=BUCKET, Key=key, Body=text.encode())
    say(f"uploaded {len(CORPUS)} objects to s3://{BUCKET}/corpus/")


def product_hooks_available() -> bool:
    """True when the installed ``fsx-stage`` has the ``prolog`` sub-command."""
    fsx_stage = repo_venv() / "bin" / "fsx-stage"
    proc = subprocess.run(
        [str(fsx_stage), "prolog", "--help"], capture_output=True, text=True, check=False
    )
    return proc.returncode == 0


def show_records(records: list[HookRecord]) -> None:
    for record in records:
        if record.value is None:
            say(f"  {record.hook}: SPANK_FSX_STAGE unset")
            continue
        values = [unquote_to_bytes(v).decode(errors="replace") for v in record.value.split(";")]
        say(f"  {record.hook}: SPANK_FSX_STAGE carried {len(values)} directive(s):")
        for value in values:
            say(f"      --fsx-stage={value}")


def list_results(client: Any, job_id: int) -> list[str]:
    listing = client.list_objects_v2(Bucket=BUCKET, Prefix=f"results/{job_id}/")
    return [obj["Key"] for obj in listing.get("Contents", [])]


def scancel(cluster: SlurmCluster, job_id: int) -> None:
    subprocess.run([str(BIN / "scancel"), str(job_id)], env=cluster.command_env(), check=False)


def main() -> int:
    testbed = testbed_dir()
    demo_dir = testbed / "demo"
    started = time.monotonic()

    s3 = start_s3(testbed / "s3")
    cluster = SlurmCluster(testbed / "slurm")
    say(f"{'started' if cluster.up() else 'reusing'} the Slurm cluster in {cluster.layout.root}")
    user = ensure_user(JOB_USER)

    hold_site_config(cluster)  # until the demo exits
    scratch = prepare_scratch(demo_dir / "fsx", user)
    state_dir = demo_dir / "state"
    state_dir.mkdir(parents=True, exist_ok=True)
    config = site_config(s3, scratch, state_dir, demo_dir / "fsx-stage.log")
    cluster.layout.fsx_stage_config.write_text(config)
    write_hook_credentials(cluster, s3)
    say(f"site config: {cluster.layout.fsx_stage_config}")

    client = s3.client()
    upload_corpus(client)

    script = JOB_TEMPLATE.read_text().replace("@SCRATCH@", str(scratch))
    script = script.replace("@BUCKET@", BUCKET)
    hooks_ready = product_hooks_available()
    private = private_interpreter_dir(cluster.hooks_home())
    if private is not None:
        say(
            f"WARNING: the hooks run a python under {private}: job users cannot read it, "
            "so staging will fail after the privilege drop. "
            "Set FSX_STAGE_HOME to a venv made from /usr/bin/python3."
        )
    job_id = cluster.submit(script, user)
    say(f"submitted {JOB_TEMPLATE.name} as {user}: job {job_id}")

    if not hooks_ready:
        records = cluster.wait_hook_records(job_id, ["prolog"], timeout=60)
        say("the Prolog received the job's directives:")
        show_records(records)
        scancel(cluster, job_id)
        cluster.ensure_node_usable()
        say(
            "STOPPED: `fsx-stage prolog` is not available yet, so nothing was staged and "
            "the job did not run (job cancelled, node resumed)."
        )
        return 1

    record = cluster.wait(job_id, timeout=600)
    records = cluster.wait_hook_records(job_id, ["prolog", "epilog"], timeout=600)
    say(f"job {job_id}: {record.get('JobState')} (exit code {record.get('ExitCode')})")
    show_records(records)
    results = list_results(client, job_id)
    say(f"objects under s3://{BUCKET}/results/{job_id}/: {results or 'none'}")
    key = f"results/{job_id}/wordcount.txt"
    if key in results:
        top = client.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode()
        say("top words:\n" + textwrap.indent("\n".join(top.splitlines()[:8]), "      "))
    status = subprocess.run(
        [str(repo_venv() / "bin" / "fsx-stage"), "status", str(job_id)],
        env={**os.environ, "FSX_STAGE_CONFIG": str(cluster.layout.fsx_stage_config)},
        capture_output=True,
        text=True,
        check=False,
    )
    if status.returncode == 0:
        say("fsx-stage status:\n" + textwrap.indent(status.stdout.rstrip(), "      "))
    say(f"done in {time.monotonic() - started:.1f}s; stop the servers: make cluster-down s3-down")
    ok = record.get("JobState") == "COMPLETED" and key in results
    if not ok:
        say(f"FAILED: see {demo_dir / 'fsx-stage.log'} and {cluster.layout.log_dir}")
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ClusterError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        sys.exit(1)
