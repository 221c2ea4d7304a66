"""Creating the aiobotocore S3 client (the control plane, and the botocore store)."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from fsx_stage.transfer.models import S3Settings


def create_client(settings: S3Settings, pool_size: int) -> AbstractAsyncContextManager[Any]:
    """An S3 client whose HTTP pool matches our concurrency, created on its first call.

    Retries are ours (:class:`RetryPolicy`), so botocore makes one attempt. Botocore's
    own checksum handling is limited to what the API requires: we compute, send and
    verify checksums ourselves, streaming. A run the fast path serves entirely never
    creates it (aiobotocore is imported, and the client built, only on first use).
    """
    return LazyClient(lambda: _botocore_client(settings, pool_size))


class LazyClient:
    """Stands for the aiobotocore client: ``await client.get_object(...)`` creates it the
    first time; :meth:`ready` returns the client itself."""

    def __init__(self, creator: Callable[[], AbstractAsyncContextManager[Any]]) -> None:
        self._creator = creator
        self._entered: AbstractAsyncContextManager[Any] | None = None
        self._client: Any = None
        self._lock = asyncio.Lock()
        self._closed = False

    async def __aenter__(self) -> LazyClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self._closed = True
        if self._entered is not None:
            entered, self._entered, self._client = self._entered, None, None
            await entered.__aexit__(*exc)

    async def ready(self) -> Any:
        if self._client is None:
            async with self._lock:
                if self._closed:
                    raise RuntimeError("the S3 client is closed")
                if self._client is None:
                    entered = self._creator()
                    client = await entered.__aenter__()
                    self._entered, self._client = entered, client
        return self._client

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        if name.startswith("_"):
            raise AttributeError(name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            client = await self.ready()
            return await getattr(client, name)(*args, **kwargs)

        return call


def _botocore_client(settings: S3Settings, pool_size: int) -> AbstractAsyncContextManager[Any]:
    from aiobotocore.config import AioConfig
    from aiobotocore.session import AioSession

    session = AioSession(profile=settings.profile)
    session.get_component("response_parser_factory").set_parser_defaults(
        timestamp_parser=fast_timestamp
    )
    config = AioConfig(
        max_pool_connections=pool_size,
        connect_timeout=settings.connect_timeout_s,
        read_timeout=settings.read_timeout_s,
        retries={"max_attempts": 1, "mode": "standard"},
        s3={"addressing_style": settings.addressing_style},
        parameter_validation=False,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        tcp_keepalive=True,
    )
    kwargs: dict[str, Any] = {"config": config}
    if settings.endpoint_url:
        kwargs["endpoint_url"] = settings.endpoint_url
    if settings.region:
        kwargs["region_name"] = settings.region
    if settings.credentials is not None:
        creds = settings.credentials
        kwargs["aws_access_key_id"] = creds.access_key_id
        kwargs["aws_secret_access_key"] = creds.secret_access_key.get_secret_value()
        if creds.session_token is not None:
            kwargs["aws_session_token"] = creds.session_token.get_secret_value()
    return _Client(session.create_client("s3", **kwargs))


class _Client:
    """Enters the client and trims per-request work that does not change between requests."""

    def __init__(self, creator: AbstractAsyncContextManager[Any]) -> None:
        self._creator = creator

    async def __aenter__(self) -> Any:
        client = await self._creator.__aenter__()
        creator = getattr(client, "_user_agent_creator", None)
        if creator is not None and callable(getattr(creator, "to_string", None)):
            agent = creator.to_string()  # rebuilt for every request otherwise
            creator.to_string = lambda: agent
        return client

    async def __aexit__(self, *exc: Any) -> None:
        await self._creator.__aexit__(*exc)


_MONTHS = {
    m: i
    for i, m in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}


def fast_timestamp(value: str) -> datetime.datetime:
    """Botocore's timestamp parsing (dateutil) is a measurable share of a small GET;
    S3 sends only two formats, parsed here directly, anything else goes to botocore."""
    try:
        if value.endswith("Z") and "T" in value:  # 2026-11-26T04:59:39.000Z (listings)
            return datetime.datetime.fromisoformat(value[:-1]).replace(tzinfo=datetime.UTC)
        if value.endswith(" GMT"):  # Thu, 26 Nov 2026 04:59:39 GMT (headers)
            _, day, month, year, clock, _ = value.split(" ")
            hour, minute, second = clock.split(":")
            return datetime.datetime(
                int(year),
                _MONTHS[month],
                int(day),
                int(hour),
                int(minute),
                int(second),
                tzinfo=datetime.UTC,
            )
    except (ValueError, KeyError):
        pass
    from botocore.utils import parse_timestamp

    parsed: datetime.datetime = parse_timestamp(value)
    return parsed
