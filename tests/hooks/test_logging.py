"""One JSON line per event, with the job id, and never a secret."""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path

import pytest

from fsx_stage.hooks import logging as hooks_logging
from fsx_stage.hooks.logging import LOGGER_NAME, EventLog, setup_logging
from fsx_stage.redaction import register_secret


@pytest.fixture
def log_file(tmp_path: Path) -> Path:
    path = tmp_path / "hooks.log"
    setup_logging(str(path), "info")
    yield path
    logging.getLogger(LOGGER_NAME).handlers.clear()


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_one_json_line_per_event_with_the_job_id(log_file: Path) -> None:
    log = EventLog(123)
    log.info("stage_in.entry", index=1, bytes=10, source="s3://b/k")
    log.warning("flush.pending", entries=2)
    lines = _lines(log_file)
    assert [line["event"] for line in lines] == ["stage_in.entry", "flush.pending"]
    assert all(line["job_id"] == 123 for line in lines)
    assert lines[0]["bytes"] == 10 and lines[0]["level"] == "info"
    assert lines[1]["level"] == "warning"


def test_registered_secrets_never_reach_the_log(log_file: Path) -> None:
    register_secret("wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY")
    EventLog(1).error("boom", error="signing with wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY failed")
    text = log_file.read_text()
    assert "wJalrXUtnFEMI" not in text
    assert "***" in text


def test_exception_tracebacks_are_redacted(log_file: Path) -> None:
    register_secret("tok3n-value-that-is-secret")
    try:
        raise RuntimeError("session token tok3n-value-that-is-secret rejected")
    except RuntimeError:
        EventLog(5).exception("prolog.internal_error")
    text = log_file.read_text()
    assert "tok3n-value-that-is-secret" not in text
    assert "RuntimeError" in _lines(log_file)[0]["traceback"]


def test_a_log_file_that_cannot_be_reopened_never_fails_the_caller(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Its directory removed (or the disk full): the event is lost with one line on stderr
    (its name, never its fields); the transfer that logged goes on."""
    path = tmp_path / "log" / "hooks.log"
    setup_logging(str(path), "info")
    EventLog(1).info("before")
    (tmp_path / "log" / "hooks.log").unlink()
    (tmp_path / "log").rmdir()
    register_secret("reopen-secret-3f9a1c")
    # raised FileNotFoundError with WatchedFileHandler:
    EventLog(1).error("after", error="signing with reopen-secret-3f9a1c failed")
    err = capsys.readouterr().err
    assert err == (
        f"fsx-stage: cannot reopen the log {path} (No such file or directory): event after lost\n"
    )
    (tmp_path / "log").mkdir()
    EventLog(1).info("back")
    assert [line["event"] for line in _lines(path)] == ["back"]


def test_stderr_destination(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("stderr", "warning")
    try:
        EventLog(9).info("quiet")  # below the level
        EventLog(9).error("loud", x=1)
    finally:
        logging.getLogger(LOGGER_NAME).handlers.clear()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and json.loads(err[0])["event"] == "loud"


@pytest.mark.parametrize("socket_state", ["missing", "stale"])
def test_syslog_without_a_daemon_falls_back_to_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, socket_state: str
) -> None:
    sock_path = tmp_path / "log.sock"
    if socket_state == "stale":
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(str(sock_path))  # the file stays, nobody listens
    monkeypatch.setattr(hooks_logging, "SYSLOG_SOCKET", str(sock_path))
    fallback = tmp_path / "state" / "fsx-stage.log"
    setup_logging("syslog", "info", fallback_file=fallback)
    try:
        EventLog(3).info("prolog.start")
    finally:
        logging.getLogger(LOGGER_NAME).handlers.clear()
    assert json.loads(fallback.read_text())["event"] == "prolog.start"


def test_syslog_gets_one_line_per_event(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sock_path = tmp_path / "log.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as daemon:
        daemon.bind(str(sock_path))
        daemon.settimeout(10)
        monkeypatch.setattr(hooks_logging, "SYSLOG_SOCKET", str(sock_path))
        setup_logging("syslog", "info", fallback_file=tmp_path / "unused.log")
        try:
            EventLog(77).info("epilog.done", pending=0)
        finally:
            logging.getLogger(LOGGER_NAME).handlers.clear()
        datagram = daemon.recv(65536).decode()
    assert datagram.startswith("<30>fsx-stage: ")  # facility daemon, level info
    line = json.loads(datagram.removeprefix("<30>fsx-stage: ").rstrip("\x00"))
    assert (line["event"], line["job_id"], line["pending"]) == ("epilog.done", 77, 0)
    assert not (tmp_path / "unused.log").exists()
