"""The SPANK plugin on a real cluster: ``--fsx-stage`` reaches the Prolog and Epilog intact.

The values travel as ``SPANK_FSX_STAGE``: each value percent-encoded byte by
byte (every byte that is not ASCII alphanumeric and not one of ``-._~/:,=@+``
becomes ``%XX``, uppercase hex), joined with ``;``. The test-bed hook wrappers
record the raw variable in ``hook-record.log``; these tests decode it with the
standard library, independently of the product's decoder.

Whether the product hooks then stage anything is not checked here (see
tests/e2e/): the job may end FAILED or held once the real hooks run.

The values are odd on purpose (control bytes, ``;``, made-up buckets) and most are not
valid directives: these tests submit through the test bed's client that loads the plugin
without the submit-time checker (``slurm-nocheck.conf``), so each job is accepted because
the plugin's own shape check passes, and its values reach the hooks exactly as given. The
checker (``fsx-stage check --directive``) is tested in tests/e2e/test_submit_check_slurm.py.
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from urllib.parse import quote, unquote_to_bytes

import pytest
from tests.testbed.cluster import (
    BIN,
    ClusterError,
    HookRecord,
    SlurmCluster,
    parse_scontrol_record,
)

pytestmark = pytest.mark.slurm

SAFE = "-._~/:,=@+"  # besides ASCII letters and digits
ENCODED_ALPHABET = re.compile(r"[A-Za-z0-9\-._~/:,=@+%;]*")

SCRIPT_VALUES = [
    "in,s3://genomics/ref/hg38/,/fsx/%u/ref/",
    "out,/fsx/u/r é;s,s3://b/p q=1/",
]
COMMAND_LINE_VALUE = "checkpoint,/fsx/ck 100%,s3://b/ck/ü\\,x,keep=3"


def decode(raw: str) -> list[bytes]:
    """The values of a ``SPANK_FSX_STAGE`` string, as bytes."""
    return [unquote_to_bytes(part) for part in raw.split(";")]


def encode(values: Sequence[str]) -> str:
    """The contract's encoding, built from the standard library (for the exact-form check)."""
    return ";".join(quote(v.encode(), safe=SAFE) for v in values)


def batch_script(values: Sequence[str]) -> str:
    directives = "".join(f'#SBATCH --fsx-stage="{v}"\n' for v in values)
    return f"#!/bin/sh\n#SBATCH --job-name=spank-e2e\n{directives}true\n"


def find_job_by_name(cluster: SlurmCluster, name: str) -> int:
    for line in cluster.scontrol("show", "job", "-o").splitlines():
        record = parse_scontrol_record(line)
        if record.get("JobName") == name:
            return int(record["JobId"])
    raise AssertionError(f"no job named {name}")


@pytest.fixture(scope="module")
def slurm_cluster(slurm_cluster: SlurmCluster) -> SlurmCluster:
    """The session's cluster, its clients loading the plugin without the checker."""
    return slurm_cluster.without_submit_check()


@pytest.fixture
def cleanup_jobs(slurm_cluster: SlurmCluster) -> Iterator[list[int]]:
    """Job ids to cancel afterwards (a job held after a failed Prolog would linger).

    Each job is first let settle: cancelling while its Prolog still runs would race
    with what the hooks do to the job.
    """
    jobs: list[int] = []
    yield jobs
    for job_id in jobs:
        slurm_cluster.wait(job_id, timeout=120)
        subprocess.run(
            [str(BIN / "scancel"), str(job_id)], env=slurm_cluster.command_env(), check=False
        )


def values_seen_by(records: Sequence[HookRecord], hook: str) -> list[str | None]:
    return [r.value for r in records if r.hook == hook]


