"""Hostile input, run as the non-root job user: keys, symlinks, directives, SPANK values.

Transfers run ``fsx-stage`` as the job user (the hooks' venv, which every user can run);
jobs go through the real Slurm cluster. The checker decides what escaped.
"""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.chaos.bed import ChaosBed, chaos_bed
from tests.chaos.conftest import scaled
from tests.chaos.invariants import Canary, Checker, InvariantBroken, local_files, s3_objects
from tests.chaos.results import ScenarioResult
from tests.chaos.tools import cli
from tests.testbed.cluster import ClusterError, ensure_user

from fsx_stage.config import parse_config
from fsx_stage.directives import DirectiveError, parse_directive
from fsx_stage.job import JobIdentity
from fsx_stage.plan import PlanError, build_plan

__all__ = ["chaos_bed"]
GROUP = "hostile"
OTHER_USER = "fsxother"

HOSTILE_KEYS = [
    "../escape",
    "a/../../escape",
    "/lead/slash",
    "//double/lead",
    "mid//double",
    "./dot",
    "x/./y",
    "up/..",
    "ctl\x01\x02\x1b[31m\x7f.txt",
    "tab\there.txt",
    "k" * 1024,
    "deep/" + "n" * 1019,
    "both",
    "both/child",
    "marker/",
    "marker/inside.txt",
    "lonely-marker/",
    "sp ace/é/ü.txt",
]


@pytest.fixture
def user_area(job_user: str) -> Iterator[Path]:
    """A root-owned, world-traversable directory with a job-user-owned ``dst`` in it."""
    root = Path(tempfile.mkdtemp(prefix="fsx-hostile-"))
    root.chmod(0o755)
    entry = pwd.getpwnam(job_user)
    dst = root / "dst"
    dst.mkdir()
    os.chown(dst, entry.pw_uid, entry.pw_gid)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_hostile_keys_as_the_job_user(
    scale: float,
    result: ScenarioResult,
    moto_server: Any,
    chaos_cluster: Any,
    job_user: str,
    user_area: Path,
) -> None:
    """Keys with ``..``, leading ``/``, ``//``, control characters, 1,024 bytes, a key that
    is both a file and a prefix, directory markers with bodies (stored on moto: SeaweedFS
    refuses some) are staged by the job user: each is refused with a listed failure or
    lands exactly at its own name inside DST; nothing is written outside DST."""
    client = moto_server.client()
    checker = result.track(Checker(client, secrets=(moto_server.secret_key,)))
    bucket = f"hostile-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=bucket)
    for i, key in enumerate(HOSTILE_KEYS):
        client.put_object(Bucket=bucket, Key=f"p/{key}", Body=f"body {i} of {key!r}".encode())
    canary = Canary(user_area / "canary").plant()
    fsx_stage = str(chaos_cluster.hooks_home() / "bin" / "fsx-stage")
    dst = user_area / "dst"
    run = cli(
        ["cp", "--recursive", f"s3://{bucket}/p/", str(dst)],
        moto_server.env(),
        user=job_user,
        executable=fsx_stage,
    )
    result.runs += 1
    assert run.returncode in (0, 1), run.stderr
    failed = [k for k in HOSTILE_KEYS if f"failed: p/{k}:" in run.stderr]
    result.expected_failures += len(failed)
    result.add_transfer(run.objects, run.bytes, run.seconds)
    files = checker.staged_in(bucket, "p/", dst, complete=False)
    staged = local_files(dst)
    markers = [k for k in HOSTILE_KEYS if k.endswith("/")]
    unaccounted = [
        k for k in HOSTILE_KEYS if k not in staged and k not in failed and k not in markers
    ]
    assert not unaccounted, f"neither staged nor reported: {unaccounted!r}\n{run.stderr}"
    for marker in markers:
        assert (dst / marker).is_dir() or f"failed: p/{marker}:" in run.stderr, marker
    uid = pwd.getpwnam(job_user).pw_uid
    checker.confined(uid, [dst], [user_area], [canary])
    checker.no_secrets([], [run.stdout, run.stderr])
    # The upload direction: file names that are not UTF-8 and control characters.
    src = dst
    (src / "latin1-\xe9".encode("latin-1").decode("utf-8", "surrogateescape")).write_bytes(b"x")
    os.chown(src / os.fsdecode(b"latin1-\xe9"), uid, -1)
    up = cli(
        ["cp", "--recursive", str(src), f"s3://{bucket}/up/"],
        moto_server.env(),
        user=job_user,
        executable=fsx_stage,
    )
    result.runs += 1
    assert up.returncode in (0, 1), up.stderr
    if up.returncode == 1:
        assert "latin1" in up.stderr, up.stderr
        result.expected_failures += 1
    uploaded_from = local_files(src)
    for key, digest in s3_objects(client, bucket, "up/").items():
        relative = key.removeprefix("up/")
        if relative.endswith("/") and (src / relative).is_dir():
            continue  # an empty directory travels as a marker object
        if uploaded_from.get(relative) != digest:
            raise InvariantBroken(f"uploaded {key!r} does not match its file")
    result.notes.append(
        f"{len(HOSTILE_KEYS)} hostile keys: {files} staged at their own name, {len(failed)}"
        f" refused with a listed failure, {len(markers)} directory markers (bodies not"
        f" staged, made directories); non-UTF-8 file name upload: exit {up.returncode}"
    )


