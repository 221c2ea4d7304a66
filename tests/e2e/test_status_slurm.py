"""``fsx-stage status`` seen by the job user while a real job's Prolog stages its input.

The fault proxy holds every object GET for a while, so the stage-in lasts long enough for
the user to look: status shows live objects, bytes and rate for the running entry, not
``running 0 B`` until the entry ends."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from tests.e2e.test_hooks_slurm import Bed, bed

pytestmark = pytest.mark.slurm

__all__ = ["bed"]

OBJECTS = 96
SIZE = 8192


def test_status_shows_live_progress_while_the_prolog_stages_in(bed: Bed, fault_proxy: Any) -> None:
    for i in range(OBJECTS):
        bed.client.put_object(Bucket=bed.bucket, Key=f"live/{i:02d}", Body=b"z" * SIZE)
    fault_proxy.set_faults(
        latency_s=1.0, latency_rate=1.0, methods=frozenset({"GET"}), key_pattern=r"/live/\d"
    )
    bed.site.write_config(fault_proxy.endpoint_url, [bed.bucket], workers=2)
    try:
        job_id = bed.submit(
            f"#!/bin/sh\n#SBATCH --fsx-stage=in,s3://{bed.bucket}/live/,{bed.scratch}/%u/live-%j/\n"
            f"ls {bed.scratch}/{bed.user}/live-$SLURM_JOB_ID | wc -l\n"
        )
        seen: list[str] = []
        deadline = time.monotonic() + 90
        while bed.cluster.job(job_id)["JobState"] in {"PENDING", "CONFIGURING", "RUNNING"}:
            assert time.monotonic() < deadline, bed.show_job(job_id)
            shown = bed.as_user(bed.fsx_stage, "status", str(job_id)).stdout
            match = re.search(r"so far: (\d+) objects, .* in \d+ s \(.+/s\)", shown)
            if match and 0 < int(match.group(1)) < OBJECTS:
                seen.append(shown)
            state = bed.state(job_id)
            if state is not None and state.prolog.finished_at:
                break
            time.sleep(0.3)
        record = bed.cluster.wait(job_id, timeout=90)
        assert record["JobState"] == "COMPLETED", bed.show_job(job_id)
        assert seen, "status never showed live counts while the Prolog staged in"
        assert "running" in seen[0]
        assert bed.output(job_id).split() == [str(OBJECTS)]
        bed.wait_epilog(job_id)
    finally:
        bed.live_config()
