"""The ``--fsx-stage=KIND,SRC,DST[,OPTION=VALUE]...`` grammar, rule by rule."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fsx_stage.directives import (
    Directive,
    DirectiveError,
    Kind,
    When,
    decode_spank_values,
    encode_spank_values,
    parse_directive,
)
from fsx_stage.filters import Filter, FilterAction, selects


def error_of(text: str) -> DirectiveError:
    with pytest.raises(DirectiveError) as info:
        parse_directive(text)
    return info.value


# --- the three kinds ----------------------------------------------------------------


def test_in_stages_one_object_to_a_path() -> None:
    d = parse_directive("in,s3://bkt/data/a.h5,/fsx/me/a.h5")
    assert (d.kind, d.src, d.dst) == (Kind.IN, "s3://bkt/data/a.h5", "/fsx/me/a.h5")
    assert (d.when, d.filters, d.optional) == (When.ALWAYS, (), False)
    assert d.text == "in,s3://bkt/data/a.h5,/fsx/me/a.h5"


def test_in_stages_a_prefix_into_a_directory() -> None:
    d = parse_directive("in,s3://bkt/data/,/fsx/me/data/")
    assert (d.src, d.dst) == ("s3://bkt/data/", "/fsx/me/data/")


def test_in_object_into_a_directory_keeps_its_basename() -> None:
    assert parse_directive("in,s3://bkt/a.h5,/fsx/me/").dst == "/fsx/me/"


def test_the_whole_bucket_is_written_with_a_trailing_slash() -> None:
    assert parse_directive("in,s3://bkt/,/fsx/me/").src == "s3://bkt/"


def test_out_flushes_a_path_with_when() -> None:
    d = parse_directive("out,/fsx/me/res/,s3://bkt/res/,when=success")
    assert (d.kind, d.src, d.dst, d.when) == (Kind.OUT, "/fsx/me/res/", "s3://bkt/res/", "success")


@pytest.mark.parametrize("when", ["always", "success", "failure"])
def test_out_when_values(when: str) -> None:
    assert parse_directive(f"out,/f/x,s3://bkt/x,when={when}").when == When(when)


def test_checkpoint_pairs_a_directory_and_a_prefix() -> None:
    d = parse_directive("checkpoint,/fsx/me/ckpt/,s3://bkt/ckpt/%j/")
    assert (d.kind, d.src, d.dst) == (Kind.CHECKPOINT, "/fsx/me/ckpt/", "s3://bkt/ckpt/%j/")


def test_directive_is_frozen() -> None:
    d = parse_directive("in,s3://bkt/k,/x")
    with pytest.raises(ValueError, match="frozen"):
        d.src = "s3://other/k"  # type: ignore[misc]


# --- options ------------------------------------------------------------------------


def test_include_and_exclude_keep_their_order() -> None:
    d = parse_directive("in,s3://bkt/p/,/x/,exclude=*,include=*.h5,exclude=tmp/*")
    assert d.filters == (
        Filter(action=FilterAction.EXCLUDE, pattern="*"),
        Filter(action=FilterAction.INCLUDE, pattern="*.h5"),
        Filter(action=FilterAction.EXCLUDE, pattern="tmp/*"),
    )
    assert d.include == ("*.h5",)
    assert d.exclude == ("*", "tmp/*")


def test_filters_follow_aws_s3_sync_semantics_last_match_wins() -> None:
    filters = parse_directive("in,s3://bkt/p/,/x/,exclude=*,include=*.h5").filters
    assert selects("run/a.h5", filters)  # '*' crosses '/'
    assert not selects("run/a.txt", filters)
    assert selects("anything", ())


@pytest.mark.parametrize(
    ("value", "expected"), [("yes", True), ("true", True), ("no", False), ("false", False)]
)
def test_optional_values(value: str, expected: bool) -> None:
    assert parse_directive(f"in,s3://bkt/k,/x,optional={value}").optional is expected


def test_options_for_checkpoint() -> None:
    d = parse_directive("checkpoint,/c/,s3://bkt/c/,exclude=*.tmp,optional=yes")
    assert d.exclude == ("*.tmp",)
    assert d.optional


# --- escapes ------------------------------------------------------------------------


def test_escaped_comma_and_backslash_belong_to_the_field() -> None:
    d = parse_directive(r"in,s3://bkt/a\,b\\c,/x/y\,z")
    assert (d.src, d.dst) == ("s3://bkt/a,b\\c", "/x/y,z")


def test_lone_backslash_is_an_error_at_its_position() -> None:
    e = error_of(r"in,s3://bkt/a\b,/x")
    assert (e.position, e.reason) == (14, "expected '\\,' or '\\\\' after a backslash, got 'b'")


def test_backslash_at_the_end_is_an_error() -> None:
    e = error_of("in,s3://bkt/a,/x\\")
    assert e.position == 17
    assert "got the end" in e.reason


def test_positions_count_the_escape_characters() -> None:
    e = error_of(r"in,s3://bkt/a\,b,/x,bogus=1")
    assert e.position == 21


# --- patterns -----------------------------------------------------------------------


def test_known_patterns_are_kept_unexpanded() -> None:
    d = parse_directive("out,/fsx/%u/%x-%j/,s3://bkt/%A/%a/100%%/")
    assert (d.src, d.dst) == ("/fsx/%u/%x-%j/", "s3://bkt/%A/%a/100%%/")


def test_unknown_pattern_is_an_error_at_the_percent() -> None:
    e = error_of("in,s3://bkt/%N,/x")
    assert e.position == 13
    assert e.reason.startswith("in SRC: unknown pattern '%N': expected %j, %u, %x, %A, %a or %%")


def test_percent_at_the_end_of_a_field_is_an_error() -> None:
    e = error_of("in,s3://bkt/k,/x/%")
    assert e.position == 18
    assert "'%' at the end" in e.reason


def test_field_widths_are_not_supported() -> None:
    assert error_of("in,s3://bkt/%4j,/x").position == 13


def test_pattern_in_bucket_name_is_allowed() -> None:
    assert parse_directive("in,s3://scratch-%u/k,/x").src == "s3://scratch-%u/k"


# --- errors: the message names the directive, the position and what was expected -----


def test_error_message_format() -> None:
    e = error_of("inn,s3://b/k,/x")
    assert str(e) == (
        "--fsx-stage=inn,s3://b/k,/x: position 1: expected KIND in|out|checkpoint, got 'inn'"
    )
    assert (e.directive, e.position) == ("inn,s3://b/k,/x", 1)


def test_empty_directive() -> None:
    e = error_of("")
    assert (e.position, e.reason) == (1, "expected KIND in|out|checkpoint, got ''")


def test_kind_is_case_sensitive() -> None:
    assert error_of("IN,s3://bkt/k,/x").position == 1


def test_missing_src() -> None:
    e = error_of("in")
    assert e.position == 3
    assert e.reason.startswith("expected ',SRC' after KIND")


def test_missing_dst() -> None:
    e = error_of("out,/x")
    assert e.position == 7
    assert e.reason.startswith("expected ',DST' after SRC")


def test_empty_src() -> None:
    e = error_of("in,,/x")
    assert e.position == 4
    assert e.reason.endswith("got nothing")


def test_in_src_must_be_s3() -> None:
    e = error_of("in,/x,/y")
    assert e.position == 4
    assert "s3://bucket/key" in e.reason


def test_out_dst_must_be_s3() -> None:
    e = error_of("out,/x,/y")
    assert e.position == 8
    assert e.reason.startswith("expected DST: an s3://")


def test_relative_path_is_rejected() -> None:
    e = error_of("in,s3://bkt/k,data/x")
    assert e.position == 15
    assert "got a relative path" in e.reason


def test_bucket_without_slash_is_rejected() -> None:
    e = error_of("in,s3://bkt,/x/")
    assert e.position == 12
    assert "s3://bkt/" in e.reason


def test_invalid_bucket_name_points_at_the_bucket() -> None:
    e = error_of("in,s3://Bad_Bucket/k,/x")
    assert e.position == 9
    assert "invalid bucket name" in e.reason


@pytest.mark.parametrize("key", ["../x", "a/./b", "a/.."])
def test_dot_segments_in_s3_keys_are_rejected(key: str) -> None:
    e = error_of(f"in,s3://bkt/{key},/x")
    assert "S3 key segment" in e.reason
    assert e.position == 13 + key.index(".")


def test_checkpoint_src_must_be_a_directory() -> None:
    e = error_of("checkpoint,/c,s3://bkt/c/")
    assert e.position == 14
    assert e.reason.startswith("expected SRC ending in '/'")


def test_checkpoint_dst_must_be_a_prefix() -> None:
    e = error_of("checkpoint,/c/,s3://bkt/c")
    assert e.position == 26
    assert e.reason.startswith("expected DST ending in '/'")


def test_prefix_src_needs_a_directory_dst() -> None:
    e = error_of("in,s3://bkt/p/,/x")
    assert e.position == 18
    assert "prefix or directory" in e.reason


def test_option_without_value() -> None:
    e = error_of("in,s3://bkt/k,/x,optional")
    assert (e.position, e.reason) == (
        18,
        "expected OPTION=VALUE (when, include, exclude, optional, keep, every), got 'optional'",
    )


def test_trailing_comma_expects_an_option() -> None:
    e = error_of("in,s3://bkt/k,/x,")
    assert e.position == 18
    assert e.reason.endswith("got nothing")


def test_unknown_option() -> None:
    e = error_of("in,s3://bkt/k,/x,mode=fast")
    assert e.position == 18
    assert e.reason.startswith("unknown option 'mode'")


def test_bad_when_value_points_at_the_value() -> None:
    e = error_of("out,/x,s3://bkt/x,when=never")
    assert (e.position, e.reason) == (24, "expected when=always|success|failure, got 'never'")


def test_when_only_for_out() -> None:
    e = error_of("checkpoint,/c/,s3://bkt/c/,when=success")
    assert e.position == 28
    assert "applies to 'out' only" in e.reason


def test_when_given_twice() -> None:
    e = error_of("out,/x,s3://bkt/x,when=success,when=failure")
    assert (e.position, e.reason) == (32, "option 'when' given twice")


def test_bad_optional_value() -> None:
    e = error_of("in,s3://bkt/k,/x,optional=maybe")
    assert (e.position, e.reason) == (27, "expected optional=yes|no|true|false, got 'maybe'")


def test_keep_sets_the_checkpoint_generations_kept() -> None:
    assert parse_directive("checkpoint,/c/,s3://bkt/c/,keep=3").keep == 3
    assert parse_directive("checkpoint,/c/,s3://bkt/c/").keep is None  # a plain sync


@pytest.mark.parametrize(
    ("text", "position", "reason"),
    [
        ("out,/o/,s3://bkt/o/,keep=2", 21, "option 'keep' applies to 'checkpoint' only"),
        (
            "checkpoint,/c/,s3://bkt/c/,keep=0",
            33,
            "expected keep=N (generations kept, 1 to 100), got '0'",
        ),
        (
            "checkpoint,/c/,s3://bkt/c/,keep=two",
            33,
            "expected keep=N (generations kept, 1 to 100), got 'two'",
        ),
        ("checkpoint,/c/,s3://bkt/c/,keep=2,keep=3", 35, "option 'keep' given twice"),
    ],
)
def test_bad_keep(text: str, position: int, reason: str) -> None:
    e = error_of(text)
    assert (e.position, e.reason) == (position, reason)


def test_empty_glob() -> None:
    e = error_of("in,s3://bkt/p/,/x/,include=")
    assert e.position == 28
    assert e.reason == "expected include=GLOB, got an empty GLOB"


def test_filters_need_a_prefix_source() -> None:
    e = error_of("in,s3://bkt/k,/x,include=*.h5")
    assert e.position == 18
    assert "needs a prefix or directory SRC" in e.reason


def test_nul_is_rejected_with_a_clear_error() -> None:
    e = error_of("in,s3://bkt/k,/x\x00y")
    assert (e.position, e.reason) == (17, "NUL character not allowed")
    assert "\\x00" in str(e)  # shown escaped, never raw


def test_control_characters_are_rejected() -> None:
    e = error_of("in,s3://bkt/k\n,/x")
    assert (e.position, e.reason) == (14, "control character U+000A not allowed")
    assert "\n" not in str(e)


# --- fuzzing ------------------------------------------------------------------------

_ALPHABET = st.sampled_from(list("inoutcheckpts3:/,\\%=ujxAa*.-_ bkté\x00\n"))


@given(st.text(_ALPHABET, max_size=60) | st.text(max_size=60))
def test_any_input_parses_or_fails_with_a_position_inside_the_text(text: str) -> None:
    try:
        parsed = parse_directive(text)
    except DirectiveError as exc:
        assert 1 <= exc.position <= len(text) + 1
        assert exc.directive == text
    else:
        assert isinstance(parsed, Directive)


@given(
    st.sampled_from(["in,s3://bkt/", "out,/fsx/", "checkpoint,/fsx/"]),
    st.text(max_size=30),
)
def test_fuzzed_tails_never_crash(head: str, tail: str) -> None:
    text = head + tail
    try:
        parse_directive(text)
    except DirectiveError as exc:
        assert 1 <= exc.position <= len(text) + 1


# --- SPANK transport ----------------------------------------------------------------


def test_spank_encoding_matches_the_plugin_contract() -> None:
    assert encode_spank_values(["in,s3://b/k,/x y", "out;é"]) == "in,s3://b/k,/x%20y;out%3B%C3%A9"
    assert decode_spank_values("in,s3://b/k,/x%20y;out%3B%C3%A9") == ["in,s3://b/k,/x y", "out;é"]


def test_empty_variable_means_no_directives() -> None:
    assert decode_spank_values("") == []


def test_non_utf8_value_names_the_directive() -> None:
    with pytest.raises(DirectiveError) as info:
        decode_spank_values("in,s3://b/k,/x;out,/a%FF,s3://b/k")
    assert str(info.value).startswith("SPANK_FSX_STAGE value 2: position 7:")
    assert "directive 2 is not valid UTF-8" in info.value.reason


def test_unencoded_byte_is_refused() -> None:
    with pytest.raises(DirectiveError) as info:
        decode_spank_values("in,s3://b/k,/x y")
    assert info.value.position == 15


def test_truncated_escape_is_refused() -> None:
    with pytest.raises(DirectiveError, match="value 1: position 4"):
        decode_spank_values("in,%2")


SAFE_OR_PERCENT = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~/:,=@+%"
_values = st.lists(st.text(), max_size=5).filter(lambda v: v != [""])


@given(_values)
def test_spank_values_round_trip(values: list[str]) -> None:
    assert decode_spank_values(encode_spank_values(values)) == values


@given(_values)
def test_no_value_can_forge_another(values: list[str]) -> None:
    encoded = encode_spank_values(values)
    items = encoded.split(";")
    assert len(items) == max(len(values), 1)
    for item, value in zip(items, values, strict=False):
        assert set(item) <= set(SAFE_OR_PERCENT)
        assert decode_spank_values(item) == ([value] if value else [])


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("90s", 90), ("30m", 1800), ("2h", 7200), ("1h30m", 5400), ("1d", 86400), ("5m30s", 330)],
)
def test_every_sets_the_seconds_between_checkpoint_flushes(value: str, seconds: int) -> None:
    d = parse_directive(f"checkpoint,/c/,s3://bkt/c/,every={value}")
    assert (d.every, d.keep) == (seconds, None)
    assert parse_directive("checkpoint,/c/,s3://bkt/c/").every is None  # end of job only


@pytest.mark.parametrize(
    ("text", "position", "reason"),
    [
        ("out,/o/,s3://bkt/o/,every=30m", 21, "option 'every' applies to 'checkpoint' only"),
        ("checkpoint,/c/,s3://bkt/c/,every=30", 36, "expected every=DURATION"),  # no unit
        ("checkpoint,/c/,s3://bkt/c/,every=30x", 36, "expected every=DURATION"),
        ("checkpoint,/c/,s3://bkt/c/,every=", 34, "expected every=DURATION"),
        ("checkpoint,/c/,s3://bkt/c/,every=0s", 34, "expected every=DURATION"),
        ("checkpoint,/c/,s3://bkt/c/,every=30m1h", 38, "expected every=DURATION"),  # order
        ("checkpoint,/c/,s3://bkt/c/,every=1m,every=2m", 37, "option 'every' given twice"),
    ],
)
def test_bad_every(text: str, position: int, reason: str) -> None:
    e = error_of(text)
    assert e.position == position and e.reason.startswith(reason), (e.position, e.reason)
    if reason.startswith("expected every="):
        assert "90s, 30m, 2h or 1h30m" in e.reason and e.reason.endswith(f"got '{text[33:]}'")
