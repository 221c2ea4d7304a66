"""What one checkpoint generation costs on SeaweedFS: time and S3 requests by method.

``python -m tests.bench.checkpoint_cost [--files 100] [--mib 1024] [--generations 3]``:
starts SeaweedFS with the fault proxy in front (transparent; it counts every request),
publishes ``--generations`` generations of the same tree (keep=2: the third prunes the
first) and restores the newest. Prints one line per step. Docs: docs/checkpoints.md.
"""

from __future__ import annotations

import argparse
import collections
import os
import tempfile
import time
from pathlib import Path

from tests.testbed.faultproxy import FaultProxy
from tests.testbed.seaweed import SeaweedServer
from tests.transfer.conftest import settings_for

from fsx_stage.checkpoints.generations import Generations
from fsx_stage.transfer import TransferOptions


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--mib", type=int, default=1024, help="total size")
    parser.add_argument("--generations", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        src = root / "ckpt"
        src.mkdir()
        size = args.mib * 1024 * 1024 // args.files
        for i in range(args.files):
            (src / f"f{i:04d}").write_bytes(os.urandom(size))
        with SeaweedServer(root / "weed", die_with_parent=True) as server:
            server.client().create_bucket(Bucket="bench")
            with FaultProxy.for_endpoint(server.endpoint_url) as proxy:
                s3 = settings_for(server, proxy.endpoint_url)
                gens = Generations("s3://bench/ck/", s3)
                options = TransferOptions()
                for _ in range(args.generations):
                    proxy.set_faults()  # zero the counters
                    start = time.monotonic()
                    result = gens.publish(str(src), options, keep=2)
                    report(f"publish gen {result.generation}", start, proxy, result.bytes)
                proxy.set_faults()
                start = time.monotonic()
                restored = gens.restore(str(root / "back"), options)
                report(f"restore gen {restored.generation}", start, proxy, restored.bytes)


def report(step: str, start: float, proxy: FaultProxy, nbytes: int) -> None:
    seconds = time.monotonic() - start
    methods = collections.Counter(method for method, _path, _fault in proxy.log)
    print(
        f"{step}: {seconds:.1f} s, {nbytes / 2**20:.0f} MiB, {proxy.requests} requests "
        f"({', '.join(f'{m} {n}' for m, n in sorted(methods.items()))})",
        flush=True,
    )


if __name__ == "__main__":
    main()