def test_symlinks_planted_in_the_destination(
    scale: float,
    result: ScenarioResult,
    s3_server: Any,
    s3_client: Any,
    bucket: str,
    chaos_cluster: Any,
    job_user: str,
    user_area: Path,
) -> None:
    """The job user plants symlinks in DST (at final names and on directory paths) pointing
    at root-owned files and directories, and in an upload source pointing at a root-owned
    world-readable file. The stager follows none of them: the targets are unchanged, no
    file appears in the root-owned directory, and the linked file's contents reach no
    object."""
    checker = result.track(Checker(s3_client, secrets=(s3_server.secret_key,)))
    uid = pwd.getpwnam(job_user).pw_uid
    secret = Canary(user_area / "root-secret").plant()
    readable = Canary(user_area / "root-readable").plant()
    readable.path.chmod(0o644)
    victim_dir = user_area / "root-dir"
    victim_dir.mkdir()
    fsx_stage = str(chaos_cluster.hooks_home() / "bin" / "fsx-stage")
    dst = user_area / "dst"
    for round_ in range(scaled(scale, 10, 2)):
        keys = {
            f"r{round_}/top.txt": b"top",
            f"r{round_}/sub/f.txt": b"sub",
            f"r{round_}/ok.txt": b"ok",
        }
        for key, body in keys.items():
            s3_client.put_object(Bucket=bucket, Key=key, Body=body)
        target = dst / f"r{round_}"
        target.mkdir()
        os.chown(target, uid, -1)
        for name, points_at in (("top.txt", secret.path), ("sub", victim_dir)):
            os.symlink(points_at, target / name)
            os.lchown(target / name, uid, -1)
        run = cli(
            ["cp", "--recursive", f"s3://{bucket}/r{round_}/", str(target)],
            s3_server.env(),
            user=job_user,
            executable=fsx_stage,
        )
        result.runs += 1
        assert run.returncode in (0, 1), run.stderr
        result.expected_failures += run.returncode
        assert list(victim_dir.iterdir()) == [], "a file was written through a symlink"
        assert (target / "ok.txt").read_bytes() == b"ok"
        # Upload: a symlink to a root-owned, world-readable file outside the tree.
        up_src = dst / f"up{round_}"
        up_src.mkdir()
        (up_src / "data.txt").write_bytes(b"data")
        os.symlink(readable.path, up_src / "link.txt")
        for path in (up_src, up_src / "data.txt"):
            os.chown(path, uid, -1)
        os.lchown(up_src / "link.txt", uid, -1)
        up = cli(
            ["cp", "--recursive", str(up_src), f"s3://{bucket}/up{round_}/"],
            s3_server.env(),
            user=job_user,
            executable=fsx_stage,
        )
        result.runs += 1
        assert up.returncode in (0, 1), up.stderr
        checker.confined(uid, [dst], [user_area], [secret, readable], {bucket: s3_client})
        checker.no_secrets([], [run.stdout, run.stderr, up.stdout, up.stderr])


# --- directives fuzzed with hypothesis -------------------------------------------------------

