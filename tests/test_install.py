"""Installing on a real cluster: `make spank`, `make install`, `make wheelhouse`.

Each test runs make in a fresh copy of the repository (no `.venv`, no built plugin), with
PATH shims for every package manager that record the call and fail: `make spank` and
`make install` must build against the headers already on the node and never install a
system package. The pip installs use this machine's package index (the pip cache), except
the offline one, which gets no index at all.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE_MANAGERS = (
    "apt-get",
    "apt",
    "aptitude",
    "dpkg",
    "dpkg-query",
    "yum",
    "dnf",
    "rpm",
    "zypper",
)
SPANK_HEADER = Path("/usr/include/slurm/spank.h")

needs_headers = pytest.mark.skipif(not SPANK_HEADER.is_file(), reason="no Slurm headers here")


def fresh_copy(dest: Path) -> Path:
    """The repository's files (tracked and new, as in the working tree) without build output."""
    names = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, names):
        source = REPO / os.fsdecode(name)
        if source.is_file():
            target = dest / os.fsdecode(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return dest


def shim_dir(directory: Path, log: Path) -> Path:
    """Package-manager stand-ins that append their argv to ``log`` and fail."""
    directory.mkdir(parents=True)
    for name in PACKAGE_MANAGERS:
        shim = directory / name
        shim.write_text(f'#!/bin/sh\necho "{name} $*" >>{log}\nexit 1\n')
        shim.chmod(0o755)
    return directory


class Make:
    """`make` in a fresh copy, with the package-manager shims first on PATH."""

    def __init__(self, root: Path) -> None:
        self.repo = fresh_copy(root / "repo")
        self.calls = root / "package-manager-calls.log"
        self.shims = shim_dir(root / "shims", self.calls)

    def __call__(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        base = dict(os.environ if env is None else env)
        base["PATH"] = f"{self.shims}:{base.get('PATH', '/usr/bin:/bin')}"
        base.pop("MAKEFLAGS", None)
        return subprocess.run(
            ["make", "--no-print-directory", *args],
            cwd=self.repo,
            env=base,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )

    def package_manager_calls(self) -> list[str]:
        return self.calls.read_text().splitlines() if self.calls.exists() else []


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Make, Path]]:
    """One `make install PREFIX=...` from a fresh copy, shared by the tests that inspect it."""
    if not SPANK_HEADER.is_file():
        pytest.skip("no Slurm headers here")
    make = Make(tmp_path_factory.mktemp("install"))
    prefix = make.repo.parent / "prefix"
    proc = make("install", f"PREFIX={prefix}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    yield make, prefix


@needs_headers
def test_install_never_runs_a_package_manager(installed: tuple[Make, Path]) -> None:
    make, prefix = installed
    assert make.package_manager_calls() == []
    assert (prefix / "lib" / "fsx-stage" / "fsx_stage.so").is_file()


@needs_headers
def test_installed_command_and_hooks_run_from_the_prefix(
    installed: tuple[Make, Path], tmp_path: Path
) -> None:
    _, prefix = installed
    version = subprocess.run(
        [str(prefix / "bin" / "fsx-stage"), "--version"], capture_output=True, text=True, check=True
    )
    assert version.stdout.startswith("fsx-stage ")
    prolog = prefix / "libexec" / "fsx-stage" / "prolog"
    assert prolog.stat().st_mode & 0o755 == 0o755
    # A job without --fsx-stage: the hook exits before any Python starts.
    assert subprocess.run([str(prolog)], env={}, check=False).returncode == 0
    # A staged job outside Slurm (no job in the environment): the installed fsx-stage runs
    # with the site config, logs a node fault to the configured log file and exits 1.
    log = tmp_path / "fsx-stage.log"
    config = tmp_path / "config.toml"
    config.write_text(
        f'scratch_roots = ["/fsx/{{user}}/"]\nstate_dir = "{tmp_path / "state"}"\n'
        f'[log]\ndestination = "{log}"\n'
    )
    env = {
        "SPANK_FSX_STAGE": "in,s3://b/k,/fsx/u/k",
        "FSX_STAGE_CONFIG": str(config),
        "AWS_EC2_METADATA_DISABLED": "true",  # never the real metadata service
    }
    assert subprocess.run([str(prolog)], env=env, check=False).returncode == 1
    events = [json.loads(line)["event"] for line in log.read_text().splitlines()]
    assert events[-1] == "prolog.node_fault"


@needs_headers
def test_spank_names_the_missing_header_and_the_variable(tmp_path: Path) -> None:
    make = Make(tmp_path)
    proc = make("spank", f"SLURM_INCLUDE={tmp_path / 'no-slurm-here'}")
    assert proc.returncode != 0
    assert "slurm/spank.h not found" in proc.stderr
    assert "SLURM_INCLUDE=" in proc.stderr
    assert "/opt/slurm/include" in proc.stderr  # where AWS ParallelCluster has it
    assert not (make.repo / "spank" / "fsx_stage.so").exists()
    assert make.package_manager_calls() == []


@needs_headers
def test_spank_builds_against_the_given_headers(tmp_path: Path) -> None:
    include = tmp_path / "slurm-include"
    shutil.copytree(SPANK_HEADER.parent, include / "slurm")
    make = Make(tmp_path)
    proc = make("spank", f"SLURM_INCLUDE={include}")
    assert proc.returncode == 0, proc.stderr
    assert f"-I'{include}'" in proc.stdout
    plugin = make.repo / "spank" / "fsx_stage.so"
    assert plugin.is_file()
    assert f"-I'{include}'" not in make("spank", f"SLURM_INCLUDE={include}").stdout  # built
    # A Slurm upgrade brings newer headers: the next build (make install) rebuilds the plugin.
    later = plugin.stat().st_mtime + 10
    os.utime(include / "slurm" / "slurm_version.h", (later, later))
    proc = make("spank", f"SLURM_INCLUDE={include}")
    assert f"-I'{include}'" in proc.stdout
    assert make.package_manager_calls() == []


@needs_headers
def test_install_refuses_a_python_older_than_3_11(tmp_path: Path) -> None:
    old_python = tmp_path / "python3.9"
    # Answers like a Python 3.9 would to the version check make runs.
    old_python.write_text('#!/bin/sh\n[ "$1" = -V ] && echo "Python 3.9.16"\nexit 1\n')
    old_python.chmod(0o755)
    make = Make(tmp_path)
    prefix = tmp_path / "prefix"
    proc = make("install", f"PYTHON={old_python}", f"PREFIX={prefix}", "SLURM_INCLUDE=/usr/include")
    assert proc.returncode != 0
    assert "fsx-stage needs Python >= 3.11" in proc.stderr
    assert "Python 3.9.16" in proc.stderr
    assert "python3.11" in proc.stderr
    assert not prefix.exists()


@needs_headers
def test_offline_install_from_a_wheelhouse(tmp_path: Path) -> None:
    make = Make(tmp_path)
    wheelhouse = tmp_path / "wheelhouse"
    proc = make("wheelhouse", f"WHEELHOUSE={wheelhouse}")
    assert proc.returncode == 0, proc.stderr
    assert any(w.name.startswith("fsx_stage-") for w in wheelhouse.glob("*.whl"))
    # No index, no find-links but the wheelhouse, and every proxy a dead loopback port:
    # anything pip would fetch from elsewhere fails the install.
    offline = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    dead = "http://127.0.0.1:9"
    offline.update(
        PIP_CONFIG_FILE=os.devnull,
        PIP_INDEX_URL=f"{dead}/simple",
        HTTP_PROXY=dead,
        HTTPS_PROXY=dead,
        http_proxy=dead,
        https_proxy=dead,
        PIP_NO_CACHE_DIR="1",
    )
    prefix = tmp_path / "prefix"
    proc = make("install", f"PREFIX={prefix}", f"WHEELHOUSE={wheelhouse}", env=offline)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    version = subprocess.run(
        [str(prefix / "bin" / "fsx-stage"), "--version"], capture_output=True, text=True, check=True
    )
    assert version.stdout.startswith("fsx-stage ")
    assert make.package_manager_calls() == []
