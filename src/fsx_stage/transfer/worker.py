"""``python -m fsx_stage.transfer.worker FD``: a transfer worker process started fresh.

The parent sends ``(route, options, s3)`` over the connection on ``FD`` first, then
batches of jobs; the worker sends back batches of events (see ``engine``).
"""

from __future__ import annotations

import sys
from multiprocessing.connection import Connection


def main(argv: list[str]) -> int:
    from fsx_stage.transfer.engine import _worker_main

    conn = Connection(int(argv[1]))
    route, options, s3 = conn.recv()
    _worker_main(conn, route, options, s3)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