_PIECES = [
    "s3://allowed/data/",
    "s3://allowed/data/x.bin",
    "s3://other-bucket/x/",
    "s3://allowed/../x/",
    "s3://ALLOWED/x",
    "/fsx/fuzzuser/in/",
    "/fsx/fuzzuser/%j/in/",
    "/fsx/%u/out/",
    "/fsx/otheruser/steal/",
    "/fsx/fuzzuser/../otheruser/x/",
    "/fsx/fuzzuser/./a//b/",
    "/etc/",
    "/fsx/fuzzuser",
    "relative/dir/",
    "%x",
    "%%",
    "%u%j%A%a%x",
    "",
]
_OPTIONS = [
    "include=*.bin",
    "exclude=*",
    "when=success",
    "when=failure",
    "when=sometimes",
    "optional",
    "optional=yes",
    "include=",
    "=x",
    "bogus=1",
]


_REMOTE = [p for p in _PIECES if p.startswith("s3://")]
_LOCAL = [p for p in _PIECES if not p.startswith("s3://")]


@st.composite
def _mostly(draw: st.DrawFn, pieces: list[str], junk_size: int) -> str:
    """A piece from ``pieces`` about seven times in eight, arbitrary text otherwise."""
    if draw(st.booleans()) and draw(st.booleans()) and draw(st.booleans()):
        return draw(st.text(max_size=junk_size))
    return draw(st.sampled_from(pieces))


@st.composite
def directive_texts(draw: st.DrawFn) -> str:
    kind = draw(_mostly(["in", "in", "out", "checkpoint", "IN", "copy"], 4))
    remote, local = draw(_mostly(_REMOTE, 12)), draw(_mostly(_LOCAL, 12))
    if draw(st.integers(0, 9)) == 0:
        remote, local = local, remote  # the sides swapped
    src, dst = (remote, local) if kind.lower() == "in" else (local, remote)
    options = draw(st.lists(_mostly(_OPTIONS, 8), max_size=2))
    sep = draw(st.sampled_from([","] * 8 + [", ", ";"]))
    return sep.join([kind, src, dst, *options])


FUZZ_CONFIG = parse_config(
    {
        "scratch_roots": ["/fsx/{user}/"],
        "s3": {"allow": [{"bucket": "allowed", "users": ["*"], "access": ["read", "write"]}]},
    }
)
FUZZ_JOB = JobIdentity(job_id=77, user="fuzzuser", uid=4242, gid=4242, job_name="fuzz")


def _local_side(entry: Any) -> str:
    return str(entry.destination if str(entry.source).startswith("s3://") else entry.source)


def _remote_side(entry: Any) -> str:
    return str(entry.source if str(entry.source).startswith("s3://") else entry.destination)


def test_fuzzed_directives_are_refused_clearly_or_confined(
    scale: float, result: ScenarioResult
) -> None:
    """Directives generated by hypothesis from hostile pieces (other users' roots, ``..``,
    buckets outside the policy, bad patterns, junk options, random text) are either
    refused with an error naming the option, a position and what was expected, or planned
    with every local path inside the user's scratch root and every bucket allowed."""
    counts = {"refused_parse": 0, "refused_plan": 0, "planned": 0}
    examples = scaled(scale, 3000, 150)

    @settings(
        max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None
    )
    @given(directive_texts())
    def prop(text: str) -> None:
        try:
            directive = parse_directive(text)
        except DirectiveError as exc:
            assert "--fsx-stage=" in str(exc) and f"position {exc.position}" in str(exc), str(exc)
            assert 1 <= exc.position <= len(text) + 1
            counts["refused_parse"] += 1
            return
        try:
            plan = build_plan([directive], FUZZ_JOB, FUZZ_CONFIG)
        except PlanError as exc:
            assert "directive 1:" in str(exc), str(exc)
            counts["refused_plan"] += 1
            return
        for entry in plan.entries:
            local = os.path.normpath(_local_side(entry))
            assert local == "/fsx/fuzzuser" or local.startswith("/fsx/fuzzuser/"), (text, entry)
            assert _remote_side(entry).startswith("s3://allowed/"), (text, entry)
            assert "/../" not in _remote_side(entry) + "/", (text, entry)
        counts["planned"] += 1

    prop()
    result.runs = sum(counts.values())
    result.expected_failures = counts["refused_parse"] + counts["refused_plan"]
    result.notes.append(", ".join(f"{k} {v}" for k, v in counts.items()))
    assert counts["planned"] and counts["refused_plan"] and counts["refused_parse"], counts


