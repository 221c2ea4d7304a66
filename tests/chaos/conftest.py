"""Chaos suite fixtures: scale parametrisation, the results collector, a private cluster.

Every test that takes ``scale`` runs twice: ``[short]`` at ``CHAOS_SHORT_SCALE`` (0.05,
marker ``chaos_short``, part of ``make test``) and ``[full]`` at ``CHAOS_SCALE`` (1.0,
marker ``chaos``, ``make chaos``). Tests decorated with :func:`full_only` have no short run.

At the end of the session the figures go to ``$CHAOS_REPORT`` (``make chaos`` sets it to
``docs/reliability.md``), else to ``$TESTBED/chaos/reliability.md``.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from tests.chaos.invariants import Checker
from tests.chaos.results import ScenarioResult, write_report
from tests.testbed.cluster import REPO_ROOT, SlurmCluster, shared_cluster

SHORT_SCALE = float(os.environ.get("CHAOS_SHORT_SCALE", "0.05"))
FULL_SCALE = float(os.environ.get("CHAOS_SCALE", "1.0"))
RESULTS: list[ScenarioResult] = []
STARTED = time.time()

F = TypeVar("F", bound=Callable[..., Any])


def full_only(fn: F) -> F:
    """This scenario is too slow for the short run: only ``make chaos`` runs it."""
    fn._chaos_full_only = True  # type: ignore[attr-defined]
    return fn


def scaled(scale: float, full: int, minimum: int = 1) -> int:
    """``full`` scaled down, never below ``minimum``."""
    return max(minimum, round(full * scale))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "scale" not in metafunc.fixturenames:
        return
    params = [pytest.param(FULL_SCALE, marks=pytest.mark.chaos, id="full")]
    if not getattr(metafunc.function, "_chaos_full_only", False):
        params.insert(0, pytest.param(SHORT_SCALE, marks=pytest.mark.chaos_short, id="short"))
    metafunc.parametrize("scale", params)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    result: ScenarioResult | None = getattr(item, "_chaos_result", None)
    if result is not None:
        if report.failed:
            result.outcome = "BROKEN" if report.when == "call" else "error"
        elif report.skipped and result.outcome == "not run":
            result.outcome = "skipped"
        elif report.when == "call" and report.passed:
            result.outcome = "held"
    return report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    ran = [r for r in RESULTS if r.outcome != "not run"]
    if not ran:
        return
    target = os.environ.get("CHAOS_REPORT")
    testbed = Path(os.environ.get("TESTBED") or REPO_ROOT / ".testbed")
    path = Path(target) if target else testbed / "chaos" / "reliability.md"
    command = os.environ.get("CHAOS_COMMAND") or "pytest " + " ".join(sys.argv[1:])
    write_report(ran, path, command, STARTED)


@pytest.fixture
def result(request: pytest.FixtureRequest, scale: float) -> ScenarioResult:
    """This scenario's figures; filled by the test, judged by pytest's report."""
    fn = request.function
    doc = (fn.__doc__ or "").strip().split("\n\n")[0]
    module = request.module
    record = ScenarioResult(
        scenario=fn.__name__.removeprefix("test_"),
        group=getattr(module, "GROUP", module.__name__.rsplit(".", 1)[-1]),
        scale=scale,
        what=" ".join(doc.split()),
    )
    RESULTS.append(record)
    request.node._chaos_result = record
    started = time.monotonic()

    def finish() -> None:
        record.wall_s = time.monotonic() - started
        record.checks = sum(c.passed for c in record.checkers)

    request.addfinalizer(finish)
    return record


@pytest.fixture
def checker(result: ScenarioResult, s3_server: Any, s3_client: Any) -> Checker:
    """The independent invariant checker; the secrets it hunts for in logs."""
    return result.track(Checker(s3_client, secrets=(s3_server.secret_key,)))


@pytest.fixture(scope="session")
def chaos_cluster() -> Iterator[SlurmCluster]:
    """A single-node cluster of the suite's own, in ``$TESTBED/chaos-slurm`` (restarting
    its slurmd must not disturb other test sessions using ``$TESTBED/slurm``)."""
    if os.geteuid() != 0:
        pytest.skip("the Slurm test cluster runs its daemons as root")
    testbed = Path(os.environ.get("TESTBED") or REPO_ROOT / ".testbed")
    with shared_cluster(testbed / "chaos-slurm") as cluster:
        yield cluster
