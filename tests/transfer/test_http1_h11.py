"""Property test: the direct client's reply-head parser reads what ``h11`` (a reference
HTTP/1.1 implementation) reads: status, reason, headers, keep-alive."""

from __future__ import annotations

import h11
from hypothesis import given, settings
from hypothesis import strategies as st

from fsx_stage.transfer.s3.http1 import parse_head

_TOKEN = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~",
    min_size=1,
    max_size=20,
)
_VALUE = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=30
)
_PLAIN_NAMES = _TOKEN.filter(
    lambda n: n.lower() not in ("content-length", "transfer-encoding", "connection")
)


def _h11_reply(raw: bytes) -> tuple[int, str, dict[str, str], bool]:
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "s3")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(raw)
    event = conn.next_event()
    assert isinstance(event, h11.Response)
    headers: dict[str, str] = {}
    for name, value in event.headers:
        key, text = name.decode(), value.decode()
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    assert isinstance(conn.next_event(), h11.EndOfMessage)  # Content-Length: 0
    return event.status_code, event.reason.decode(), headers, conn.their_state is h11.DONE


@settings(max_examples=300, deadline=None)
@given(
    status=st.integers(200, 599),
    reason=st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ abcdefghij", max_size=20).map(str.strip),
    headers=st.lists(st.tuples(_PLAIN_NAMES, _VALUE, st.sampled_from(["", " ", "  "])), max_size=8),
    close=st.booleans(),
    version=st.sampled_from(["1.1", "1.0"]),
)
def test_the_head_parser_agrees_with_h11(
    status: int,
    reason: str,
    headers: list[tuple[str, str, str]],
    close: bool,
    version: str,
) -> None:
    lines = [f"HTTP/{version} {status} {reason}".rstrip() if reason else f"HTTP/{version} {status}"]
    lines += [f"{name}:{pad}{value}{pad}" for name, value, pad in headers]
    lines.append("Content-Length: 0")
    if close:
        lines.append("Connection: close")
    head = "\r\n".join(lines).encode()
    ours = parse_head(head)
    reference = _h11_reply(head + b"\r\n\r\n")
    assert ours[:3] == reference[:3]
    assert ours[3] == reference[3]
