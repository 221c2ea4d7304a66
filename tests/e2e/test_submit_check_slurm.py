"""Mistakes caught at submission: sbatch, salloc and srun refuse what the Prolog would.

The test bed's plugstack.conf gives the SPANK plugin the checker (``fsx_stage=`` the
hooks' ``fsx-stage``, ``config=`` the cluster's site config, tests/testbed/cluster.py).
Each refusal must carry the message ``fsx-stage check`` prints for the same directive, and
no job may reach the controller. A checker that cannot answer only warns: the Prolog
still validates (the job is then cancelled by it, as before).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.e2e import test_hooks_slurm
from tests.e2e.test_hooks_slurm import Bed
from tests.test_spank_e2e import encode
from tests.testbed.cluster import BIN, SlurmCluster

pytestmark = pytest.mark.slurm

bed = test_hooks_slurm.bed  # the same module fixture: site config, bucket, scratch


def _jobs_named(bed: Bed, name: str) -> list[str]:
    return [line for line in bed.cluster.scontrol("show", "job", "-o").splitlines() if name in line]


def _check_messages(bed: Bed, script: Path) -> list[str]:
    """What ``fsx-stage check SCRIPT`` (run as the user) says, without ``SCRIPT:LINE:``
    and without its hint about sbatch's backslash removal."""
    proc = bed.as_user(bed.fsx_stage, "check", str(script))
    assert proc.returncode == 2, proc
    messages = [line.split(": ", 1)[1] for line in proc.stderr.splitlines()]
    return [m.split(" (sbatch removes one backslash")[0] for m in messages]


def _script(bed: Bed, name: str, lines: list[str]) -> Path:
    path = bed.cluster.user_workdir(bed.user) / f"{name}.sbatch"
    header = "".join(f"#SBATCH --fsx-stage={line}\n" for line in lines)
    path.write_text(f"#!/bin/sh\n#SBATCH --job-name={name}\n{header}true\n")
    return path


