"""The agent's socket server and its work queue (kept on disk: a restarted agent
resumes the flushes it had queued)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from fsx_stage.agent import periodic
from fsx_stage.agent.flusher import Refused, flush_job, running_state
from fsx_stage.agent.peer import Peer, belongs_to_job, job_alive, peer_of
from fsx_stage.agent.protocol import MAX_LINE, Reply, Request
from fsx_stage.hooks.atomic import LockBusy, ensure_dir, remove_durably, write_atomic
from fsx_stage.hooks.runtime import Runtime, start

READ_TIMEOUT_S = 10.0
PERIODIC_TICK_S = 1.0


class QueuedFlush(BaseModel):
    """``<state_dir>/agent/queue/<job>.json``: a flush the agent owes (survives its restart)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job_id: int
    requested_at: float
    indexes: list[int] | None = None  # the checkpoint directives to flush; None: all
    by: Literal["request", "every"] = "request"


class Agent:
    def __init__(self, env: Mapping[str, str], socket_path: str) -> None:
        self.rt: Runtime = start(env, None)
        self.socket_path = socket_path
        self.queue_dir = ensure_dir(self.rt.store.root / "agent" / "queue", 0o700)
        self._wake = threading.Condition()
        self._done: dict[int, tuple[float, Reply]] = {}  # job -> (started at, reply)
        self._stop = threading.Event()
        self.host = periodic.this_host()
        self._last_attempt: dict[int, dict[int, float]] = {}  # job -> entry -> time

    # -- queue (on disk) ---------------------------------------------------------------

    def _queued(self) -> list[QueuedFlush]:
        found = []
        for path in self.queue_dir.glob("*.json"):
            with contextlib.suppress(OSError, ValidationError):
                found.append(QueuedFlush.model_validate_json(path.read_bytes()))
        return sorted(found, key=lambda q: q.requested_at)

    def enqueue(self, job_id: int, indexes: list[int] | None = None, by: str = "request") -> float:
        """Queue a flush of ``job_id``'s checkpoints (``indexes`` only, when given); merged
        with a flush already queued for the job (then of the union, None: all)."""
        path = self.queue_dir / f"{job_id}.json"
        with self._wake:
            now = time.time()
            with contextlib.suppress(OSError, ValidationError):
                queued = QueuedFlush.model_validate_json(path.read_bytes())
                if queued.indexes is None or indexes is None:
                    indexes = None
                else:
                    indexes = sorted({*queued.indexes, *indexes})
                by = "request" if "request" in (by, queued.by) else by
            record = QueuedFlush(job_id=job_id, requested_at=now, indexes=indexes, by=by)
            write_atomic(path, record.model_dump_json().encode())
            self._wake.notify_all()
        return now

    def work(self) -> None:
        """Flush queued jobs, oldest request first, one at a time."""
        while not self._stop.is_set():
            with self._wake:
                queued = self._queued()
                if not queued:
                    self._wake.wait(1.0)
                    continue
                # Under the same lock as enqueue: a request written after this line has a
                # later time than `started`, so it stays queued for the next flush.
                started = time.time()
                job = queued[0]
            reply = self._flush(job)
            path = self.queue_dir / f"{job.job_id}.json"
            with self._wake:
                with contextlib.suppress(OSError, ValidationError):
                    if QueuedFlush.model_validate_json(path.read_bytes()).requested_at <= started:
                        remove_durably(path)
                if job.indexes is None:  # what a `checkpoint --wait` waits for: all of them
                    self._done[job.job_id] = (started, reply)
                self._wake.notify_all()

    # -- periodic flushes (every=) --------------------------------------------------------

    def schedule(self) -> None:
        """Queue the ``every=`` flushes that are due, every PERIODIC_TICK_S seconds."""
        while not self._stop.is_set():
            try:
                self._schedule_once()
            except Exception as exc:  # one bad record must not stop the periodic flushes
                self.rt.log.warning("agent.schedule_failed", error=str(exc))
            self._stop.wait(PERIODIC_TICK_S)

    def _schedule_once(self) -> None:
        store = self.rt.store
        for record in periodic.registrations(store, self.host):
            job_id = record.job_id
            state = store.load(job_id)
            if periodic.is_over(record, state):
                self._drop(record, "the job's flush at its end began")
                continue
            assert state is not None
            if state.restart_count < record.restart_count:
                continue
            attempts = self._last_attempt.setdefault(job_id, {})
            due = periodic.due_entries(state, attempts)
            if not due:
                continue
            if not job_alive(job_id):
                self._drop(record, "no process of the job on this node", gone=True)
                continue
            now = time.time()
            for index in due:
                attempts[index] = now
            self.enqueue(job_id, due, by="every")

    def _drop(self, record: periodic.Registration, why: str, *, gone: bool = False) -> None:
        """Forget a registration under the job's lock (a requeued job's Prolog may be
        registering its next run right now), if it is still the same one and its run
        ended (``gone``: the job has no process here any more)."""
        store = self.rt.store
        try:
            with store.lock(record.job_id, wait=False):
                current = periodic.registration(store, record.job_id)
                ended = gone or periodic.is_over(record, store.load(record.job_id))
                if current == record and ended:
                    periodic.unregister(store, record.job_id)
                    self._last_attempt.pop(record.job_id, None)
                    self.rt.log.info("agent.unregistered", job=record.job_id, reason=why)
        except LockBusy:
            return  # its hooks run: look again at the next tick

    def _flush(self, job: QueuedFlush) -> Reply:
        deadline = time.monotonic() + self.rt.config.timeouts.flush
        by = "agent every=" if job.by == "every" else "agent request"
        try:
            flush_job(self.rt, job.job_id, deadline, job.indexes, by)
        except Refused as exc:
            return Reply(state="refused", error=str(exc))
        except Exception as exc:  # the reason goes to the caller and the log
            self.rt.log.warning("agent.flush_failed", job=job.job_id, error=str(exc))
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
        threading.Thread(target=self.schedule, daemon=True, name="every").start()
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
