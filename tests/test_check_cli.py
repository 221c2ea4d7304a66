"""``fsx-stage check SCRIPT``: what users run before submitting a job."""

from __future__ import annotations

import json
import os
import pwd
from pathlib import Path

import pytest

import fsx_stage.config
from fsx_stage.cli import main
from fsx_stage.cli.check import SAMPLE_JOB_ID
from fsx_stage.sbatch_script import read_options, split_line

ME = pwd.getpwuid(os.getuid()).pw_name

SITE = """
scratch_roots = ["/fsx/{user}/"]
[[s3.allow]]
bucket = "bkt"
prefix = "u/{user}/"
users = ["*"]
access = ["read", "write"]
"""


@pytest.fixture(autouse=True)
def no_site_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("FSX_STAGE_CONFIG", raising=False)
    monkeypatch.setattr(fsx_stage.config, "DEFAULT_CONFIG_PATH", tmp_path / "absent.toml")


@pytest.fixture
def site(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(SITE)
    monkeypatch.setenv("FSX_STAGE_CONFIG", str(path))
    return path


def script(tmp_path: Path, body: str, name: str = "job.sh") -> Path:
    path = tmp_path / name
    path.write_text(body)
    return path


def run(*argv: str | Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = main(["check", *map(str, argv)])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


# --- the sbatch header rules --------------------------------------------------------


def test_both_option_forms_and_the_header_block() -> None:
    options = read_options(
        "#!/bin/bash\n"
        "#SBATCH --fsx-stage=in,s3://bkt/a,/fsx/a\n"
        "\n"
        "# a comment\n"
        "   # an indented comment\n"
        "#SBATCH --time=5 --fsx-stage out,/fsx/b,s3://bkt/b\n"
        "echo first command\n"
        "#SBATCH --fsx-stage=in,s3://bkt/late,/fsx/late\n"
    )
    assert [(a.line, a.text) for a in options.directives] == [
        (2, "in,s3://bkt/a,/fsx/a"),
        (6, "out,/fsx/b,s3://bkt/b"),
    ]
    assert [(w.line, w.message) for w in options.warnings] == [
        (8, "#SBATCH line after the first command: sbatch ignores it")
    ]


def test_indented_sbatch_is_a_command_not_an_option() -> None:
    # sbatch only recognises '#SBATCH' at the start of a line; other lines starting
    # with '#' after whitespace are comments.
    options = read_options(" #SBATCH --fsx-stage=in,s3://bkt/a,/fsx/a\n")
    assert options.directives == []


def test_value_may_come_from_the_next_line() -> None:
    options = read_options("#SBATCH --fsx-stage\n#SBATCH in,s3://bkt/a,/fsx/a\n")
    assert [(a.line, a.text) for a in options.directives] == [(2, "in,s3://bkt/a,/fsx/a")]


@pytest.mark.parametrize(
    ("line", "args"),
    [
        (" --a=1 --b 2", ["--a=1", "--b", "2"]),
        (' "--x=a b" c', ["--x=a b", "c"]),
        (" '--x=a\"b'", ['--x=a"b']),
        (" --x=a # comment --y", ["--x=a"]),
        (" --x=a#b", ["--x=a"]),
        (" --x='#'", ["--x=#"]),
        (r" --x=a\ b", ["--x=a", "b"]),  # as in sbatch: '\' cannot escape a space
        (r" --x=a\\,b", [r"--x=a\,b"]),
        (r" --x=a\,b", ["--x=a,b"]),
        (r" '--x=a\'b'", ["--x=a'b"]),
        (" --a '' --b", ["--a"]),  # sbatch stops at an empty argument
    ],
)
def test_sbatch_line_splitting(line: str, args: list[str]) -> None:
    assert split_line(line) == (args, None)


def test_unmatched_quote_is_an_error() -> None:
    assert split_line(' --x="a') == ([], 'unmatched " (sbatch refuses this line)')


def test_job_name_account_and_array_from_the_header() -> None:
    options = read_options("#SBATCH -J train -Achem\n#SBATCH --array=3-9%2\n")
    assert (options.job_name, options.account, options.array) == ("train", "chem", "3-9%2")
    options = read_options("#SBATCH --job-name x --account=bio -a 1\n")
    assert (options.job_name, options.account, options.array) == ("x", "bio", "1")


# --- the command --------------------------------------------------------------------


def test_valid_script_prints_the_plan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = script(
        tmp_path,
        "#!/bin/bash\n"
        "#SBATCH --job-name=train\n"
        "#SBATCH --fsx-stage=in,s3://bkt/in/%x/,/fsx/%u/in/,include=*.h5\n"
        "#SBATCH --fsx-stage=checkpoint,/fsx/%u/ckpt/,s3://bkt/ckpt/%j/\n"
        "srun ./train\n",
    )
    status, out, err = run(path, capsys=capsys)
    assert status == 0
    assert err.startswith(f"{path}:3: warning: --fsx-stage=in,") and err.count("\n") == 1
    lines = out.splitlines()
    assert lines[0] == f"{path}: 2 directives valid (no site config: not checked)"
    assert lines[1] == f"job {SAMPLE_JOB_ID} (sample), user {ME}, account -, name train"
    assert lines[2].split() == ["STEP", "#", "LINE", "KIND", "SOURCE", "DESTINATION", "OPTIONS"]
    assert lines[3].split() == [
        "before", "1", "3", "in", "s3://bkt/in/train/", f"/fsx/{ME}/in/", "include=*.h5"
    ]  # fmt: skip
    assert lines[4].split() == [
        "before", "2", "4", "checkpoint", f"s3://bkt/ckpt/{SAMPLE_JOB_ID}/", f"/fsx/{ME}/ckpt/",
        "restore",
    ]  # fmt: skip
    assert lines[5].split()[:4] == ["after", "2", "4", "checkpoint"]


def test_every_error_is_reported_as_script_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = script(
        tmp_path,
        "#!/bin/bash\n"
        "#SBATCH --fsx-stage=inn,s3://b/k,/x\n"
        "#SBATCH --fsx-stage=in,s3://bkt/k,/x\n"
        "#SBATCH --fsx-stage=out,/x,s3://bkt/k,when=never\n",
    )
    status, out, err = run(path, capsys=capsys)
    assert status == 2
    assert out == ""
    assert err.splitlines() == [
        f"{path}:2: --fsx-stage=inn,s3://b/k,/x: position 1: expected KIND in|out|checkpoint, "
        "got 'inn'",
        f"{path}:4: --fsx-stage=out,/x,s3://bkt/k,when=never: position 24: "
        "expected when=always|success|failure, got 'never'",
    ]


def test_policy_errors_point_at_the_directive_line(
    tmp_path: Path, site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = script(
        tmp_path,
        "#SBATCH --fsx-stage=inn,x\n"
        f"#SBATCH --fsx-stage=in,s3://bkt/u/{ME}/a,/fsx/{ME}/a\n"
        f"#SBATCH --fsx-stage=in,s3://bkt/u/other/a,/fsx/{ME}/a\n"
        "#SBATCH --fsx-stage=out,/tmp/a,s3://bkt/u/%u/a\n",
    )
    status, _, err = run(path, capsys=capsys)
    assert status == 2
    lines = err.splitlines()
    assert [line.split(": ")[0] for line in lines] == [f"{path}:1", f"{path}:3", f"{path}:4"]
    assert f"reading s3://bkt/u/other/a is not allowed for user {ME}" in lines[1]
    assert lines[1].endswith(f"you may read: s3://bkt/u/{ME}/")
    assert lines[2].endswith(f"allowed: /fsx/{ME}/")


def test_policy_passes(tmp_path: Path, site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = script(tmp_path, "#SBATCH --fsx-stage=out,/fsx/%u/r/,s3://bkt/u/%u/r/,when=failure\n")
    status, out, _ = run(path, capsys=capsys)
    assert status == 0
    assert out.splitlines()[0] == f"{path}: 1 directive valid (policy of {site})"


def test_escaped_comma_hint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = script(tmp_path, "#SBATCH --fsx-stage=in,s3://bkt/a\\,b,/x/\n")
    status, _, err = run(path, capsys=capsys)
    assert status == 2
    assert "write '\\\\,' for an escaped comma" in err
    ok = script(tmp_path, "#SBATCH --fsx-stage=in,s3://bkt/a\\\\,b,/x/\n", "ok.sh")
    status, out, _ = run(ok, "--json", capsys=capsys)
    assert status == 0
    assert json.loads(out)["plan"]["entries"][0]["source"] == "s3://bkt/a,b"


def test_json_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = script(
        tmp_path,
        "#SBATCH --array=4-8\n"
        "#SBATCH --fsx-stage=in,s3://bkt/%A/%a,/fsx/in\n"
        "#SBATCH --fsx-stage=out,/fsx/o,s3://bkt/o,when=success\n",
    )
    status, out, _ = run(path, "--json", "--job-id", "77", "--user", ME, capsys=capsys)
    assert status == 0
    report = json.loads(out)
    assert report["valid"] is True
    assert report["policy_checked"] is False
    assert report["job"]["array_task_id"] == 4
    assert [d["line"] for d in report["directives"]] == [2, 3]
    assert report["stage_in"][0]["source"] == "s3://bkt/77/4"
    assert [e["index"] for e in report["flush"]["success"]] == [2]
    assert report["flush"]["failure"] == []


def test_json_output_with_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = script(tmp_path, "#SBATCH --fsx-stage=in,s3://bkt/%q,/x\n")
    status, out, err = run(path, "--json", capsys=capsys)
    assert status == 2
    report = json.loads(out)
    assert report["valid"] is False
    assert report["errors"][0]["line"] == 1
    assert "unknown pattern '%q'" in report["errors"][0]["message"]
    assert err.startswith(f"{path}:1: ")


def test_job_name_defaults_to_the_script_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = script(tmp_path, "#SBATCH --fsx-stage=in,s3://bkt/%x,/fsx/x\n", "run.sbatch")
    _, out, _ = run(path, "--json", capsys=capsys)
    assert json.loads(out)["plan"]["entries"][0]["source"] == "s3://bkt/run.sbatch"
    _, out, _ = run(path, "--json", "--job-name", "given", capsys=capsys)
    assert json.loads(out)["plan"]["entries"][0]["source"] == "s3://bkt/given"


def test_script_without_directives(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(script(tmp_path, "#!/bin/sh\necho hi\n"), capsys=capsys)
    assert status == 0
    assert "no --fsx-stage directives" in out


def test_unreadable_script(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(tmp_path / "missing.sh", capsys=capsys)
    assert status == 2
    assert "cannot read" in err


def test_unknown_user(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(script(tmp_path, ""), "--user", "no-such-user-x", capsys=capsys)
    assert status == 2
    assert "unknown user 'no-such-user-x'" in err


def test_invalid_site_config_is_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("scratch_roots = []\n")
    monkeypatch.setenv("FSX_STAGE_CONFIG", str(bad))
    status, _, err = run(script(tmp_path, ""), capsys=capsys)
    assert status == 1
    assert "site configuration" in err


def test_non_utf8_bytes_in_a_directive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "latin1.sh"
    path.write_bytes(b"#SBATCH --fsx-stage=in,s3://bkt/caf\xe9,/fsx/x\n")
    status, _, err = run(path, capsys=capsys)
    assert status == 2
    assert err == (
        f"{path}:1: --fsx-stage=in,s3://bkt/caf\\udce9,/fsx/x: position 16: "
        "invalid character U+DCE9 (not valid UTF-8)\n"
    )


# --- filters that select everything -------------------------------------------------


def test_an_include_before_any_exclude_is_a_warning_not_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = script(tmp_path, "#SBATCH --fsx-stage=in,s3://bkt/d/,/fsx/d/,include=*.h5\n")
    status, out, err = run(path, capsys=capsys)
    assert status == 0
    assert "1 directive valid" in out
    assert err == (
        f"{path}:1: warning: --fsx-stage=in,s3://bkt/d/,/fsx/d/,include=*.h5: position 24: "
        "include=*.h5 has no effect: everything is selected until an exclude= removes "
        "something (include only matters after an exclude); to copy only *.h5, write "
        "exclude=*,include=*.h5\n"
    )


@pytest.mark.parametrize(
    "options",
    ["exclude=*,include=*.h5", "exclude=tmp/*", "exclude=*,include=a,include=b", ""],
)
def test_filters_that_select_something_give_no_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], options: str
) -> None:
    value = "in,s3://bkt/d/,/fsx/d/" + (f",{options}" if options else "")
    status, _, err = run(script(tmp_path, f"#SBATCH --fsx-stage={value}\n"), capsys=capsys)
    assert (status, err) == (0, "")


def test_every_include_before_the_first_exclude_is_named(
    capsys: pytest.CaptureFixture[str],
) -> None:
    value = "in,s3://bkt/d/,/fsx/d/,include=a\\,b,include=c,exclude=*,include=d"
    status, _, err = run("--directive", value, capsys=capsys)
    assert status == 0
    warnings = err.splitlines()
    assert [w.split(": ")[2] for w in warnings] == ["position 24", "position 37"]
    assert "write exclude=*,include=a\\,b" in warnings[0]
    assert "include=c has no effect" in warnings[1]


# --- check --directive: what sbatch, salloc and srun run (the SPANK plugin) ----------


def test_directive_values_valid_print_the_plan(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(
        "--directive",
        "in,s3://bkt/u/%u/in/,/fsx/%u/in/",
        "--directive",
        "out,/fsx/%u/%x/,s3://bkt/u/%u/%x/,when=success",
        "--job-name",
        "train",
        capsys=capsys,
    )
    assert (status, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == f"--fsx-stage: 2 directives valid (policy of {site})"
    assert lines[4].split()[4:6] == [f"/fsx/{ME}/train/", f"s3://bkt/u/{ME}/train/"]


def test_directive_values_report_every_problem_in_order_with_the_check_messages(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    values = [
        "in,data/,/fsx/%u/d/",
        f"in,s3://bkt/u/{ME}/a,/fsx/{ME}/a",
        "out,/fsx/%u/r/,s3://bkt/u/%u/r/,when=sucess",
        "out,/fsx/other/r/,s3://bkt/u/%u/r/",
        "in,s3://other/k,/fsx/%u/k",
        "in,s3://bkt/a\\,/fsx/%u/k",
    ]
    status, out, err = run(*(a for v in values for a in ("--directive", v)), capsys=capsys)
    assert (status, out) == (2, "")
    assert err.splitlines() == [
        "--fsx-stage=in,data/,/fsx/%u/d/: position 4: expected SRC: an s3://bucket/key or "
        "s3://bucket/prefix/ URL",
        "--fsx-stage=out,/fsx/%u/r/,s3://bkt/u/%u/r/,when=sucess: position 38: "
        "expected when=always|success|failure, got 'sucess'",
        f"--fsx-stage=out,/fsx/other/r/,s3://bkt/u/%u/r/: /fsx/other/r/ is outside your "
        f"scratch roots; allowed: /fsx/{ME}/",
        f"--fsx-stage=in,s3://other/k,/fsx/%u/k: reading s3://other/k is not allowed for user "
        f"{ME}; you may read: s3://bkt/u/{ME}/",
        "--fsx-stage=in,s3://bkt/a\\,/fsx/%u/k: position 25: expected ',DST' after SRC: DST "
        "is an absolute path (ending in '/' for a directory)",
    ]


def test_directive_values_without_a_site_config_check_the_grammar_only(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, _ = run("--directive", "in,s3://any/k,/anywhere/k", capsys=capsys)
    assert status == 0
    assert out.startswith("--fsx-stage: 1 directive valid (no site config: not checked)")


ACCOUNT_SITE = """
scratch_roots = ["/fsx/{user}/"]
[[s3.allow]]
bucket = "chem"
accounts = ["chem"]
access = ["read"]
"""


def test_a_refusal_an_account_could_lift_is_a_warning_when_the_account_is_unknown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """sbatch's default account is only known to the controller: the prolog decides."""
    path = tmp_path / "site.toml"
    path.write_text(ACCOUNT_SITE)
    monkeypatch.setenv("FSX_STAGE_CONFIG", str(path))
    value = "in,s3://chem/k,/fsx/%u/k"
    status, _, err = run("--directive", value, capsys=capsys)
    assert status == 0
    assert err.startswith(f"warning: --fsx-stage={value}: reading s3://chem/k is not allowed")
    assert "unless your job's account allows it" in err
    status, _, err = run("--directive", value, "--account", "bio", capsys=capsys)
    assert status == 2
    assert err.startswith(f"--fsx-stage={value}: reading s3://chem/k is not allowed for user")
    status, _, err = run("--directive", "in,s3://bio/k,/fsx/%u/k", capsys=capsys)
    assert status == 2  # no account may read s3://bio
    assert "not allowed" in err and "warning" not in err


def test_an_account_template_leaves_every_policy_refusal_to_the_prolog(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "site.toml"
    path.write_text('scratch_roots = ["/fsx/{account}/"]\n')
    monkeypatch.setenv("FSX_STAGE_CONFIG", str(path))
    status, _, err = run("--directive", "out,/fsx/chem/r,s3://bkt/r", capsys=capsys)
    assert status == 0
    assert err.startswith("warning: --fsx-stage=out,/fsx/chem/r,s3://bkt/r: /fsx/chem/r is outside")
    status, _, err = run("--directive", "out,r,s3://bkt/r", capsys=capsys)
    assert status == 2  # the grammar does not depend on the account
    assert "got a relative path" in err


@pytest.mark.parametrize(
    "argv",
    [[], ["job.sh", "--directive", "in,s3://b/k,/x"], ["--directive", "in,s3://b/k,/x", "--json"]],
)
def test_script_or_directives_not_both(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(*argv, capsys=capsys)
    assert (status, out) == (2, "")
    assert err.startswith("fsx-stage check: ")


def test_directive_values_with_a_broken_site_config_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not 2: the SPANK plugin refuses a job only for exit 2 (its directives), and warns."""
    monkeypatch.setenv("FSX_STAGE_CONFIG", str(tmp_path / "missing.toml"))
    status, _, err = run("--directive", "in,s3://b/k,/x", capsys=capsys)
    assert status == 1
    assert "site configuration" in err
