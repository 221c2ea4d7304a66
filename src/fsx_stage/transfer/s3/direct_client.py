"""A lean GetObject/PutObject for small objects, beside botocore.

Many small objects make a transfer CPU-bound in botocore's per-request pipeline
(endpoint rules, event hooks, signing set-up, response parsing): about 1 ms of CPU per
request. This module sends the same requests directly over
:mod:`~fsx_stage.transfer.s3.http1` (a minimal HTTP/1.1 client on the event loop), and the
ranged GETs of large objects on threads over blocking connections. The URL layout
and the signing scope come from :mod:`~fsx_stage.transfer.s3.config_without_botocore` or from
botocore itself (a presigned URL, computed locally), the SigV4 signature is computed
here with a cached signing key, and the replies become the store's typed results
(:mod:`~fsx_stage.transfer.s3.store`); error replies become
:class:`~fsx_stage.transfer.errors.S3Error`. It is used only when the URL for a probe
key has the plain ``prefix + quoted key`` shape and the server answers a signed probe
GET of a missing key as expected; otherwise botocore does it all.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import os
import re
import ssl
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote_plus, urlsplit
from xml.etree import ElementTree

from fsx_stage.transfer.errors import S3Error, TransferError
from fsx_stage.transfer.models import S3Settings
from fsx_stage.transfer.s3.botocore_client import LazyClient, fast_timestamp
from fsx_stage.transfer.s3.checksums import Digest
from fsx_stage.transfer.s3.config_without_botocore import plain_s3
from fsx_stage.transfer.s3.http1 import Endpoint, Pool, Response
from fsx_stage.transfer.s3.store import Got, ListedObject, ObjectInfo, Page, PutResult

RANGE_THREADS = 16  # ranged GETs of large objects in flight per process
if TYPE_CHECKING:  # http.client and threads load with the first ranged GET
    from fsx_stage.transfer.s3.rangeget import ThreadedRanges

_PROBE_KEY = "fsx-stage probe/ü+%~.x/does-not-exist"
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_CODE_RE = re.compile(rb"<Code>([^<]*)</Code>")
_MESSAGE_RE = re.compile(rb"<Message>([^<]*)</Message>")
_CHECKSUM_HEADERS = {
    f"x-amz-checksum-{algorithm.lower()}": algorithm
    for algorithm in ("CRC32", "CRC32C", "SHA256", "SHA1", "CRC64NVME")
}


def quote_key(key: str) -> str:
    return quote(key.encode("utf-8"), safe="/~")


class FastS3:
    """Signed requests on the objects of one bucket, without botocore."""

    def __init__(
        self,
        credentials: Any,
        prefix: str,
        region: str,
        service: str,
        endpoint: Endpoint,
        pool_size: int,
    ) -> None:
        self._credentials = credentials  # has ``async get_frozen_credentials()``
        self._region = region
        self._service = service
        self._endpoint = endpoint
        self._pool_size = pool_size
        self._http: Pool | None = None
        self._base_path = urlsplit(prefix).path
        self._keys: dict[tuple[str, str], bytes] = {}
        self.can_list = False
        self._ranges: ThreadedRanges | None = None

    @classmethod
    async def attach(
        cls,
        client: Any,
        bucket: str,
        pool_size: int,
        connect_s: float,
        read_s: float,
        settings: S3Settings | None = None,
        listing: bool = True,
    ) -> FastS3 | None:
        """A fast path for ``bucket``, or None where botocore's URL layout is not plain.

        With ``settings`` whose endpoint and credentials are explicit (:func:`plain_s3`),
        the botocore client is not consulted (nor created). ``listing=False``: the run
        lists nothing, so listing is not probed (and :attr:`can_list` stays False)."""
        if os.environ.get("FSX_STAGE_NO_FASTPATH") or any(
            name.lower().endswith("_proxy") and value for name, value in os.environ.items()
        ):
            return None  # proxies are botocore's business
        located = await locate(client, bucket, settings)
        if located is None:
            return None
        prefix, region, credentials = located
        ssl_context = None
        if urlsplit(prefix).scheme == "https":  # loading CAs costs ~15 ms: only for TLS
            ssl_context = ssl.create_default_context(cafile=os.environ.get("AWS_CA_BUNDLE"))
        endpoint = Endpoint.from_url(prefix, ssl_context, connect_s, read_s)
        fast = cls(credentials, prefix, region, "s3", endpoint, pool_size)
        if await fast._probe():
            if not listing:
                return fast
            try:
                await fast.list_objects_v2(_PROBE_KEY, None)
                fast.can_list = True
            except Exception:  # any doubt about listing: leave it to botocore
                fast.can_list = False
            return fast
        await fast.close()
        return None

    async def _probe(self) -> bool:
        """GET a key that does not exist: the server must understand our request as it
        would botocore's (NoSuchKey, or AccessDenied without list rights), not redirect
        us or reject the signature."""
        try:
            (await self._send("GET", _PROBE_KEY, {}, None, "GetObject")).close()
        except S3Error as exc:
            return exc.code in ("NoSuchKey", "AccessDenied")
        except (TransferError, OSError, TimeoutError):
            return False
        return True

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
        if self._ranges is not None:
            self._ranges.close()

    def _pool(self) -> Pool:
        if self._http is None:
            self._http = Pool(self._endpoint, self._pool_size)
        return self._http

    def _threads(self) -> ThreadedRanges:
        if self._ranges is None:
            from fsx_stage.transfer.s3.rangeget import ThreadedRanges

            self._ranges = ThreadedRanges(
                self._endpoint, min(self._pool_size, RANGE_THREADS), error_reply
            )
        return self._ranges

    def _signing_key(self, secret: str, day: str) -> bytes:
        cached = self._keys.get((secret, day))
        if cached is None:
            key = ("AWS4" + secret).encode()
            for part in (day, self._region, self._service, "aws4_request"):
                key = hmac.new(key, part.encode(), hashlib.sha256).digest()
            self._keys = {(secret, day): key}
            cached = key
        return cached

    async def _signed_headers(
        self, method: str, path: str, query: str, headers: dict[str, str], payload_hash: str
    ) -> dict[str, str]:
        frozen = await self._credentials.get_frozen_credentials()
        now = datetime.datetime.now(datetime.UTC)
        stamp = now.strftime("%Y%m%dT%H%M%SZ")
        day = stamp[:8]
        headers = {k.lower(): v for k, v in headers.items()}
        headers["host"] = self._endpoint.authority
        headers["x-amz-date"] = stamp
        headers["x-amz-content-sha256"] = payload_hash
        if frozen.token:
            headers["x-amz-security-token"] = frozen.token
        names = sorted(headers)
        canonical = "\n".join(
            [
                method,
                path,
                query,
                "".join(f"{name}:{' '.join(headers[name].split())}\n" for name in names),
                ";".join(names),
                payload_hash,
            ]
        )
        scope = f"{day}/{self._region}/{self._service}/aws4_request"
        to_sign = "\n".join(
            ["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()]
        )
        signature = hmac.new(
            self._signing_key(frozen.secret_key, day), to_sign.encode(), hashlib.sha256
        ).hexdigest()
        headers["authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={frozen.access_key}/{scope}, "
            f"SignedHeaders={';'.join(names)}, Signature={signature}"
        )
        del headers["host"]
        return headers

    async def _send(
        self,
        method: str,
        key: str,
        headers: dict[str, str],
        body: bytes | None,
        operation: str,
        query: Mapping[str, str] | None = None,
    ) -> Response:
        path = self._base_path + quote_key(key)
        in_order = canonical_query(query)
        if body is None:
            payload_hash = _EMPTY_SHA256
        elif "x-amz-checksum-crc32" in headers:
            # The signed checksum header already binds the body: S3 verifies it.
            payload_hash = "UNSIGNED-PAYLOAD"
        else:
            payload_hash = hashlib.sha256(body).hexdigest()
        signed = await self._signed_headers(method, path, in_order, headers, payload_hash)
        target = path + ("?" + in_order if in_order else "")
        response = await self._pool().request(method, target, signed, body)
        if response.status >= 300:
            raw = await response.read()
            raise error_reply(response.status, response.reason, raw, operation)
        return response

    async def get_object(self, key: str, headers: Mapping[str, str]) -> Got:
        """GetObject with ChecksumMode enabled."""
        response = await self._send(
            "GET", key, {"x-amz-checksum-mode": "ENABLED", **headers}, None, "GetObject"
        )
        return Got(info_from_headers(response.headers), response)

    async def get_range(
        self,
        key: str,
        first: int,
        last: int,
        headers: Mapping[str, str],
        fd: int,
        digest: Digest | None,
        progress: Callable[[int], None],
    ) -> None:
        """GET bytes ``first..last`` of ``key`` into ``fd`` at ``first`` (on a thread)."""
        ranges = self._threads()
        path = self._base_path + quote_key(key)
        signed = await self._signed_headers(
            "GET", path, "", {"range": f"bytes={first}-{last}", **headers}, _EMPTY_SHA256
        )
        signed["host"] = self._endpoint.authority
        await ranges.get(path, signed, fd, first, last, digest, progress)

    async def head_object(
        self, key: str, headers: Mapping[str, str], part_number: int | None = None
    ) -> ObjectInfo:
        query = {"partNumber": str(part_number)} if part_number is not None else None
        response = await self._send("HEAD", key, dict(headers), None, "HeadObject", query)
        return info_from_headers(response.headers)

    async def list_objects_v2(self, prefix: str, token: str | None) -> Page:
        """One ListObjectsV2 page (keys url-encoded on the wire, as botocore asks)."""
        query = {"list-type": "2", "prefix": prefix, "max-keys": "1000", "encoding-type": "url"}
        if token:
            query["continuation-token"] = token
        response = await self._send("GET", "", {}, None, "ListObjectsV2", query)
        return _parse_listing(await response.read())

    async def put_object(self, key: str, body: bytes, headers: Mapping[str, str]) -> PutResult:
        response = await self._send(
            "PUT", key, {"content-length": str(len(body)), **headers}, body, "PutObject"
        )
        try:
            return PutResult(
                response.headers.get("etag", ""), response.headers.get("x-amz-checksum-crc32")
            )
        finally:
            response.close()


async def locate(
    client: Any, bucket: str, settings: S3Settings | None
) -> tuple[str, str, Any] | None:
    """(URL prefix of the bucket's keys, signing region, credentials with ``async
    get_frozen_credentials()``), or None where botocore's URL layout is not plain."""
    plain = plain_s3(settings, bucket) if settings is not None else None
    if plain is not None:
        return plain.prefix, plain.region, plain.credentials
    if isinstance(client, LazyClient):
        client = await client.ready()
    credentials = getattr(getattr(client, "_request_signer", None), "_credentials", None)
    if credentials is None:
        return None
    url = await client.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": _PROBE_KEY}, ExpiresIn=60
    )
    parts = urlsplit(url)
    quoted = quote_key(_PROBE_KEY)
    if not parts.path.endswith("/" + quoted):
        return None
    prefix = f"{parts.scheme}://{parts.netloc}{parts.path[: -len(quoted)]}"
    return prefix, getattr(client.meta, "region_name", None) or "us-east-1", credentials


