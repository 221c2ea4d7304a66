"""moto's S3 in a thread on a free loopback port: only for hostile keys SeaweedFS refuses."""

from __future__ import annotations

from typing import Self

from tests.testbed.ports import LOOPBACK, free_port
from tests.testbed.server import S3Endpoint


class MotoServer(S3Endpoint):
    """``ThreadedMotoServer`` with the same surface as ``SeaweedServer``."""

    access_key = "moto-test-key"
    secret_key = "moto-test-secret"  # moto accepts any credentials
    region = "us-east-1"

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self.port = free_port()
        self._server = ThreadedMotoServer(ip_address=LOOPBACK, port=self.port, verbose=False)

    @property
    def endpoint_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> Self:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()
