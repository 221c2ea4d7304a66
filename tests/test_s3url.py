"""``s3://`` URL parsing: the one URL type every layer shares."""

import pytest

from fsx_stage.s3url import S3Url, S3UrlError, is_s3_url


def test_object_url() -> None:
    url = S3Url.parse("s3://my-bucket/data/run 1/file.h5")
    assert (url.bucket, url.key, url.is_prefix) == ("my-bucket", "data/run 1/file.h5", False)
    assert str(url) == "s3://my-bucket/data/run 1/file.h5"


@pytest.mark.parametrize("text", ["s3://bkt/", "s3://bkt", "s3://bkt/a/b/"])
def test_prefix_urls(text: str) -> None:
    assert S3Url.parse(text).is_prefix


def test_join_under_prefix_and_object() -> None:
    assert str(S3Url.parse("s3://bkt/p/").join("x/y")) == "s3://bkt/p/x/y"
    assert str(S3Url.parse("s3://bkt/p").join("y")) == "s3://bkt/p/y"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("/local/path", "expected an s3://"),
        ("s3:///key", "missing bucket"),
        ("s3://Bad_Bucket/key", "invalid bucket name"),
        ("s3://a..b/key", "invalid bucket name"),
        ("s3://bkt/" + "k" * 1025, "longer than 1024"),
    ],
)
def test_errors_say_what_was_expected(text: str, fragment: str) -> None:
    with pytest.raises(S3UrlError, match=fragment):
        S3Url.parse(text)


def test_is_s3_url() -> None:
    assert is_s3_url("s3://b/k") and not is_s3_url("/fsx/u")
