"""The site configuration file: what it accepts and how it reports mistakes."""

from __future__ import annotations

from pathlib import Path

import pytest

from fsx_stage.config import (
    Access,
    ConfigError,
    EncryptionMode,
    SiteConfig,
    load_config,
    load_optional_config,
    parse_config,
)

EXAMPLE = Path(__file__).resolve().parents[1] / "slurm-conf-examples" / "fsx-stage.toml"
MINIMAL = {"scratch_roots": ["/fsx/{user}/"]}


def errors_of(data: dict[str, object]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, "site.toml")
    return str(info.value).splitlines()


def test_minimal_config_has_safe_defaults() -> None:
    config = parse_config(MINIMAL)
    assert config.s3.allow == ()  # default deny
    assert config.s3.encryption.mode is EncryptionMode.NONE
    assert config.scratch_after_flush == "keep"
    assert str(config.state_dir) == "/var/lib/fsx-stage"
    assert (config.log.destination, config.log.level) == ("syslog", "info")


def test_the_shipped_example_is_valid() -> None:
    config = load_config(EXAMPLE)
    assert config.scratch_roots
    assert any(Access.WRITE in rule.access for rule in config.s3.allow)


def test_sizes_accept_units() -> None:
    config = parse_config({**MINIMAL, "transfer": {"part_size": "16MiB"}})
    assert config.transfer.part_size == 16 * 1024**2


def test_unknown_keys_are_errors_with_their_path() -> None:
    lines = errors_of({**MINIMAL, "s3": {"endpoint": "http://x"}, "extra": 1})
    assert "site.toml: s3.endpoint: unknown key" in lines
    assert "site.toml: extra: unknown key" in lines


def test_scratch_roots_are_required() -> None:
    assert errors_of({}) == ["site.toml: scratch_roots: required key missing"]


@pytest.mark.parametrize(
    ("root", "fragment"),
    [
        ("fsx/{user}/", "expected absolute path templates"),
        ("/fsx/{uid}/", "unknown template field {uid}"),
        ("/fsx/{user/", "unbalanced"),
        ("/fsx/../{user}/", "'..' is not allowed"),
    ],
)
def test_bad_scratch_roots(root: str, fragment: str) -> None:
    (line,) = errors_of({"scratch_roots": [root]})
    assert line.startswith("site.toml: scratch_roots: ")
    assert fragment in line


def rule(**overrides: object) -> dict[str, object]:
    return {"bucket": "bkt", "prefix": "p/", "users": ["*"], "access": ["read"], **overrides}


@pytest.mark.parametrize(
    ("overrides", "key", "fragment"),
    [
        ({"prefix": "p"}, "prefix", "ending in '/'"),
        ({"prefix": "/p/"}, "prefix", "leading '/'"),
        ({"prefix": "a/../b/"}, "prefix", "'..'"),
        ({"prefix": "{group}/"}, "prefix", "unknown template field {group}"),
        ({"bucket": "Bad_Bucket"}, "bucket", "invalid bucket name"),
        ({"access": ["rw"]}, "access[0]", "'read' or 'write'"),
        ({"access": []}, "access", "at least one"),
        ({"users": []}, "", "at least one of users, groups or accounts"),
    ],
)
def test_bad_allow_rules(overrides: dict[str, object], key: str, fragment: str) -> None:
    (line,) = errors_of({**MINIMAL, "s3": {"allow": [rule(), rule(**overrides)]}})
    path = "s3.allow[1]" + (f".{key}" if key else "")
    assert line.startswith(f"site.toml: {path}: ")
    assert fragment in line


@pytest.mark.parametrize(
    ("encryption", "fragment"),
    [
        ({"mode": "sse-kms"}, "needs kms_key_id"),
        ({"mode": "sse-c"}, "needs sse_c_key_file"),
        ({"mode": "sse-s3", "kms_key_id": "k"}, "only for mode 'sse-kms'"),
        ({"mode": "sse-c", "sse_c_key_file": "key"}, "absolute path"),
        ({"mode": "aes"}, "'none', 'sse-s3', 'sse-kms' or 'sse-c'"),
    ],
)
def test_encryption_settings_must_be_consistent(
    encryption: dict[str, object], fragment: str
) -> None:
    (line,) = errors_of({**MINIMAL, "s3": {"encryption": encryption}})
    assert line.startswith("site.toml: s3.encryption")
    assert fragment in line


