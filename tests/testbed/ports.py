"""Free loopback TCP ports for test servers, so two test runs never collide."""

from __future__ import annotations

import random
import socket

LOOPBACK = "127.0.0.1"


def is_free(port: int, host: str = LOOPBACK) -> bool:
    """True when nothing listens on ``host:port`` and we may bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def free_port(host: str = LOOPBACK) -> int:
    """A port the kernel just handed out as free (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def free_port_pairs(count: int, offset: int = 10000, host: str = LOOPBACK) -> list[int]:
    """``count`` distinct ports ``p`` such that ``p`` and ``p + offset`` are both free.

    SeaweedFS derives some gRPC ports as ``http_port + 10000`` no matter what is
    configured, so each component needs both. Ports are drawn below the kernel's
    ephemeral range (32768+) so that outgoing connections do not grab them in between.
    """
    rng = random.SystemRandom()
    chosen: list[int] = []
    taken: set[int] = set()
    for _ in range(count * 200):
        if len(chosen) == count:
            return chosen
        port = rng.randrange(10000, 32768 - offset)
        if {port, port + offset} & taken:
            continue
        if is_free(port, host) and is_free(port + offset, host):
            chosen.append(port)
            taken.update((port, port + offset))
    raise RuntimeError(f"could not find {count} free port pairs on {host}")
