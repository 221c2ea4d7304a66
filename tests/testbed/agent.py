"""The node's checkpoint agent (``fsx-stage agent``) for the test cluster: started as
root with the cluster's site config, stopped (or killed) by its pid."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Self

from tests.testbed.server import Server, stop_pid, term_when_parent_dies

START_TIMEOUT_S = 30.0


class AgentServer(Server):
    def __init__(self, fsx_stage: Path, config: Path, socket_path: Path, log: Path) -> None:
        self.fsx_stage, self.config, self.socket_path, self.log = (
            fsx_stage,
            config,
            socket_path,
            log,
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        return {"FSX_STAGE_AGENT_SOCKET": str(self.socket_path)}

    def start(self) -> Self:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "FSX_STAGE_CONFIG": str(self.config),
            **self.env(),
        }
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [str(self.fsx_stage), "agent"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=term_when_parent_dies,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"fsx-stage agent did not start: {self.log.read_text()}")
            time.sleep(0.1)
        return self

    def _answers(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                conn.connect(str(self.socket_path))
        except OSError:
            return False
        return True

    def kill(self) -> None:
        """SIGKILL: nothing is cleaned up (what a crash leaves)."""
        if self.proc is not None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            stop_pid(self.proc.pid, 5.0, self.proc)
            self.proc = None
