"""The bucket URL, region and credentials of the fast path, without a botocore client.

Creating a botocore client costs ~60 ms of start-up (service model, endpoint rules,
credential chain), more than a small transfer takes. For the common explicit set-ups
(credentials handed in or in the environment, an endpoint given or in the environment,
no shared config file to consult) the answer is simple and is computed here, following
the AWS conventions exactly. Anything else returns None and botocore decides.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

from fsx_stage.transfer.models import S3Settings

DEFAULT_REGION = "us-east-1"  # what botocore signs with when no region is configured
_PLAIN_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-]*$")
_TRUE = ("true", "1", "yes")


class FrozenCredentials(NamedTuple):
    """Botocore's ``ReadOnlyCredentials`` shape."""

    access_key: str
    secret_key: str
    token: str | None


class StaticProvider:
    """Credentials that never change, read like botocore's ``Credentials``."""

    def __init__(self, frozen: FrozenCredentials) -> None:
        self._frozen = frozen

    async def get_frozen_credentials(self) -> FrozenCredentials:
        return self._frozen


@dataclass(frozen=True)
class PlainS3:
    """Where a bucket's objects live (``prefix + quoted key``) and how to sign for them."""

    prefix: str
    region: str
    credentials: StaticProvider


def plain_s3(settings: S3Settings, bucket: str) -> PlainS3 | None:
    """The fast path's set-up for ``bucket``, or None when botocore must resolve it."""
    if settings.profile is not None or _config_file_in_play():
        return None
    if _env_flag("AWS_USE_FIPS_ENDPOINT") or _env_flag("AWS_USE_DUALSTACK_ENDPOINT"):
        return None
    credentials = _credentials(settings)
    endpoint = _endpoint(settings)
    if credentials is None or endpoint is None or settings.addressing_style == "virtual":
        return None
    if not _PLAIN_BUCKET_RE.match(bucket):
        return None
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        return None
    if parts.username is not None or parts.password is not None:
        return None
    # With a custom endpoint botocore's "auto" addressing is path-style, as is "path".
    prefix = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}/{bucket}/"
    region = settings.region or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION
    return PlainS3(prefix, region, StaticProvider(credentials))


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def _config_file_in_play() -> bool:
    """A non-empty shared config file can change endpoints, regions and more: botocore's."""
    path = Path(os.environ.get("AWS_CONFIG_FILE") or "~/.aws/config")
    try:
        return path.expanduser().stat().st_size > 0
    except OSError:
        return False


def _credentials(settings: S3Settings) -> FrozenCredentials | None:
    given = settings.credentials
    if given is not None:
        token = given.session_token.get_secret_value() if given.session_token else None
        return FrozenCredentials(
            given.access_key_id, given.secret_access_key.get_secret_value(), token
        )
    # Botocore's environment provider: first in the chain when no profile is passed in.
    access = os.environ.get("AWS_ACCESS_KEY_ID", "")
    secret = os.environ.get("AWS_SECRET_ACCESS_KEY", "")
    if not access or not secret or os.environ.get("AWS_CREDENTIAL_EXPIRATION"):
        return None  # expiring environment credentials: botocore refreshes them
    token = os.environ.get("AWS_SESSION_TOKEN") or os.environ.get("AWS_SECURITY_TOKEN") or None
    return FrozenCredentials(access, secret, token)


def _endpoint(settings: S3Settings) -> str | None:
    if settings.endpoint_url:
        return settings.endpoint_url
    if _env_flag("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS"):
        return None
    found = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    return found or None
