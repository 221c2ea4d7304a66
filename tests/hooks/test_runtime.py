"""Site settings the hooks derive as root: encryption keys, scratch health, credentials."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from fsx_stage.config import SiteConfig, parse_config
from fsx_stage.hooks.outcome import Fault, HookFault
from fsx_stage.hooks.runtime import check_scratch, encryption, resolve_credentials, scratch_bases

KEY = bytes(range(32))


def _config(tmp_path: Path, **s3: object) -> SiteConfig:
    return parse_config(
        {"scratch_roots": [f"{tmp_path}/fsx/{{user}}/", "/lustre/shared/"], "s3": s3}
    )


@pytest.mark.parametrize("content", [KEY, base64.b64encode(KEY) + b"\n"])
def test_sse_c_key_as_bytes_or_base64(tmp_path: Path, content: bytes) -> None:
    key_file = tmp_path / "sse-c.key"
    key_file.write_bytes(content)
    config = _config(tmp_path, encryption={"mode": "sse-c", "sse_c_key_file": str(key_file)})
    enc = encryption(config)
    assert enc.mode == "sse-c" and enc.customer_key is not None
    assert base64.b64decode(enc.customer_key.get_secret_value()) == KEY


def test_a_bad_sse_c_key_is_a_node_fault_without_the_key(tmp_path: Path) -> None:
    key_file = tmp_path / "sse-c.key"
    key_file.write_text("c2hvcnQ=")
    config = _config(tmp_path, encryption={"mode": "sse-c", "sse_c_key_file": str(key_file)})
    with pytest.raises(HookFault) as info:
        encryption(config)
    assert info.value.fault is Fault.NODE and "c2hvcnQ" not in info.value.message


def test_scratch_bases_are_the_fixed_part_of_the_roots(tmp_path: Path) -> None:
    assert scratch_bases(_config(tmp_path)) == [f"{tmp_path}/fsx/", "/lustre/shared/"]


def test_missing_scratch_is_a_node_fault(tmp_path: Path) -> None:
    config = _config(tmp_path)
    with pytest.raises(HookFault) as info:
        check_scratch(config, [f"{tmp_path}/fsx/u/in/"], need_space=True)
    assert info.value.fault is Fault.NODE and "not available on this node" in info.value.message
    (tmp_path / "fsx").mkdir()
    check_scratch(config, [f"{tmp_path}/fsx/u/in/"], need_space=True)


def test_credentials_from_the_configured_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    creds = tmp_path / "credentials"
    creds.write_text("[site]\naws_access_key_id = AKIDSITE\naws_secret_access_key = s3cr3t-value\n")
    config = _config(tmp_path, profile="site", credentials_file=str(creds))
    found = resolve_credentials(config)
    assert found.access_key_id == "AKIDSITE"
    assert found.secret_access_key.get_secret_value() == "s3cr3t-value"
    creds.unlink()
    with pytest.raises(HookFault) as info:
        resolve_credentials(config)
    assert info.value.fault is Fault.NODE and "credentials unavailable" in info.value.message
