"""Site policy: scratch roots and default-deny S3 access rules."""

from __future__ import annotations

import pytest

from fsx_stage.config import CheckpointsConfig, SiteConfig, parse_config
from fsx_stage.directives import parse_directive
from fsx_stage.job import JobIdentity
from fsx_stage.plan import PlanEntry, build_plan
from fsx_stage.policy import Policy, PolicyError, is_under, normalise_path

GROUPS = {"genomics": 2000, "physics": 2001}

CONFIG = parse_config(
    {
        "scratch_roots": ["/fsx/{user}/", "/fsx/projects/{account}/"],
        "s3": {
            "allow": [
                {"bucket": "ref-data", "users": ["*"], "access": ["read"]},
                {
                    "bucket": "scratch",
                    "prefix": "users/{user}/",
                    "users": ["*"],
                    "access": ["read", "write"],
                },
                {
                    "bucket": "proj",
                    "prefix": "projects/{account}/",
                    "accounts": ["chem", "bio"],
                    "access": ["read", "write"],
                },
                {
                    "bucket": "proj",
                    "prefix": "genomics/",
                    "groups": ["genomics"],
                    "access": ["write"],
                },
                {"bucket": "proj", "prefix": "legacy/", "groups": [3000], "access": ["read"]},
                {"bucket": "proj", "prefix": "bob-only/", "users": ["bob"], "access": ["read"]},
            ]
        },
    }
)


def job(**overrides: object) -> JobIdentity:
    values: dict[str, object] = {
        "job_id": 42,
        "user": "alice",
        "uid": 1000,
        "gid": 1000,
        "groups": (),
        "account": "chem",
        "job_name": "train",
    }
    values.update(overrides)
    return JobIdentity.model_validate(values)


def check(text: str, who: JobIdentity | None = None, config: SiteConfig = CONFIG) -> None:
    who = who or job()
    (entry,) = build_plan([parse_directive(text)], who, None).entries
    Policy(config, resolve_group=GROUPS.get).check(entry, who)


def refusal(text: str, who: JobIdentity | None = None) -> str:
    with pytest.raises(PolicyError) as info:
        check(text, who)
    return str(info.value)


# --- scratch roots ------------------------------------------------------------------


def test_stage_into_own_scratch_root() -> None:
    check("in,s3://ref-data/genome.fa,/fsx/alice/genome.fa")


def test_the_root_itself_is_allowed() -> None:
    check("in,s3://ref-data/set/,/fsx/alice/")


def test_account_root() -> None:
    check("in,s3://ref-data/set/,/fsx/projects/chem/set/")


def test_other_users_root_is_refused_and_the_roots_are_listed() -> None:
    message = refusal("in,s3://ref-data/genome.fa,/fsx/bob/genome.fa")
    assert message == (
        "--fsx-stage=in,s3://ref-data/genome.fa,/fsx/bob/genome.fa: /fsx/bob/genome.fa is "
        "outside your scratch roots; allowed: /fsx/alice/, /fsx/projects/chem/"
    )


def test_dotdot_cannot_escape_a_root() -> None:
    assert "outside your scratch roots" in refusal("in,s3://ref-data/g,/fsx/alice/../bob/g")
    assert "outside your scratch roots" in refusal("in,s3://ref-data/g,/fsx/alice/../../etc/g")


def test_dotdot_that_stays_inside_is_fine() -> None:
    check("in,s3://ref-data/g,/fsx/alice/a/../b/g")


def test_sibling_with_common_prefix_is_not_under_the_root() -> None:
    assert "outside" in refusal("in,s3://ref-data/g,/fsx/alice2/g")


def test_account_root_needs_an_account() -> None:
    message = refusal("in,s3://ref-data/g,/fsx/projects/chem/g", job(account=None))
    assert message.endswith("allowed: /fsx/alice/")


@pytest.mark.parametrize("account", ["..", ".", "a/b", ""])
def test_unusable_template_values_never_widen_a_root(account: str) -> None:
    message = refusal("in,s3://ref-data/g,/fsx/g", job(account=account))
    assert message.endswith("allowed: /fsx/alice/")


def test_out_source_must_be_under_a_root() -> None:
    assert "/etc/shadow is outside" in refusal("out,/etc/shadow,s3://scratch/users/alice/x")


def test_checkpoint_directory_must_be_under_a_root() -> None:
    assert "outside" in refusal("checkpoint,/tmp/c/,s3://scratch/users/alice/c/")


# --- S3 rules -----------------------------------------------------------------------


def test_everyone_reads_the_reference_bucket() -> None:
    check("in,s3://ref-data/any/thing/,/fsx/alice/x/")


def test_read_only_rule_refuses_writes() -> None:
    message = refusal("out,/fsx/alice/r,s3://ref-data/r")
    assert "writing s3://ref-data/r is not allowed for user alice, account chem" in message
    assert message.endswith("you may write: s3://scratch/users/alice/, s3://proj/projects/chem/")


