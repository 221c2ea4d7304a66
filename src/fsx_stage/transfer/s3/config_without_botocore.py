"""The bucket URL, region and credentials of the fast path, without a botocore client.

Creating a botocore client costs ~60 ms of start-up (service model, endpoint rules,
credential chain), more than a small transfer takes. For the common explicit set-ups
(credentials handed in or in the environment, an endpoint given or in the environment,
a shared config file whose default profile sets at most ``region``, ``output`` and
``s3.addressing_style``) the answer is simple and is computed here, following the AWS
conventions exactly. Anything else returns None and botocore decides.
"""

from __future__ import annotations

import configparser
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
    profile = _shared_config()
    if settings.profile is not None or profile is None:
        return None
    if _env_flag("AWS_USE_FIPS_ENDPOINT") or _env_flag("AWS_USE_DUALSTACK_ENDPOINT"):
        return None
    credentials = _credentials(settings)
    endpoint = _endpoint(settings)
    style = profile.addressing_style if settings.addressing_style == "auto" else None
    if credentials is None or endpoint is None or "virtual" in (settings.addressing_style, style):
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
    region = (
        settings.region or os.environ.get("AWS_DEFAULT_REGION") or profile.region or DEFAULT_REGION
    )
    return PlainS3(prefix, region, StaticProvider(credentials))


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


class _Profile(NamedTuple):
    region: str | None = None
    addressing_style: str | None = None


_PROFILE_KEYS = frozenset({"region", "output", "s3"})


def _shared_config() -> _Profile | None:
    """The shared config's default profile, or None when it says anything but ``region``,
    ``output`` and ``s3.addressing_style``: profiles, endpoints, SSO, credential processes,
    retries and the rest are botocore's to interpret."""
    if os.environ.get("AWS_PROFILE") or os.environ.get("AWS_DEFAULT_PROFILE"):
        return None
    path = Path(os.environ.get("AWS_CONFIG_FILE") or "~/.aws/config").expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return _Profile()
    except (OSError, UnicodeDecodeError):
        return None
    parser = configparser.RawConfigParser()
    try:
        parser.read_string(text)
    except configparser.Error:
        return None
    if not parser.has_section("default"):
        return _Profile()
    settings = dict(parser.items("default"))
    if not settings.keys() <= _PROFILE_KEYS:
        return None
    nested: dict[str, str] = {}
    for line in settings.get("s3", "").splitlines():
        key, sep, value = line.partition("=")
        if line.strip() and not sep:
            return None
        if sep:
            nested[key.strip()] = value.strip()
    style = nested.pop("addressing_style", None)
    if nested or style not in (None, "auto", "path", "virtual"):
        return None
    return _Profile(settings.get("region") or None, style)


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