CASES = {
    "relative-path": ("in,s3://{b}/d/,relative/d/", "got a relative path"),
    "when-typo": ("out,{s}/%u/r/,s3://{b}/r/,when=sucess", "got 'sucess'"),
    # One backslash on an #SBATCH line: sbatch removes it, the comma splits the SRC.
    "lone-escape": ("in,s3://{b}/a\\,b.csv,{s}/%u/", "expected DST: an absolute path"),
    "outside-scratch": ("in,s3://{b}/d/,{s}/someone-else/d/", "is outside your scratch roots"),
    "refused-bucket": ("in,s3://not-{b}/d/,{s}/%u/d/", "is not allowed for user"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_sbatch_refuses_with_the_check_message(bed: Bed, case: str) -> None:
    template, fragment = CASES[case]
    directive = template.format(b=bed.bucket, s=bed.scratch)
    name = f"refused-{uuid.uuid4().hex[:8]}"
    script = _script(bed, name, [f"in,s3://{bed.bucket}/ok/,{bed.scratch}/%u/ok/", directive])
    expected = _check_messages(bed, script)
    assert len(expected) == 1 and fragment in expected[0], expected
    for test_only in ([], ["--test-only"]):
        proc = bed.cluster.user_command(
            bed.user, [str(BIN / "sbatch"), *test_only, str(script)], cwd=script.parent
        )
        assert proc.returncode != 0, proc
        assert f"sbatch: error: {expected[0]}\n" in proc.stderr, proc.stderr
        assert "--fsx-stage: job refused" in proc.stderr
    assert _jobs_named(bed, name) == []


def test_every_problem_is_listed_and_a_lone_backslash_on_the_command_line(bed: Bed) -> None:
    name = f"refused-{uuid.uuid4().hex[:8]}"
    values = [
        f"out,{bed.scratch}/%u/r,s3://{bed.bucket}/r\\",
        f"in,s3://not-{bed.bucket}/d/,{bed.scratch}/%u/d/",
    ]
    proc = bed.cluster.user_command(
        bed.user,
        [
            str(BIN / "sbatch"),
            f"--job-name={name}",
            *(f"--fsx-stage={v}" for v in values),
            "--wrap=true",
        ],
        cwd=bed.cluster.user_workdir(bed.user),
    )
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("sbatch: error: --")]
    assert errors[0] == (
        f"sbatch: error: --fsx-stage={values[0]}: position {len(values[0])}: "
        "expected '\\,' or '\\\\' after a backslash, got the end"
    )
    assert errors[1].startswith(f"sbatch: error: --fsx-stage={values[1]}: reading s3://not-")
    assert _jobs_named(bed, name) == []


@pytest.mark.parametrize("command", ["salloc", "srun"])
def test_salloc_and_srun_refuse_too(bed: Bed, command: str) -> None:
    name = f"{command}-{uuid.uuid4().hex[:8]}"
    value = f"in,s3://{bed.bucket}/d/,{bed.scratch}/someone-else/d/"
    proc = bed.cluster.user_command(
        bed.user,
        [str(BIN / command), f"--job-name={name}", f"--fsx-stage={value}", "/bin/true"],
        cwd=bed.cluster.user_workdir(bed.user),
    )
    assert proc.returncode != 0
    assert (
        f"{command}: error: --fsx-stage={value}: {bed.scratch}/someone-else/d/ is outside your "
        f"scratch roots; allowed: {bed.scratch}/{bed.user}/"
    ) in proc.stderr, proc.stderr
    assert _jobs_named(bed, name) == []


def test_a_valid_job_is_accepted_staged_and_its_values_reach_the_hooks_intact(bed: Bed) -> None:
    bed.client.put_object(Bucket=bed.bucket, Key="valid/in.txt", Body=b"valid input\n")
    values = [
        f"in,s3://{bed.bucket}/valid/in.txt,{bed.scratch}/%u/%j/in.txt",
        f"out,{bed.scratch}/%u/%j/out/,s3://{bed.bucket}/valid/%j/,when=success",
    ]
    script = "#!/bin/sh\n" + "".join(f"#SBATCH --fsx-stage={v}\n" for v in values)
    script += f'd={bed.scratch}/$(id -un)/$SLURM_JOB_ID; mkdir "$d/out"; cp "$d/in.txt" "$d/out/"\n'
    job_id = bed.submit(script)
    record = bed.cluster.wait(job_id, timeout=120)
    assert record["JobState"] == "COMPLETED", bed.show_job(job_id)
    bed.wait_epilog(job_id)
    body = bed.client.get_object(Bucket=bed.bucket, Key=f"valid/{job_id}/in.txt")["Body"].read()
    assert body == b"valid input\n"
    prolog = [r.value for r in bed.cluster.hook_records(job_id) if r.hook == "prolog"]
    assert prolog == [encode(values)]


def test_a_filter_that_selects_everything_is_a_warning_at_submission(bed: Bed) -> None:
    value = f"in,s3://{bed.bucket}/d/,{bed.scratch}/%u/d/,include=*.h5"
    proc = bed.cluster.user_command(
        bed.user,
        [str(BIN / "sbatch"), "--test-only", f"--fsx-stage={value}", "--wrap=true"],
        cwd=bed.cluster.user_workdir(bed.user),
    )
    assert proc.returncode == 0, proc.stderr
    assert f"warning: --fsx-stage={value}: position" in proc.stderr
    assert "include=*.h5 has no effect" in proc.stderr


@pytest.fixture
def broken_checker(bed: Bed, request: pytest.FixtureRequest) -> Iterator[SlurmCluster]:
    """A client whose plugstack names a checker that is missing, hangs or crashes."""
    layout = bed.cluster.layout
    tag = uuid.uuid4().hex[:8]
    program = layout.root / f"checker-{tag}"
    kind = request.param
    if kind == "hangs":
        program.write_text("#!/bin/sh\nexec sleep 60\n")
    elif kind == "crashes":
        program.write_text("#!/bin/sh\nkill -SEGV $$\n")
    if program.exists():
        program.chmod(0o755)
    plugstack = layout.root / f"plugstack-{tag}.conf"
    so = re.search(r"^required (\S+)", layout.plugstack_conf.read_text(), re.M)
    assert so is not None
    plugstack.write_text(
        f"required {so.group(1)} fsx_stage={program} config={layout.fsx_stage_config}\n"
    )
    conf = layout.root / f"slurm-{tag}.conf"
    conf.write_text(
        layout.slurm_conf.read_text().replace(
            f"PlugStackConfig={layout.plugstack_conf}", f"PlugStackConfig={plugstack}"
        )
    )
    yield SlurmCluster(layout.root, bed.cluster.mode, client_conf=conf)
    for path in (program, plugstack, conf):
        path.unlink(missing_ok=True)


@pytest.mark.parametrize(
    ("broken_checker", "told"),
    [
        ("missing", "No such file or directory"),
        ("hangs", "check did not answer within 10 s"),
        ("crashes", "check was killed by signal 11"),
    ],
    indirect=["broken_checker"],
)
def test_a_checker_that_cannot_answer_warns_and_the_prolog_still_refuses(
    bed: Bed, broken_checker: SlurmCluster, told: str
) -> None:
    directive = f"in,s3://not-{bed.bucket}/d/,{bed.scratch}/%u/d/"
    workdir = bed.cluster.user_workdir(bed.user)
    proc = broken_checker.user_command(
        bed.user,
        [str(BIN / "sbatch"), "--parsable", f"--fsx-stage={directive}", "--wrap=true"],
        cwd=workdir,
    )
    assert proc.returncode == 0, proc.stderr
    assert told in proc.stderr and "the job is accepted" in proc.stderr, proc.stderr
    job_id = int(proc.stdout.strip().split(";")[0])
    record = bed.cluster.wait(job_id, timeout=90)
    assert record["JobState"] == "CANCELLED", bed.show_job(job_id)
    assert f"not-{bed.bucket}" in bed.show_job(job_id)
    bed.wait_epilog(job_id)