# --- jobs on the real cluster: other users' roots, buckets outside the policy, SPANK -------


def _refused(
    bed: ChaosBed,
    checker: Checker,
    result: ScenarioResult,
    args: list[str],
    script_lines: str,
    expected: str,
) -> None:
    marker = bed.user_scratch / f"ran-{uuid.uuid4().hex[:8]}"
    # Through a client without the submit-time check: the Prolog is what enforces.
    job_id = bed.cluster.without_submit_check().submit(
        f"#!/bin/sh\n{script_lines}touch {marker}\n", bed.user, args
    )
    record = bed.cluster.wait(job_id, timeout=120)
    shown = bed.show_job(job_id)
    result.runs += 1
    assert record["JobState"] == "CANCELLED", shown
    assert expected in shown, shown
    assert not marker.exists()
    result.expected_failures += 1
    bed.wait_epilog(job_id)
    checker.node_in_service(bed.cluster.env)
    checker.no_secrets(bed.logs())


@pytest.mark.slurm
def test_jobs_reaching_outside_their_roots_are_refused(
    scale: float, result: ScenarioResult, checker: Checker, chaos_bed: ChaosBed
) -> None:
    """Jobs whose directives name another user's scratch root (directly, through ``..``
    or ``%u`` tricks), a bucket outside the policy, or smuggle a second directive through
    the SPANK encoding (``;``, ``%3B``, a newline and ``#SBATCH`` inside one value) are
    refused before the script runs, with the reason in the job record; the node stays in
    service and the other user's files are untouched."""
    bed = chaos_bed
    other = ensure_user(OTHER_USER)
    other_root = bed.site.user_dir(other)
    victim = other_root / "precious.txt"
    victim.write_bytes(b"the other user's data")
    other_entry = pwd.getpwnam(other)
    os.chown(victim, other_entry.pw_uid, other_entry.pw_gid)
    before = local_files(other_root)
    b, s = bed.bucket, bed.scratch
    cases = [
        (f"in,s3://{b}/x/,{s}/{other}/steal/", f"{s}/{other}/steal/"),
        (f"in,s3://{b}/x/,{s}/%u/../{other}/steal/", ".."),
        (f"out,{s}/{other}/,s3://{b}/stolen/", f"{s}/{other}/"),
        (f"in,s3://not-{b}/x/,{s}/%u/x/", f"not-{b}"),
        (f"out,{s}/%u/o/,s3://not-{b}/o/", f"not-{b}"),
    ]
    smuggled = [
        f"in,s3://{b}/x/,{s}/%u/a/;out,{s}/{other}/,s3://{b}/stolen/",
        f"in,s3://{b}/x/,{s}/%u/a/%3Bout,{s}/{other}/,s3://{b}/stolen/",
        f"in,s3://{b}/x/,{s}/%u/a/\n#SBATCH --fsx-stage=out,{s}/{other}/,s3://{b}/stolen/",
    ]
    rounds = scaled(scale, 2)
    for _ in range(rounds):
        for directive, expected in cases:
            _refused(bed, checker, result, [], f"#SBATCH --fsx-stage={directive}\n", expected)
        for value in smuggled:
            # On the command line, where a value can hold any byte but NUL.
            try:
                job_id = bed.submit("#!/bin/sh\ntrue\n", f"--fsx-stage={value}")
            except ClusterError as exc:  # the SPANK plugin refused it at submit time
                assert "fsx-stage" in str(exc), exc
                result.runs += 1
                result.expected_failures += 1
                continue
            record = bed.cluster.wait(job_id, timeout=120)
            result.runs += 1
            state = bed.wait_epilog(job_id)
            assert len(state.get("directives") or [value]) == 1, state.get("directives")
            if record["JobState"] != "COMPLETED":
                result.expected_failures += 1
            checker.node_in_service(bed.cluster.env)
    assert bed.objects("stolen/") == {}
    assert local_files(other_root) == before
    checker.confined(bed.uid, [bed.user_scratch], [bed.site.root])
    checker.no_secrets(bed.logs())
