"""The agent's socket server and its work queue (kept on disk: a restarted agent
resumes the flushes it had queued)."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from pydantic import ValidationError

from fsx_stage.agent.flusher import Refused, flush_job, running_state
from fsx_stage.agent.peer import Peer, belongs_to_job, peer_of
from fsx_stage.agent.protocol import MAX_LINE, Reply, Request
from fsx_stage.hooks.atomic import ensure_dir, remove_durably, write_atomic
from fsx_stage.hooks.runtime import Runtime, start

READ_TIMEOUT_S = 10.0


class Agent:
    def __init__(self, env: Mapping[str, str], socket_path: str) -> None:
        self.rt: Runtime = start(env, None)
        self.socket_path = socket_path
        self.queue_dir = ensure_dir(self.rt.store.root / "agent" / "queue", 0o700)
        self._wake = threading.Condition()
        self._done: dict[int, tuple[float, Reply]] = {}  # job -> (finished at, reply)
        self._stop = threading.Event()

    # -- queue (on disk) ---------------------------------------------------------------

    def _queued(self) -> list[tuple[float, int]]:
        found = []
        for path in self.queue_dir.glob("*.json"):
            with contextlib.suppress(OSError, ValueError, KeyError):
                data = json.loads(path.read_bytes())
                found.append((float(data["requested_at"]), int(data["job_id"])))
        return sorted(found)

    def enqueue(self, job_id: int) -> float:
        now = time.time()
        record = json.dumps({"job_id": job_id, "requested_at": now}).encode()
        write_atomic(self.queue_dir / f"{job_id}.json", record)
        with self._wake:
            self._wake.notify_all()
        return now

    def work(self) -> None:
        """Flush queued jobs, oldest request first, one at a time."""
        while not self._stop.is_set():
            queued = self._queued()
            if not queued:
                with self._wake:
                    self._wake.wait(1.0)
                continue
            _requested_at, job_id = queued[0]
            started = time.time()
            reply = self._flush(job_id)
            path = self.queue_dir / f"{job_id}.json"
            with contextlib.suppress(OSError, ValueError, KeyError):
                # A request that came in during this flush stays queued for the next one.
                if float(json.loads(path.read_bytes())["requested_at"]) <= started:
                    remove_durably(path)
            with self._wake:
                self._done[job_id] = (started, reply)
                self._wake.notify_all()

    def _flush(self, job_id: int) -> Reply:
        deadline = time.monotonic() + self.rt.config.timeouts.flush
        try:
            flush_job(self.rt, job_id, deadline)
        except Refused as exc:
            return Reply(state="refused", error=str(exc))
        except Exception as exc:  # the reason goes to the caller and the log
            self.rt.log.warning("agent.flush_failed", job=job_id, error=str(exc))
            return Reply(state="failed", error=str(exc))
        return Reply(state="published")

    def wait_for(self, job_id: int, requested_at: float, timeout_s: float) -> Reply:
        end = time.monotonic() + timeout_s
        with self._wake:
            while True:
                done = self._done.get(job_id)
                if done is not None and done[0] >= requested_at:
                    return done[1]
                left = end - time.monotonic()
                if left <= 0:
                    return Reply(state="timeout", error=f"not published within {timeout_s:g} s")
                self._wake.wait(min(left, 1.0))

    # -- requests ------------------------------------------------------------------------

    def authorise(self, peer: Peer, request: Request) -> None:
        state = running_state(self.rt, request.job_id)
        if peer.uid != state.uid:
            raise Refused(f"job {request.job_id} belongs to another user")
        if not belongs_to_job(peer.pid, request.job_id):
            raise Refused(f"the caller is not a process of job {request.job_id} on this node")

    def handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(READ_TIMEOUT_S)
            try:
                reply = self._answer(conn)
            except (OSError, TimeoutError):
                return
            with contextlib.suppress(OSError):
                conn.sendall(reply.model_dump_json().encode() + b"\n")

    def _answer(self, conn: socket.socket) -> Reply:
        peer = peer_of(conn)
        line = _read_line(conn)
        if line is None:
            return Reply(state="refused", error=f"request longer than {MAX_LINE} bytes")
        try:
            request = Request.model_validate_json(line)
        except ValidationError as exc:
            return Reply(state="refused", error=f"bad request: {exc.errors()[0]['msg']}")
        try:
            self.authorise(peer, request)
        except Refused as exc:
            self.rt.log.warning("agent.refused", job=request.job_id, pid=peer.pid, uid=peer.uid)
            return Reply(state="refused", error=str(exc))
        requested_at = self.enqueue(request.job_id)
        if not request.wait:
            return Reply(state="queued")
        conn.settimeout(None)
        return self.wait_for(request.job_id, requested_at, request.timeout_s)

    def serve(self) -> None:
        path = Path(self.socket_path)
        ensure_dir(path.parent, 0o755)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # a previous agent's socket
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(path))
        path.chmod(0o666)
        server.listen(64)
        threading.Thread(target=self.work, daemon=True, name="flusher").start()
        self.rt.log.info("agent.start", socket=str(path), queued=len(self._queued()))
        while not self._stop.is_set():
            conn, _addr = server.accept()
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()


def _read_line(conn: socket.socket) -> bytes | None:
    data = b""
    while b"\n" not in data:
        chunk = conn.recv(MAX_LINE + 1 - len(data))
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_LINE:
            return None
    return data.partition(b"\n")[0]