def test_encryption_modes() -> None:
    config = parse_config(
        {**MINIMAL, "s3": {"encryption": {"mode": "sse-kms", "kms_key_id": "alias/x"}}}
    )
    assert config.s3.encryption.kms_key_id == "alias/x"


@pytest.mark.parametrize(
    ("section", "fragment"),
    [
        ({"log": {"destination": "journal"}}, "log.destination"),
        ({"log": {"level": "trace"}}, "log.level"),
        ({"scratch_after_flush": "delete"}, "scratch_after_flush"),
        ({"transfer": {"part_size": "1KiB"}}, "transfer.part_size"),
        ({"transfer": {"part_size": "lots"}}, "transfer.part_size"),
        ({"timeouts": {"flush": 0}}, "timeouts.flush"),
        ({"s3": {"endpoint_url": "localhost:8333"}}, "s3.endpoint_url"),
        ({"s3": {"addressing_style": "dns"}}, "s3.addressing_style"),
        ({"state_dir": "relative"}, "state_dir"),
        ({"s3": {"credentials_file": "creds"}}, "s3.credentials_file"),
    ],
)
def test_each_error_names_its_key(section: dict[str, object], fragment: str) -> None:
    (line,) = errors_of({**MINIMAL, **section})
    assert line.startswith(f"site.toml: {fragment}: ")


def test_every_error_is_reported() -> None:
    lines = errors_of({"scratch_roots": ["x"], "log": {"level": "x"}, "bogus": 1})
    assert len(lines) == 3


def test_load_reports_invalid_toml_with_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("scratch_roots = [\n")
    with pytest.raises(ConfigError, match=rf"^{path}: invalid TOML"):
        load_config(path)


def test_load_reports_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml")


def test_no_config_file_means_no_policy(tmp_path: Path) -> None:
    assert load_optional_config({}, default=tmp_path / "absent.toml") is None


def test_explicit_config_env_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_optional_config({"FSX_STAGE_CONFIG": str(tmp_path / "absent.toml")})


def test_config_env_selects_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('scratch_roots = ["/scratch/{user}/"]\n')
    config = load_optional_config({"FSX_STAGE_CONFIG": str(path)})
    assert isinstance(config, SiteConfig)
    assert config.scratch_roots == ("/scratch/{user}/",)


def test_umask_defaults_private_and_roots_may_share() -> None:
    assert parse_config(MINIMAL).umask == 0o077
    config = parse_config({**MINIMAL, "umask": 0o027, "root_umask": {"/fsx/p/{account}/": 0o007}})
    assert (config.umask, config.root_umask) == (0o027, {"/fsx/p/{account}/": 0o007})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"umask": 0o1777}, "umask"),
        ({"root_umask": {"fsx/p/": 0o027}}, "expected an absolute path template"),
        ({"root_umask": {"/fsx/p/": 0o1000}}, "expected a umask"),
    ],
)
def test_bad_umasks_name_the_key(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({**MINIMAL, **data})


@pytest.mark.parametrize(("text", "value"), [("6MB", 6 << 20), ("6MiB", 6 << 20), ("6m", 6 << 20)])
def test_config_sizes_mean_what_they_mean_on_the_command_line(text: str, value: int) -> None:
    """One size grammar: ``6MB`` is 6 MiB in the site configuration as in the CLI."""
    from fsx_stage.cli.transfer import parse_size

    config = parse_config({**MINIMAL, "transfer": {"multipart_threshold": text}})
    assert config.transfer.multipart_threshold == parse_size(text) == value


def test_checkpoint_min_every_takes_a_duration_or_seconds() -> None:
    assert parse_config(MINIMAL).checkpoints.min_every == 300
    assert (
        parse_config({**MINIMAL, "checkpoints": {"min_every": "30s"}}).checkpoints.min_every == 30
    )
    assert parse_config({**MINIMAL, "checkpoints": {"min_every": 45}}).checkpoints.min_every == 45
    (problem,) = errors_of({**MINIMAL, "checkpoints": {"min_every": "5 minutes"}})
    assert problem.startswith("site.toml: checkpoints.min_every: expected a duration such as 90s")