def canonical_query(query: Mapping[str, str] | None) -> str:
    return "&".join(
        f"{quote(name, safe='-_.~')}={quote(value, safe='-_.~')}"
        for name, value in sorted((query or {}).items())
    )


def info_from_headers(headers: Mapping[str, str]) -> ObjectInfo:
    """An :class:`ObjectInfo` from the reply headers of a HEAD or GET (lower-case names)."""
    modified = headers.get("last-modified")
    return ObjectInfo(
        size=int(headers.get("content-length", "-1")),
        etag=headers.get("etag", "").strip('"'),
        last_modified=fast_timestamp(modified) if modified else None,
        metadata={
            name[11:]: value for name, value in headers.items() if name[:11] == "x-amz-meta-"
        },
        checksums={
            algorithm: headers[header]
            for header, algorithm in _CHECKSUM_HEADERS.items()
            if headers.get(header)
        },
        checksum_type=headers.get("x-amz-checksum-type") or None,
        encrypted_etag=headers.get("x-amz-server-side-encryption") == "aws:kms"
        or bool(headers.get("x-amz-server-side-encryption-customer-algorithm")),
    )


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _parse_listing(raw: bytes) -> Page:
    """The fields of a ListObjectsV2 page that we use."""
    root = ElementTree.fromstring(raw)  # noqa: S314 - the S3 server's own reply
    if _local(root.tag) != "ListBucketResult":
        raise ValueError("not a ListBucketResult")
    objects: list[ListedObject] = []
    truncated = False
    token: str | None = None
    for element in root:
        name = _local(element.tag)
        if name == "Contents":
            item: dict[str, str] = {}
            for field in element:
                item[_local(field.tag)] = field.text or ""
            modified = item.get("LastModified")
            objects.append(
                ListedObject(
                    unquote_plus(item["Key"]),
                    int(item.get("Size") or -1),
                    item.get("ETag", "").strip('"'),
                    fast_timestamp(modified) if modified else None,
                )
            )
        elif name == "IsTruncated":
            truncated = (element.text or "").strip() == "true"
        elif name == "NextContinuationToken":
            token = element.text or None
    return Page(objects, token if truncated else None)


def error_reply(status: int, reason: str, raw: bytes, operation: str) -> S3Error:
    """The error of an S3 error reply (its XML code and message; none for a HEAD)."""
    code = _CODE_RE.search(raw)
    message = _MESSAGE_RE.search(raw)
    return S3Error(
        code.group(1).decode(errors="replace") if code else str(status),
        status,
        message.group(1).decode(errors="replace") if message else reason,
        operation,
    )
