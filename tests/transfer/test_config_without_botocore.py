"""The fast path's own resolution of endpoint, region and credentials (no botocore client).

It must agree with botocore wherever it answers, and leave everything else to botocore.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore.config import Config

from fsx_stage.transfer import S3Settings, StaticCredentials, TransferOptions, transfer
from fsx_stage.transfer.models import MiB
from fsx_stage.transfer.s3 import botocore_client as client_module
from fsx_stage.transfer.s3.config_without_botocore import FrozenCredentials, plain_s3

_AWS_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_CREDENTIAL_EXPIRATION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_USE_FIPS_ENDPOINT",
    "AWS_USE_DUALSTACK_ENDPOINT",
    "AWS_SHARED_CREDENTIALS_FILE",
)


@pytest.fixture(autouse=True)
def clean_aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in _AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))


def _frozen(settings: S3Settings, bucket: str) -> FrozenCredentials:
    plain = plain_s3(settings, bucket)
    assert plain is not None
    return asyncio.run(plain.credentials.get_frozen_credentials())


def _botocore_layout(endpoint: str, style: str, bucket: str) -> tuple[str, str]:
    session = botocore.session.Session()
    client = session.create_client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="secret",
        config=Config(s3={"addressing_style": style}),
    )
    url = client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "k"})
    return url.split("?")[0][: -len("k")], client.meta.region_name


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://127.0.0.1:8333",
        "http://localhost:8333/",
        "https://s3.example.com",
        "https://s3.example.com/base",
        "http://[::1]:9000",
    ],
)
@pytest.mark.parametrize("style", ["auto", "path"])
@pytest.mark.parametrize("bucket", ["bucket", "my.bucket"])
def test_the_bucket_url_and_region_are_botocores(endpoint: str, style: Any, bucket: str) -> None:
    settings = S3Settings(
        endpoint_url=endpoint,
        addressing_style=style,
        credentials=StaticCredentials(access_key_id="AKIDEXAMPLE", secret_access_key="secret"),
    )
    plain = plain_s3(settings, bucket)
    assert plain is not None
    assert (plain.prefix, plain.region) == _botocore_layout(endpoint, style, bucket)


def test_handed_in_credentials_need_no_environment() -> None:
    settings = S3Settings(
        endpoint_url="http://127.0.0.1:1",
        region="eu-west-1",
        credentials=StaticCredentials(
            access_key_id="AKID", secret_access_key="s3cr3t", session_token="tok"
        ),
    )
    assert _frozen(settings, "b") == ("AKID", "s3cr3t", "tok")
    plain = plain_s3(settings, "b")
    assert plain is not None and plain.region == "eu-west-1"


def test_environment_follows_the_aws_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKID")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t")
    monkeypatch.setenv("AWS_SECURITY_TOKEN", "old-token")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://global:1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "ap-south-1")
    assert _frozen(S3Settings(), "b") == ("AKID", "s3cr3t", "old-token")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "token")
    assert _frozen(S3Settings(), "b").token == "token"
    plain = plain_s3(S3Settings(), "b")
    assert plain is not None
    assert (plain.prefix, plain.region) == ("http://global:1/b/", "ap-south-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://s3only:2")
    from_env = plain_s3(S3Settings(), "b")
    assert from_env is not None and from_env.prefix == "http://s3only:2/b/"
    given = plain_s3(S3Settings(endpoint_url="http://given:3", region="us-west-2"), "b")
    assert given is not None
    assert (given.prefix, given.region) == ("http://given:3/b/", "us-west-2")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true"),
        ("AWS_USE_FIPS_ENDPOINT", "true"),
        ("AWS_USE_DUALSTACK_ENDPOINT", "true"),
        ("AWS_CREDENTIAL_EXPIRATION", "2030-01-01T00:00:00Z"),
    ],
)
def test_anything_unusual_is_left_to_botocore(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKID")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://global:1")
    assert plain_s3(S3Settings(), "b") is not None
    monkeypatch.setenv(variable, value)
    assert plain_s3(S3Settings(), "b") is None


def test_profiles_config_files_and_missing_parts_are_left_to_botocore(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    creds = StaticCredentials(access_key_id="AKID", secret_access_key="s3cr3t")
    explicit = S3Settings(endpoint_url="http://e:1", credentials=creds)
    assert plain_s3(explicit, "b") is not None
    assert plain_s3(dataclasses.replace(explicit, profile="p"), "b") is None
    assert plain_s3(dataclasses.replace(explicit, addressing_style="virtual"), "b") is None
    assert plain_s3(dataclasses.replace(explicit, endpoint_url=None), "b") is None
    assert plain_s3(dataclasses.replace(explicit, credentials=None), "b") is None
    assert plain_s3(explicit, "Bad_Bucket") is None
    config = tmp_path / "config"
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    for text in (
        "[default]\nendpoint_url = http://other:1\n",
        "[default]\ncredential_process = /bin/creds\n",
        "[default]\ns3 =\n    addressing_style = virtual\n",
        "[default]\ns3 =\n    use_accelerate_endpoint = true\n",
        "[default\nbroken",
    ):
        config.write_text(text)
        assert plain_s3(explicit, "b") is None, text
    config.write_text("")  # what the hooks point it at (os.devnull) is empty
    assert plain_s3(explicit, "b") is not None
    monkeypatch.setenv("AWS_PROFILE", "other")
    assert plain_s3(explicit, "b") is None


def test_a_simple_shared_config_gives_region_and_addressing_as_botocore_reads_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "config"
    config.write_text(
        "[default]\nregion = eu-north-1\noutput = json\ns3 =\n    addressing_style = path\n"
        "[profile unused]\nregion = ap-south-1\n"
    )
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    creds = StaticCredentials(access_key_id="AKIDEXAMPLE", secret_access_key="secret")
    plain = plain_s3(S3Settings(endpoint_url="http://127.0.0.1:8333", credentials=creds), "b")
    assert plain is not None
    client = botocore.session.Session().create_client(
        "s3",
        endpoint_url="http://127.0.0.1:8333",
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="secret",
    )
    url = client.generate_presigned_url("get_object", Params={"Bucket": "b", "Key": "k"})
    assert (plain.prefix, plain.region) == (url.split("?")[0][: -len("k")], "eu-north-1")
    assert client.meta.region_name == "eu-north-1"


def test_a_fast_path_download_never_creates_a_botocore_client(
    monkeypatch: pytest.MonkeyPatch, s3_server: Any, s3_client: Any, bucket: str, tmp_path: Path
) -> None:
    s3_client.put_object(Bucket=bucket, Key="small", Body=b"small")
    s3_client.put_object(Bucket=bucket, Key="big", Body=b"b" * (11 * MiB))

    def no_client(*_: Any) -> Any:
        raise AssertionError("the botocore client was created")

    monkeypatch.setattr(client_module, "_botocore_client", no_client)
    settings = S3Settings(
        endpoint_url=s3_server.endpoint_url,
        region=s3_server.region,
        credentials=StaticCredentials(
            access_key_id=s3_server.access_key, secret_access_key=s3_server.secret_key
        ),
    )
    options = TransferOptions(workers=1, multipart_threshold=5 * MiB, part_size=5 * MiB)
    for key in ("small", "big"):
        summary = transfer(
            f"s3://{bucket}/{key}",
            str(tmp_path / key),
            recursive=False,
            options=options,
            s3=settings,
        )
        assert summary.ok, summary.failures
    assert (tmp_path / "small").read_bytes() == b"small"
    assert (tmp_path / "big").read_bytes() == b"b" * (11 * MiB)


def test_a_download_imports_neither_aiohttp_nor_aiobotocore(
    s3_server: Any, s3_client: Any, bucket: str, tmp_path: Path
) -> None:
    """Start-up is most of a short transfer: the listing and small objects move over the
    fast path's own HTTP client, a large object on the range threads."""
    s3_client.put_object(Bucket=bucket, Key="tree/big", Body=b"b" * (6 * MiB))
    for name in ("a", "b", "sub/c"):
        s3_client.put_object(Bucket=bucket, Key=f"tree/{name}", Body=name.encode())
    script = f"""
import sys
from fsx_stage.transfer import S3Settings, StaticCredentials, TransferOptions, transfer
settings = S3Settings(
    endpoint_url={s3_server.endpoint_url!r},
    region={s3_server.region!r},
    credentials=StaticCredentials(
        access_key_id={s3_server.access_key!r}, secret_access_key={s3_server.secret_key!r}
    ),
)
options = TransferOptions(workers=1, multipart_threshold=5 * 1024 * 1024)
summary = transfer("s3://{bucket}/tree/", {str(tmp_path / "tree")!r}, recursive=True,
                   options=options, s3=settings)
assert summary.ok and summary.objects_done == 4, summary
print(sorted(m for m in ("aiohttp", "aiobotocore", "botocore.parsers") if m in sys.modules))
"""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.pop("FSX_STAGE_NO_FASTPATH", None)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    assert (tmp_path / "tree" / "big").read_bytes() == b"b" * (6 * MiB)
    assert (tmp_path / "tree" / "sub" / "c").read_bytes() == b"sub/c"
