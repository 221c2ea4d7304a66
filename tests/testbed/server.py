"""What the test bed's servers share: one lifecycle, the S3 endpoint surface, process helpers.

`Server` is the lifecycle of `SeaweedServer`, `MotoServer` and `FaultProxy`: ``start()``
returns the server ready, ``stop()`` ends it, ``with`` does both. `S3Endpoint` adds what
points a client at an S3 server: ``endpoint_url``, ``env()``, ``client()``. The process
helpers serve servers that run as processes (``weed mini``, the cluster's daemons): their
pid files, a stop by pid with a grace period, and a child that dies with its parent.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self

PR_SET_PDEATHSIG = 1
KILL_WAIT_S = 10.0


class Server:
    """A test server: ``start()`` returns it ready, ``stop()`` ends it."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class S3Endpoint(Server):
    """An S3 server on loopback, and what points an SDK, a CLI or boto3 at it."""

    access_key: ClassVar[str]
    secret_key: ClassVar[str]
    region: ClassVar[str]
    #: botocore ``Config`` options of `client` besides path-style addressing.
    client_config: ClassVar[dict[str, Any]] = {}

    @property
    def endpoint_url(self) -> str:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        """The AWS_* variables that point an SDK or CLI at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
        }

    def client(self) -> Any:
        """A boto3 S3 client for this server (path-style addressing)."""
        return s3_client(self.endpoint_url, self, **self.client_config)


def s3_client(endpoint_url: str, server: S3Endpoint, **config: Any) -> Any:
    """A boto3 S3 client at ``endpoint_url`` (the server, or a proxy in front of it) with
    ``server``'s credentials, path-style; ``config``: further botocore ``Config`` options."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        region_name=server.region,
        config=Config(s3={"addressing_style": "path"}, **config),
    )


def read_pid(path: Path) -> int | None:
    """The pid in ``path``, or None when the file is missing or garbage."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    """True when ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def stop_pid(pid: int, grace: float, proc: subprocess.Popen[bytes] | None = None) -> bool:
    """SIGTERM ``pid``, SIGKILL it after ``grace`` seconds; True once it is gone.

    ``proc``: our own child, which is reaped on the way (a child is otherwise a zombie).
    """

    def gone() -> bool:
        return proc.poll() is not None if proc is not None else not pid_alive(pid)

    for sig, wait_s in ((signal.SIGTERM, grace), (signal.SIGKILL, KILL_WAIT_S)):
        if gone():
            return True
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while not gone() and time.monotonic() < deadline:
            time.sleep(0.1)
    return gone()


def term_when_parent_dies() -> None:
    """``preexec_fn``: in the child before exec, ask Linux for SIGTERM when the parent
    thread exits (a test session killed mid-run leaves no orphan server)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
