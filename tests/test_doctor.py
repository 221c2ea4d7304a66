"""``fsx-stage doctor`` against the real single-node Slurm cluster.

Each test writes its own site config and runs ``python -m fsx_stage doctor`` as root with
the cluster's ``SLURM_CONF``. The instance metadata service is a loopback server started
here (``AWS_EC2_METADATA_SERVICE_ENDPOINT``, which botocore honours too): no test ever
sends traffic to 169.254.169.254.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from tests.testbed.cluster import SPANK_SO, SlurmCluster
from tests.testbed.ports import free_port

from fsx_stage.doctor import slurm

pytestmark = pytest.mark.slurm

ROLE = "compute-node-role"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY"


class FakeImds(BaseHTTPRequestHandler):
    """IMDSv2 as botocore and doctor use it: token, role name, the role's credentials."""

    def do_PUT(self) -> None:
        if self.path == "/latest/api/token":
            self._reply(200, "token-1234")
        else:
            self._reply(404, "")

    def do_GET(self) -> None:
        if self.headers.get("X-aws-ec2-metadata-token") != "token-1234":
            self._reply(401, "")
        elif self.path == "/latest/meta-data/iam/security-credentials/":
            self._reply(200, ROLE)
        elif self.path == f"/latest/meta-data/iam/security-credentials/{ROLE}":
            expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
            body = {
                "Code": "Success",
                "Type": "AWS-HMAC",
                "AccessKeyId": "ASIAEXAMPLEROLEKEY01",
                "SecretAccessKey": SECRET,
                "Token": "role-session-token",
                "Expiration": expires,
            }
            self._reply(200, json.dumps(body))
        else:
            self._reply(404, "")

    def _reply(self, status: int, body: str) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def imds() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeImds)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture
def dead_imds() -> str:
    """A loopback port nothing listens on."""
    return f"http://127.0.0.1:{free_port()}/"


def site_config(
    tmp_path: Path, *, budget: int = 200, scratch: Path | None = None, s3: str = ""
) -> Path:
    if scratch is None:
        scratch = tmp_path / "fsx"
        scratch.mkdir(exist_ok=True)
    path = tmp_path / "config.toml"
    path.write_text(
        f'scratch_roots = ["{scratch}/{{user}}/"]\n'
        f'state_dir = "{tmp_path / "state"}"\n'
        f'[log]\ndestination = "{tmp_path / "fsx-stage.log"}"\n'
        f"[timeouts]\nstage_in = {budget}\nflush = {budget}\n"
        f'[s3]\nregion = "us-east-1"\n{s3}'
    )
    return path


def credentials_file(tmp_path: Path) -> Path:
    path = tmp_path / "aws-credentials"
    path.write_text(
        f"[default]\naws_access_key_id = AKIAEXAMPLEDOCTOR001\naws_secret_access_key = {SECRET}\n"
    )
    path.chmod(0o600)
    return path