def test_sbatch_help_lists_the_option(slurm_cluster: SlurmCluster) -> None:
    out = subprocess.run(
        [str(BIN / "sbatch"), "--help"],
        env=slurm_cluster.command_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "--fsx-stage=KIND,SRC,DST[,OPT=VAL]..." in out
    assert "Stage data between S3 and scratch (repeatable)" in out


def test_prolog_and_epilog_receive_every_value_in_order_byte_for_byte(
    slurm_cluster: SlurmCluster, job_user: str, cleanup_jobs: list[int]
) -> None:
    job_id = slurm_cluster.submit(
        batch_script(SCRIPT_VALUES), job_user, [f"--fsx-stage={COMMAND_LINE_VALUE}"]
    )
    cleanup_jobs.append(job_id)
    slurm_cluster.wait(job_id, timeout=120)
    records = slurm_cluster.wait_hook_records(job_id, ["prolog", "epilog"])

    expected = [*SCRIPT_VALUES, COMMAND_LINE_VALUE]
    for hook in ("prolog", "epilog"):
        seen = values_seen_by(records, hook)
        assert seen, f"no {hook} record for job {job_id}"
        for raw in seen:
            assert raw is not None, f"{hook} ran without SPANK_FSX_STAGE"
            assert ENCODED_ALPHABET.fullmatch(raw), raw
            assert decode(raw) == [v.encode() for v in expected]
            assert raw == encode(expected)


def test_every_byte_but_nul_survives(
    slurm_cluster: SlurmCluster, job_user: str, cleanup_jobs: list[int]
) -> None:
    value = b"in,s3://b/k," + bytes(range(1, 256))  # any byte a command line can carry
    job_id = slurm_cluster.submit(
        "#!/bin/sh\ntrue\n", job_user, [f"--fsx-stage={os.fsdecode(value)}"]
    )
    cleanup_jobs.append(job_id)
    records = slurm_cluster.wait_hook_records(job_id, ["prolog"])
    raw = values_seen_by(records, "prolog")[0]
    assert raw is not None
    assert ENCODED_ALPHABET.fullmatch(raw), raw
    assert decode(raw) == [value]


def test_a_job_without_the_option_gets_no_variable(
    slurm_cluster: SlurmCluster, job_user: str, cleanup_jobs: list[int]
) -> None:
    job_id = slurm_cluster.submit("#!/bin/sh\ntrue\n", job_user)
    cleanup_jobs.append(job_id)
    record = slurm_cluster.wait(job_id, timeout=120)
    records = slurm_cluster.wait_hook_records(job_id, ["prolog", "epilog"])
    assert record["JobState"] == "COMPLETED"
    assert values_seen_by(records, "prolog") == [None]
    assert values_seen_by(records, "epilog") == [None]


MALFORMED = [  # positions are 1-based characters, as in the Python parser's messages
    ("inn,s3://b/k,/fsx/x", "expected KIND in|out|checkpoint at position 1"),
    ("in", "expected ',SRC' after KIND at position 3"),
    ("in,,/fsx/x", "expected a non-empty SRC at position 4"),
    ("out,/fsx/x", "expected ',DST' after SRC at position 11"),
    ("out,/fsx/x,", "expected a non-empty DST at position 12"),
    ("in,s3://b/k\\,/fsx/x", "expected ',DST' after SRC at position 20"),
    ("out,/fsx/é/ü", "expected ',DST' after SRC at position 13"),
]


@pytest.mark.parametrize(("value", "problem"), MALFORMED)
def test_sbatch_refuses_a_malformed_value_at_submit_time(
    slurm_cluster: SlurmCluster, job_user: str, value: str, problem: str
) -> None:
    name = f"malformed-{uuid.uuid4().hex[:8]}"
    proc = slurm_cluster.user_command(
        job_user,
        [str(BIN / "sbatch"), f"--job-name={name}", f"--fsx-stage={value}", "--wrap=true"],
        cwd=slurm_cluster.user_workdir(job_user),
    )
    assert proc.returncode != 0
    assert f"--fsx-stage: '{value}': {problem}" in proc.stderr
    assert f"JobName={name}" not in slurm_cluster.scontrol("show", "job", "-o")


def test_sbatch_refuses_a_malformed_value_in_the_script(
    slurm_cluster: SlurmCluster, job_user: str
) -> None:
    with pytest.raises(ClusterError, match=r"expected KIND in\|out\|checkpoint at position 1"):
        slurm_cluster.submit(batch_script(["in,s3://b/k,/fsx/x", "copy,a,b"]), job_user)


@pytest.mark.parametrize("command", ["salloc", "srun"])
def test_salloc_and_srun_pass_the_option_to_the_prolog(
    slurm_cluster: SlurmCluster, job_user: str, cleanup_jobs: list[int], command: str
) -> None:
    value = f"in,s3://b/{command} x,/fsx/{command}"
    name = f"{command}-{uuid.uuid4().hex[:8]}"
    slurm_cluster.ensure_node_usable()
    # The exit status depends on the product hooks; what matters is the Prolog's view.
    slurm_cluster.user_command(
        job_user,
        [str(BIN / command), f"--job-name={name}", f"--fsx-stage={value}", "/bin/true"],
        cwd=slurm_cluster.user_workdir(job_user),
    )
    job_id = find_job_by_name(slurm_cluster, name)
    cleanup_jobs.append(job_id)
    records = slurm_cluster.wait_hook_records(job_id, ["prolog"])
    assert values_seen_by(records, "prolog") == [encode([value])]


@pytest.mark.parametrize("command", ["salloc", "srun"])
def test_salloc_and_srun_refuse_a_malformed_value(
    slurm_cluster: SlurmCluster, job_user: str, command: str
) -> None:
    proc = slurm_cluster.user_command(
        job_user,
        [str(BIN / command), "--fsx-stage=in,s3://b/k", "/bin/true"],
        cwd=slurm_cluster.user_workdir(job_user),
    )
    assert proc.returncode != 0
    assert "--fsx-stage: 'in,s3://b/k': expected ',DST' after SRC at position 12" in proc.stderr


def test_srun_inside_a_job_warns_that_the_option_has_no_effect(
    slurm_cluster: SlurmCluster, job_user: str, cleanup_jobs: list[int]
) -> None:
    script = "#!/bin/sh\nsrun --fsx-stage=out,/fsx/x/,s3://b/x/ true\n"
    job_id = slurm_cluster.submit(script, job_user, ["--output=step-%j.out"])
    cleanup_jobs.append(job_id)
    record = slurm_cluster.wait(job_id, timeout=120)
    output = (slurm_cluster.user_workdir(job_user) / f"step-{job_id}.out").read_text()
    assert record["JobState"] == "COMPLETED"
    assert "--fsx-stage is ignored for a step of an existing job" in output
    records = slurm_cluster.wait_hook_records(job_id, ["prolog", "epilog"])
    assert values_seen_by(records, "prolog") == [None]
