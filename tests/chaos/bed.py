"""The Slurm-level test bed of the chaos suite: the suite's own cluster, SeaweedFS, a site.

The hooks' job state and pending records are read here as JSON files (never through the
hooks package), so the scenarios judge the product from the outside.
"""

from __future__ import annotations

import os
import pwd
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tests.chaos.invariants import Checker, read_json
from tests.hooks.sitecfg import Site, make_site
from tests.testbed.cluster import SlurmCluster
from tests.testbed.wait import wait_until

SETTLED = {"done", "skipped", "node_fault", "failed_job"}


@dataclass
class ChaosBed:
    cluster: SlurmCluster
    s3: Any
    client: Any
    bucket: str
    site: Site
    user: str
    endpoint: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def uid(self) -> int:
        return pwd.getpwnam(self.user).pw_uid

    @property
    def scratch(self) -> Path:
        return self.site.scratch

    @property
    def user_scratch(self) -> Path:
        return self.site.scratch / self.user

    def configure(self, endpoint: str | None = None, **kwargs: Any) -> None:
        """(Re)write the site config; ``endpoint`` defaults to SeaweedFS itself."""
        self.endpoint = endpoint or self.s3.endpoint_url
        settings = {"workers": 2, **kwargs}
        self.site.write_config(self.endpoint, [self.bucket], **settings)

    def fsx_stage(self) -> str:
        """An ``fsx-stage`` executable every user can run (the hooks' venv)."""
        return str(self.cluster.hooks_home() / "bin" / "fsx-stage")

    def submit(self, script: str, *extra: str) -> int:
        return self.cluster.submit(script, self.user, list(extra))

    def state(self, job_id: int) -> dict[str, Any] | None:
        return read_json(self.site.state_dir / "jobs" / f"{job_id}.json")

    def pending_record(self, job_id: int) -> Path:
        return self.site.state_dir / "pending" / f"{job_id}.json"

    def wait_state(
        self, job_id: int, hook: str, statuses: set[str], timeout: float = 120
    ) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            state = self.state(job_id)
            return state if state is not None and state[hook]["status"] in statuses else None

        return wait_until(
            reached,
            timeout,
            lambda: f"job {job_id}: {hook} never reached {statuses}: {self.state(job_id)}",
            interval=0.1,
        )

    def wait_epilog(self, job_id: int, restart: int = 0, timeout: float = 180) -> dict[str, Any]:
        def settled() -> dict[str, Any] | None:
            state = self.state(job_id)
            if (
                state is not None
                and state.get("restart_count", 0) == restart
                and state["epilog"]["status"] in SETTLED
            ):
                return state
            return None

        return wait_until(
            settled,
            timeout,
            lambda: (
                f"job {job_id}: epilog not settled: {self.state(job_id)}\n"
                f"{self.show_job(job_id)}\n" + "\n".join(self.log_lines(job_id)[-10:])
            ),
        )

    def log_lines(self, job_id: int) -> list[str]:
        """The hooks' log lines about ``job_id`` (for failure messages)."""
        try:
            lines = self.site.log_file.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []
        return [line for line in lines if f'"job_id": {job_id},' in line]

    def show_job(self, job_id: int) -> str:
        return self.cluster.scontrol("show", "job", str(job_id))

    def logs(self) -> list[Path]:
        """Every log a secret could leak into: the hooks' log, the daemons', job output."""
        return [
            self.site.log_file,
            self.cluster.layout.log_dir,
            self.cluster.user_workdir(self.user),
            self.cluster.layout.hook_record_log,
        ]

    def objects(self, prefix: str) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        ):
            for item in page.get("Contents", []):
                found[item["Key"]] = self.client.get_object(Bucket=self.bucket, Key=item["Key"])[
                    "Body"
                ].read()
        return found

    def after_job(self, checker: Checker, job_id: int) -> None:
        """Invariants 3-5 after a job: confinement, no secret in any log, node in service."""
        checker.confined(self.uid, [self.user_scratch], [self.site.root, Path("/tmp")])
        checker.no_secrets(self.logs())
        checker.node_in_service(self.cluster.env)


def hook_walls(state: dict[str, Any]) -> list[float]:
    """The prolog's and the epilog's wall time (seconds) from a job state record."""
    walls = []
    for hook in ("prolog", "epilog"):
        run = state.get(hook) or {}
        if run.get("started_at") and run.get("finished_at"):
            walls.append(float(run["finished_at"]) - float(run["started_at"]))
    return walls


def write_as_user(path: Path, data: bytes, uid: int, gid: int) -> None:
    """Create ``path`` (and parents below the user's directory) owned by the user."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chown(path.parent, uid, gid)
    path.write_bytes(data)
    os.chown(path, uid, gid)


@pytest.fixture(scope="module")
def chaos_bed(
    chaos_cluster: SlurmCluster, s3_server: Any, s3_client: Any, job_user: str
) -> Iterator[ChaosBed]:
    config_path = chaos_cluster.layout.fsx_stage_config
    previous = config_path.read_bytes() if config_path.exists() else None
    site = make_site(s3_server.access_key, s3_server.secret_key, config=config_path)
    bucket = f"chaos-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=bucket)
    bed = ChaosBed(chaos_cluster, s3_server, s3_client, bucket, site, job_user)
    site.user_dir(job_user)
    bed.configure()
    yield bed
    if previous is None:
        config_path.unlink(missing_ok=True)
    else:
        config_path.write_bytes(previous)
    site.cleanup()
