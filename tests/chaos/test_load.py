"""Load: many concurrent jobs staging overlapping and distinct prefixes, then flushing."""

from __future__ import annotations

import random
import time

import pytest
from tests.chaos.bed import ChaosBed, chaos_bed, hook_walls
from tests.chaos.conftest import scaled
from tests.chaos.invariants import Checker, local_files, s3_objects
from tests.chaos.results import ScenarioResult
from tests.chaos.tools import KiB, put_all

__all__ = ["chaos_bed"]
GROUP = "load"
pytestmark = pytest.mark.slurm
SHARED_GROUPS = 4


def test_many_jobs_overlapping_and_distinct_prefixes(
    scale: float, result: ScenarioResult, checker: Checker, chaos_bed: ChaosBed
) -> None:
    """Jobs submitted all at once (50 at full scale) over 20,000 objects in all: every job
    stages its own prefix and one of four shared prefixes (each shared by a quarter of the
    jobs, so concurrent Prologs read the same objects), computes, and flushes a result
    tree. No fault is injected: every job must complete with both hooks done, every staged
    tree must be complete and identical, every result must be in S3."""
    bed = chaos_bed
    rng = random.Random(31)
    jobs = scaled(scale, 50, 2)
    total = scaled(scale, 20000, 400)
    shared_each = total // 5 // SHARED_GROUPS
    own_each = (total - shared_each * SHARED_GROUPS) // jobs
    run = f"load{rng.randrange(10**6)}"
    contents: dict[str, bytes] = {}
    for g in range(SHARED_GROUPS):
        for i in range(shared_each):
            contents[f"{run}/shared{g}/s{i:05d}.dat"] = rng.randbytes(
                rng.choice([0, 512, 2 * KiB, 8 * KiB])
            )
    for j in range(jobs):
        for i in range(own_each):
            contents[f"{run}/own{j}/o{i:05d}.dat"] = rng.randbytes(
                rng.choice([100, 1 * KiB, 4 * KiB, 16 * KiB])
            )
    put_all(bed.client, bed.bucket, "", contents)
    scratch = bed.scratch
    started = time.monotonic()
    job_ids = []
    for j in range(jobs):
        job_ids.append(
            bed.submit(
                f"""#!/bin/sh
#SBATCH --fsx-stage=in,s3://{bed.bucket}/{run}/own{j}/,{scratch}/%u/%j/own/
#SBATCH --fsx-stage=in,s3://{bed.bucket}/{run}/shared{j % SHARED_GROUPS}/,{scratch}/%u/%j/shared/
#SBATCH --fsx-stage=out,{scratch}/%u/%j/out/,s3://{bed.bucket}/{run}/out/%j/
cd {scratch}/$(id -un)/$SLURM_JOB_ID
mkdir -p out
ls own | wc -l > out/own.count
ls shared | wc -l > out/shared.count
cat own/* | md5sum > out/own.md5
"""
            )
        )
    states = {}
    for job_id in job_ids:
        record = bed.cluster.wait(job_id, timeout=900)
        state = bed.wait_epilog(job_id, timeout=300)
        states[job_id] = state
        ok = (
            record["JobState"] == "COMPLETED"
            and state["prolog"]["status"] == "done"
            and state["epilog"]["status"] == "done"
        )
        result.failures += not ok
        result.runs += 1
        result.hook_wall_s.extend(hook_walls(state))
    makespan = time.monotonic() - started
    assert result.failures == 0, {j: (s["prolog"], s["epilog"]) for j, s in states.items()}
    listings = {
        prefix: s3_objects(bed.client, bed.bucket, f"{run}/{prefix}/")
        for prefix in [f"shared{g}" for g in range(SHARED_GROUPS)]
        + [f"own{j}" for j in range(jobs)]
    }
    staged_bytes = staged_objects = 0
    for j, job_id in enumerate(job_ids):
        base = bed.user_scratch / str(job_id)
        for name, prefix in (("own", f"own{j}"), ("shared", f"shared{j % SHARED_GROUPS}")):
            staged_objects += checker.staged_in(
                bed.bucket, f"{run}/{prefix}/", base / name, listing=listings[prefix]
            )
            staged_bytes += sum(
                len(contents[f"{run}/{prefix}/{k}"]) for k in local_files(base / name)
            )
        written = {p.name: p.read_bytes() for p in (base / "out").iterdir()}
        outcome = checker.flushed_or_pending(
            bed.bucket, f"{run}/out/{job_id}/", base / "out", written, bed.pending_record(job_id)
        )
        assert outcome == "flushed"
        assert (base / "out" / "own.count").read_text().strip() == str(own_each)
        assert (base / "out" / "shared.count").read_text().strip() == str(shared_each)
    result.add_transfer(staged_objects, staged_bytes, makespan)
    checker.confined(bed.uid, [bed.user_scratch], [bed.site.root])
    checker.no_secrets(bed.logs())
    checker.node_in_service(bed.cluster.env)
    result.notes.append(
        f"{jobs} jobs, {len(contents)} objects in S3 ({SHARED_GROUPS} shared prefixes of"
        f" {shared_each}, {jobs} own prefixes of {own_each}); {staged_objects} objects staged"
        f" in all; makespan {makespan:.0f} s (throughput = staged bytes / makespan, 2 jobs at"
        " a time on 2 cores)"
    )