def test_user_template_prefix() -> None:
    check("out,/fsx/alice/r/,s3://scratch/users/alice/r/")
    assert "not allowed" in refusal("out,/fsx/alice/r/,s3://scratch/users/bob/r/")


def test_prefix_match_is_on_whole_segments() -> None:
    assert "not allowed" in refusal("out,/fsx/alice/r,s3://scratch/users/alice2/r")


def test_a_broader_prefix_than_allowed_is_refused() -> None:
    assert "reading s3://scratch/users/ " in refusal("in,s3://scratch/users/,/fsx/alice/u/")


def test_account_rule() -> None:
    check("out,/fsx/alice/r,s3://proj/projects/chem/r")
    assert "not allowed" in refusal("out,/fsx/alice/r,s3://proj/projects/bio/r")
    assert "not allowed" in refusal(
        "out,/fsx/alice/r,s3://proj/projects/phys/r", job(account="phys")
    )


def test_group_rule_by_name_uses_primary_and_supplementary_groups() -> None:
    assert "not allowed" in refusal("out,/fsx/alice/r,s3://proj/genomics/r")
    check("out,/fsx/alice/r,s3://proj/genomics/r", job(groups=(2000,)))
    check("out,/fsx/alice/r,s3://proj/genomics/r", job(gid=2000))


def test_group_rule_by_gid() -> None:
    check("in,s3://proj/legacy/x,/fsx/alice/x", job(groups=(3000,)))


def test_unknown_group_names_grant_nothing() -> None:
    config = parse_config(
        {
            "scratch_roots": ["/fsx/{user}/"],
            "s3": {"allow": [{"bucket": "proj", "groups": ["nosuch"], "access": ["read"]}]},
        }
    )
    with pytest.raises(PolicyError):
        check("in,s3://proj/x,/fsx/alice/x", job(groups=(2000,)), config)


def test_user_rule() -> None:
    assert "not allowed" in refusal("in,s3://proj/bob-only/x,/fsx/alice/x")
    check("in,s3://proj/bob-only/x,/fsx/bob/x", job(user="bob"))


def test_checkpoint_needs_read_and_write() -> None:
    check("checkpoint,/fsx/alice/c/,s3://scratch/users/alice/c/")
    message = refusal("checkpoint,/fsx/alice/c/,s3://ref-data/c/")
    assert "writing s3://ref-data/c/" in message


def test_default_deny_without_rules() -> None:
    config = parse_config({"scratch_roots": ["/fsx/{user}/"]})
    with pytest.raises(PolicyError, match=r"you may read: nothing$"):
        check("in,s3://ref-data/x,/fsx/alice/x", config=config)


def test_policy_checks_the_entry_it_is_given() -> None:
    entry = PlanEntry(
        index=1, directive="d", kind="in", source="s3://ref-data/x", destination="/fsx/bob/x"
    )
    with pytest.raises(PolicyError, match="outside"):
        Policy(CONFIG, resolve_group=GROUPS.get).check(entry, job())


# --- helpers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "normal"),
    [("/a/b/../c", "/a/c"), ("/a/./b/", "/a/b/"), ("//a//b", "/a/b"), ("/..", "/"), ("/", "/")],
)
def test_normalise_path(path: str, normal: str) -> None:
    assert normalise_path(path) == normal


def test_is_under() -> None:
    assert is_under("/fsx/a/x", "/fsx/a/")
    assert is_under("/fsx/a", "/fsx/a/")
    assert not is_under("/fsx/ab", "/fsx/a/")
    assert not is_under("/fsx/a/../b", "/fsx/a/")


# --- periodic checkpoints -------------------------------------------------------------


def test_every_below_the_site_minimum_is_refused() -> None:
    check("checkpoint,/fsx/alice/c/,s3://scratch/users/alice/c/,every=5m")  # default minimum
    assert refusal("checkpoint,/fsx/alice/c/,s3://scratch/users/alice/c/,every=90s") == (
        "--fsx-stage=checkpoint,/fsx/alice/c/,s3://scratch/users/alice/c/,every=90s: "
        "every=1m30s is more often than this site allows: at least every=5m "
        "([checkpoints] min_every)"
    )
    lenient = CONFIG.model_copy(update={"checkpoints": CheckpointsConfig(min_every="10s")})
    check("checkpoint,/fsx/alice/c/,s3://scratch/users/alice/c/,every=10s", config=lenient)


def test_a_checkpoint_keeps_two_generations_unless_told() -> None:
    who = job()
    (entry,) = build_plan([parse_directive("checkpoint,/fsx/a/c/,s3://bkt/c/")], who, None).entries
    assert entry.keep == 2
    (entry,) = build_plan(
        [parse_directive("checkpoint,/fsx/a/c/,s3://bkt/c/,keep=5")], who, None
    ).entries
    assert entry.keep == 5
    (entry,) = build_plan([parse_directive("out,/fsx/a/o/,s3://bkt/o/")], who, None).entries
    assert entry.keep is None
