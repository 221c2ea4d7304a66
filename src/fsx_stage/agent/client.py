"""``fsx-stage checkpoint``: ask this node's agent to flush the job's checkpoints now."""

from __future__ import annotations

import socket

from pydantic import ValidationError

from fsx_stage.agent.protocol import MAX_LINE, Reply, Request, socket_path

CONNECT_TIMEOUT_S = 10.0


def request_checkpoint(job_id: int, wait: bool, timeout_s: float, path: str | None = None) -> Reply:
    request = Request(op="checkpoint", job_id=job_id, wait=wait, timeout_s=timeout_s)
    where = path or socket_path()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(CONNECT_TIMEOUT_S)
            conn.connect(where)
            conn.settimeout(timeout_s + CONNECT_TIMEOUT_S)
            conn.sendall(request.model_dump_json().encode() + b"\n")
            data = b""
            while b"\n" not in data and len(data) <= MAX_LINE:
                chunk = conn.recv(MAX_LINE)
                if not chunk:
                    break
                data += chunk
    except TimeoutError:
        return Reply(state="timeout", error=f"no answer from the agent at {where}")
    except OSError as exc:
        return Reply(state="failed", error=f"cannot reach the agent at {where}: {exc.strerror}")
    try:
        return Reply.model_validate_json(data.partition(b"\n")[0])
    except ValidationError:
        return Reply(state="failed", error="the agent's reply is unreadable")