def doctor(
    cluster: SlurmCluster,
    config: Path,
    imds_endpoint: str,
    tmp_path: Path,
    python: str = sys.executable,
) -> tuple[int, dict[str, list[str]]]:
    """Run doctor; returns its exit status and the lines by status (ok, warn, FAIL)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        cluster.env,
        FSX_STAGE_CONFIG=str(config),
        AWS_EC2_METADATA_SERVICE_ENDPOINT=imds_endpoint,
        # No credentials but what the config names or the (fake) instance role gives.
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-credentials"),
        AWS_CONFIG_FILE=str(tmp_path / "no-config"),
    )
    proc = subprocess.run(
        [python, "-m", "fsx_stage", "doctor"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert SECRET not in proc.stdout + proc.stderr
    lines: dict[str, list[str]] = {"ok": [], "warn": [], "FAIL": []}
    for line in proc.stdout.splitlines():
        status, _, rest = line.partition("  ")
        lines[status.strip()].append(rest.strip())
    return proc.returncode, lines


def topics(lines: list[str]) -> set[str]:
    return {line.split(":", 1)[0] for line in lines}


def test_a_healthy_node_passes(slurm_cluster: SlurmCluster, tmp_path: Path, dead_imds: str) -> None:
    config = site_config(tmp_path, s3=f'credentials_file = "{credentials_file(tmp_path)}"\n')
    rc, lines = doctor(slurm_cluster, config, dead_imds, tmp_path)
    assert lines["FAIL"] == []
    assert rc == 0
    assert {
        "install",
        "config",
        "credentials",
        "imds",
        "PrologFlags",
        "PrologEpilogTimeout",
        "BatchStartTimeout",
        "Prolog",
        "Epilog",
        "plugstack",
        "sbatch",
    } <= topics(lines["ok"])
    assert any("shared-credentials-file" in line for line in lines["ok"])
    assert any("--fsx-stage" in line for line in lines["ok"])
    # The test bed's scratch is a local directory, not Lustre: worth a warning only.
    assert any(line.startswith("scratch ") and "not Lustre" in line for line in lines["warn"])


def test_a_broken_setup_fails_with_what_to_fix(
    slurm_cluster: SlurmCluster, tmp_path: Path, dead_imds: str
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o777)
    config = site_config(tmp_path, budget=3600, scratch=tmp_path / "missing")
    rc, lines = doctor(slurm_cluster, config, dead_imds, tmp_path)
    assert rc == 1
    failed = {line.split(":", 1)[0]: line for line in lines["FAIL"]}
    assert set(failed) == {
        "credentials",
        f"scratch {tmp_path}/missing/",
        "state dir",
        "PrologEpilogTimeout",
    }
    assert "PrologEpilogTimeout=3660" in failed["PrologEpilogTimeout"]
    assert "chmod go-w" in failed["state dir"]
    assert "credentials_file" in failed["credentials"]


def test_an_invalid_config_fails_and_slurm_is_still_checked(
    slurm_cluster: SlurmCluster, tmp_path: Path, dead_imds: str
) -> None:
    config = tmp_path / "config.toml"
    config.write_text('scratch_roots = ["/fsx/{user}/"]\n[s3]\nendpoint = "http://x"\n')
    rc, lines = doctor(slurm_cluster, config, dead_imds, tmp_path)
    assert rc == 1
    assert [line for line in lines["FAIL"] if line.startswith("config:")] == [
        f"config: {config}: s3.endpoint: unknown key: the hooks drain the node on every staged job"
    ]
    assert {"PrologFlags", "sbatch"} <= topics(lines["ok"])


def test_jobs_that_can_use_the_instance_role_fail(
    slurm_cluster: SlurmCluster, tmp_path: Path, imds: str
) -> None:
    rc, lines = doctor(slurm_cluster, site_config(tmp_path), imds, tmp_path)
    assert rc == 1
    assert any("resolve from iam-role" in line for line in lines["ok"])
    [imds_line] = [line for line in lines["FAIL"] if line.startswith("imds:")]
    assert f"non-root user nobody can get instance role {ROLE!r}" in imds_line
    assert "Restrict IMDS to root" in imds_line


def test_own_credentials_with_a_reachable_role_warn(
    slurm_cluster: SlurmCluster, tmp_path: Path, imds: str
) -> None:
    config = site_config(tmp_path, s3=f'credentials_file = "{credentials_file(tmp_path)}"\n')
    rc, lines = doctor(slurm_cluster, config, imds, tmp_path)
    assert rc == 0
    [imds_line] = [line for line in lines["warn"] if line.startswith("imds:")]
    assert "make sure that role has no S3 rights" in imds_line


def test_settings_name_the_missing_slurm_conf_lines(tmp_path: Path) -> None:
    """The slurm.conf rules on settings the shared test cluster cannot be given."""
    from fsx_stage.config import parse_config

    other = tmp_path / "site-prolog"
    other.write_text("#!/bin/sh\nexit 0\n")
    config = parse_config({"scratch_roots": ["/fsx/{user}/"]})
    conf = {
        "PrologFlags": "(null)",
        "PrologEpilogTimeout": "65534",
        "BatchStartTimeout": "10 sec",
        "Prolog": str(other),
        "Epilog": "(null)",
    }
    found = {f.topic: f for f in slurm.settings(config, conf)}
    assert found["PrologFlags"].status == "FAIL"
    assert "PrologFlags=Alloc" in found["PrologFlags"].message
    assert found["PrologEpilogTimeout"].status == "warn"
    assert "PrologEpilogTimeout=3660" in found["PrologEpilogTimeout"].message
    assert found["BatchStartTimeout"].status == "FAIL"
    assert found["Prolog"].status == "FAIL"
    assert "does not run fsx-stage prolog" in found["Prolog"].message
    assert "Epilog=/opt/fsx-stage/libexec/fsx-stage/epilog" in found["Epilog"].message
    # A site Prolog that calls fsx-stage's among its own work counts.
    other.write_text(
        "#!/bin/sh\n/usr/local/sbin/site-prolog\n/opt/fsx-stage/bin/fsx-stage prolog\n"
    )
    found = {f.topic: f for f in slurm.settings(config, conf)}
    assert found["Prolog"].status == "ok"


def test_an_installation_job_users_cannot_run_fails(
    slurm_cluster: SlurmCluster, tmp_path: Path, dead_imds: str
) -> None:
    """A venv in a root-only directory (as over a pyenv python under /root): the hooks'
    worker could not import anything after dropping to the job user."""
    private = tmp_path / "private"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(private)], check=True)
    private.chmod(0o700)
    [site_packages] = private.glob("lib/python3.*/site-packages")
    repo_site = next(p for p in sys.path if p.endswith("site-packages"))
    (site_packages / "repo.pth").write_text(f"import site; site.addsitedir({repo_site!r})\n")
    config = site_config(tmp_path, s3=f'credentials_file = "{credentials_file(tmp_path)}"\n')
    python = str(private / "bin" / "python")
    rc, lines = doctor(slurm_cluster, config, dead_imds, tmp_path, python=python)
    assert rc == 1
    [install] = [line for line in lines["FAIL"] if line.startswith("install:")]
    assert f"user nobody cannot run {python}" in install
    assert "PYTHON=" in install


def test_a_plugin_sbatch_does_not_load_fails(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    """The cluster's slurm.conf with another plugstack.conf: listed but `optional` and
    behind an include, then not listed at all (sbatch then has no --fsx-stage)."""
    included = tmp_path / "plugstack.d"
    included.mkdir()
    (included / "fsx-stage.conf").write_text(f"optional {SPANK_SO}\n")
    plugstack = tmp_path / "plugstack.conf"
    plugstack.write_text(f"# site plugins\ninclude {included}/*.conf\n")
    conf_text = slurm_cluster.layout.slurm_conf.read_text()
    slurm_conf = tmp_path / "slurm.conf"
    slurm_conf.write_text(
        "\n".join(
            f"PlugStackConfig={plugstack}" if line.startswith("PlugStackConfig=") else line
            for line in conf_text.splitlines()
        )
    )
    env = {**os.environ, "SLURM_CONF": str(slurm_conf)}
    found = {f.topic: f for f in slurm.plugin({"PlugStackConfig": str(plugstack)}, env)}
    assert found["plugstack"].status == "warn"
    assert "make it 'required'" in found["plugstack"].message
    assert found["sbatch"].status == "ok"
    plugstack.write_text("# nothing\n")
    found = {f.topic: f for f in slurm.plugin({"PlugStackConfig": str(plugstack)}, env)}
    assert found["plugstack"].status == "FAIL"
    assert "required /opt/fsx-stage/lib/fsx-stage/fsx_stage.so" in found["plugstack"].message
    assert found["sbatch"].status == "FAIL"
    assert "rebuild it" in found["sbatch"].message


def test_show_config_reads_both_slurm_generations() -> None:
    from fsx_stage.doctor.slurm import parse_show_config

    old = "Prolog                  = /opt/a,/opt/b\nPrologFlags             = Alloc\n"
    new = (
        "Epilog[0]               = /opt/e\n"
        "Prolog[0]               = /opt/a\n"
        "Prolog[1]               = /opt/b\n"
        "PrologFlags             = Alloc\n"
    )
    assert parse_show_config(old) == {"Prolog": "/opt/a,/opt/b", "PrologFlags": "Alloc"}
    assert parse_show_config(new) == {
        "Epilog": "/opt/e",
        "Prolog": "/opt/a,/opt/b",
        "PrologFlags": "Alloc",
    }
