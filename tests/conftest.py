"""Shared fixtures: the real test bed (tests/testbed/) for the test suite."""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from tests.testbed.cluster import SlurmCluster, ensure_user, shared_cluster
from tests.testbed.faultproxy import FaultProxy
from tests.testbed.motoserver import MotoServer
from tests.testbed.seaweed import SeaweedServer

from fsx_stage.hooks.logging import LOGGER_NAME


@pytest.fixture(autouse=True)
def _fresh_fsx_stage_logger() -> Iterator[None]:
    """Each test starts with the ``fsx_stage`` logger as a new process has it: a hook a
    test ran in-process configured it to log into that test's (since removed) site."""
    yield
    logger = logging.getLogger(LOGGER_NAME)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.setLevel(logging.NOTSET)
    logger.propagate = True


# --- S3: SeaweedFS (real), moto (hostile keys only), the fault proxy -------------------

S3_FIXTURES = {"s3_server", "s3_client", "bucket", "s3_env", "fault_proxy"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that use the real S3 server carry the ``s3`` marker (``-m "not s3"`` skips them)."""
    for item in items:
        if S3_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.s3)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    """One SeaweedFS (``weed mini``) per test session, on free loopback ports."""
    with SeaweedServer(tmp_path_factory.mktemp("seaweedfs"), die_with_parent=True) as server:
        yield server


@pytest.fixture(scope="session")
def s3_client(s3_server: SeaweedServer) -> Any:
    """A boto3 S3 client for ``s3_server`` (path-style)."""
    return s3_server.client()


@pytest.fixture
def bucket(s3_client: Any) -> Iterator[str]:
    """A fresh, uniquely named, empty bucket; deleted with its contents afterwards."""
    name = f"test-{uuid.uuid4().hex[:16]}"
    s3_client.create_bucket(Bucket=name)
    yield name
    # SeaweedFS deletes non-empty buckets (-s3.allowDeleteBucketNotEmpty defaults to true).
    with contextlib.suppress(s3_client.exceptions.NoSuchBucket):  # the test may delete it
        s3_client.delete_bucket(Bucket=name)


@pytest.fixture
def s3_env(s3_server: SeaweedServer) -> dict[str, str]:
    """AWS_* variables pointing a subprocess at ``s3_server``: ``{**os.environ, **s3_env}``."""
    return s3_server.env()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """moto's S3 on a free port, for keys SeaweedFS refuses (e.g. ``a/../b``)."""
    with MotoServer() as server:
        yield server


@pytest.fixture
def fault_proxy(s3_server: SeaweedServer) -> Iterator[FaultProxy]:
    """A fault-injecting proxy in front of ``s3_server``; transparent until ``set_faults``."""
    with FaultProxy.for_endpoint(s3_server.endpoint_url) as proxy:
        yield proxy


# --- Slurm: the real single-node cluster (tests/testbed/cluster.py) -----------------------

JOB_USER = "fsxuser"


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """The single-node cluster in ``$TESTBED/slurm``: a live one is reused and left running.

    ``.env`` (SLURM_CONF), ``.submit(script, user, extra_args) -> job id``,
    ``.wait(job_id, timeout) -> scontrol record``, ``.hook_records(job_id)``.
    """
    if os.geteuid() != 0:
        pytest.skip("the Slurm test cluster runs its daemons as root")
    with shared_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def bb_cluster() -> Iterator[SlurmCluster]:
    """The burst_buffer/lua cluster in ``$TESTBED/slurm-bb`` (SlurmUser=slurm, the lua
    from slurm-conf-examples/, one sudo rule): reused and left running like ``slurm_cluster``."""
    if os.geteuid() != 0:
        pytest.skip("the Slurm test cluster runs its daemons as root")
    if not os.path.exists("/usr/bin/sudo"):
        pytest.skip("the burst_buffer mode needs sudo (make system-deps)")
    with shared_cluster(mode="burst_buffer") as cluster:
        yield cluster


@pytest.fixture(scope="session")
def job_user() -> str:
    """A non-root user with a home directory (created if missing) to submit jobs as."""
    if os.geteuid() != 0:
        pytest.skip("creating the job user needs root")
    return ensure_user(JOB_USER)
