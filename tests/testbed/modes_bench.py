"""Allocated node-seconds spent idle per GiB staged: Prolog/Epilog mode vs burst_buffer mode.

One job per mode on the real test clusters with SeaweedFS: stage in one object of
``--gib`` GiB, copy it to an ``out`` directory, flush that. Idle allocated time is the time
the node is allocated to the job while its script does not run:

- from the job's ``StartTime`` (allocation, scontrol) to the script's first line, and
- from the script's last line to the node's release: the Epilog's end in the
  Prolog/Epilog mode (fsx-stage state ``epilog.finished_at``), the job's ``EndTime`` in
  the burst_buffer mode (the flush runs after it, on the staging host).

CLI: ``python -m tests.testbed.modes_bench [--gib 2]``; prints a Markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import shutil
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

from tests.hooks.sitecfg import make_site
from tests.testbed.cluster import ensure_user, shared_cluster
from tests.testbed.demo import SITE_CONFIG_LOCK
from tests.testbed.seaweed import SeaweedServer

from fsx_stage.hooks.state import StateStore

USER = "fsxuser"


def _ts(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S").timestamp()


def measure(mode: str, server: SeaweedServer, bucket: str, gib: int) -> dict[str, float]:
    with shared_cluster(mode=mode) as cluster:
        lock = os.open(cluster.layout.root / SITE_CONFIG_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(lock, fcntl.LOCK_EX)  # the cluster's site config: one writer at a time
        config = cluster.layout.fsx_stage_config
        site = make_site(server.access_key, server.secret_key, config=config)
        extra = ""
        if mode == "burst_buffer":
            extra = f'\n[burst_buffer]\npaths_dir = "{cluster.layout.bb_paths_dir}"\n'
        site.write_config(
            server.endpoint_url,
            [bucket],
            workers=2,
            stage_in_budget=900,
            flush_budget=900,
            extra=extra,
        )
        site.user_dir(USER)
        work = f"{site.scratch}/%u/%j"
        job_id = cluster.submit(
            f"""#!/bin/sh
#SBATCH --fsx-stage=in,s3://{bucket}/big.bin,{work}/in/big.bin
#SBATCH --fsx-stage=out,{work}/out/,s3://{bucket}/out-{mode}/%j/
echo "begin $(date +%s.%N)"
d={site.scratch}/$(id -un)/$SLURM_JOB_ID
mkdir -p $d/out && cp $d/in/big.bin $d/out/big.bin
echo "end $(date +%s.%N)"
""",
            USER,
        )
        store = StateStore(site.state_dir)
        deadline = time.monotonic() + 1800
        while True:
            record = cluster.job(job_id)
            state = store.load(job_id)
            done = record["JobState"] == "COMPLETED" and state is not None
            if done and state is not None and state.epilog.finished_at is not None:
                break
            if record["JobState"] in ("FAILED", "CANCELLED") or time.monotonic() > deadline:
                raise RuntimeError(
                    f"{mode}: job {job_id}: {cluster.scontrol('show', 'job', str(job_id))}"
                )
            time.sleep(0.5)
        output = (cluster.user_workdir(USER) / f"slurm-{job_id}.out").read_text().split()
        begin, end = float(output[1]), float(output[3])
        start = _ts(record["StartTime"])
        released = state.epilog.finished_at if mode == "prolog" else _ts(record["EndTime"])
        assert state.prolog.started_at and state.prolog.finished_at
        result = {
            "stage_in_s": state.prolog.finished_at - state.prolog.started_at,
            "flush_s": state.epilog.finished_at - (state.epilog.started_at or 0),
            "idle_before_s": max(0.0, begin - start),
            "idle_after_s": max(0.0, released - end),
            "script_s": end - begin,
        }
        site.cleanup()
        config.unlink(missing_ok=True)
        os.close(lock)
        return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gib", type=int, default=2)
    args = parser.parse_args(argv)
    ensure_user(USER)
    tmp = tempfile.mkdtemp(prefix="modes-bench-")
    try:
        with SeaweedServer(Path(tmp) / "s3", die_with_parent=True) as server:
            client = server.client()
            bucket = f"modes-{uuid.uuid4().hex[:8]}"
            client.create_bucket(Bucket=bucket)
            source = Path(tmp) / "big.bin"
            with source.open("wb") as f:
                for _ in range(args.gib * 16):
                    f.write(os.urandom(64 * 1024**2))
            client.upload_file(str(source), bucket, "big.bin")
            source.unlink()
            rows = {}
            for mode in ("prolog", "burst_buffer"):
                rows[mode] = measure(mode, server, bucket, args.gib)
                print(mode, rows[mode], file=sys.stderr, flush=True)
            with contextlib.suppress(Exception):
                for obj in client.list_objects_v2(Bucket=bucket).get("Contents", []):
                    client.delete_object(Bucket=bucket, Key=obj["Key"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    staged = 2 * args.gib  # GiB in + GiB out
    print(
        f"| mode | stage-in s | flush s | allocated idle before script s | after script s "
        f"| idle node-s per GiB staged ({staged} GiB) |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for mode, r in rows.items():
        idle = r["idle_before_s"] + r["idle_after_s"]
        print(
            f"| {mode} | {r['stage_in_s']:.1f} | {r['flush_s']:.1f} | {r['idle_before_s']:.1f} "
            f"| {r['idle_after_s']:.1f} | {idle / staged:.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
