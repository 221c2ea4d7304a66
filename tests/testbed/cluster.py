"""A real single-node Slurm cluster (Debian packages) living in one directory.

Everything the cluster needs (munge key and socket, slurm.conf, plugstack.conf,
controller state, slurmd spool, logs, pid files, the Prolog/Epilog wrappers)
lives in ``DIR``; nothing is written to /etc. The daemons run as root on free
loopback ports and are stopped by pid.

The Prolog/Epilog configured in slurm.conf are small wrappers in ``DIR/hooks``
that append one record line per invocation to ``DIR/hook-record.log`` (hook
name, job id and the raw ``SPANK_FSX_STAGE``: a test-bed observation point
only), export ``FSX_STAGE_HOME`` (this repository's venv), ``FSX_STAGE_CONFIG``
(``DIR/fsx-stage.toml``) and ``SLURM_CONF``, then ``exec`` the product hooks
``plugin/prolog`` / ``plugin/epilog``.

Two flavours (``mode``):

- ``"prolog"`` (default, ``$TESTBED/slurm``): the Prolog/Epilog mode above, every daemon
  as root.
- ``"burst_buffer"`` (``$TESTBED/slurm-bb``): ``BurstBufferType=burst_buffer/lua`` with
  ``slurm-conf-examples/burst_buffer.lua`` and ``burst_buffer.conf`` (directive
  ``SBATCH --fsx-stage``), no Prolog/Epilog, and ``SlurmUser=slurm``: slurmctld and the
  lua hooks run as the unprivileged ``slurm`` user (created if missing), which reaches
  root only through one sudo rule (``/etc/sudoers.d/fsx-stage-testbed-*``, the only file
  written outside ``DIR``) for exactly ``DIR/hooks/fsx-stage-bb bb ...``; that wrapper
  sets the test-bed environment and execs ``fsx-stage bb``.

``plugstack.conf`` gives the SPANK plugin the submit-time checker (``fsx_stage=`` the
hooks' ``fsx-stage``, ``config=`` ``DIR/fsx-stage.toml``), so sbatch, salloc and srun refuse
what the site policy refuses. ``slurm-nocheck.conf`` is the same cluster seen by a client
whose plugstack (``plugstack-nocheck.conf``) loads the plugin without the checker
(:meth:`SlurmCluster.without_submit_check`): the shape check and the transport only, for
tests of the transport and of the Prolog as the point that enforces the policy.

CLI: ``python -m tests.testbed.cluster up|down|status [--dir DIR] [--mode MODE]``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.testbed.ports import free_port
from tests.testbed.server import pid_alive, read_pid

REPO_ROOT = Path(__file__).resolve().parents[2]
# FSX_STAGE_SPANK_SO: another build of the plugin (the 24.11 chroot's: tests/testbed/slurm24.sh).
SPANK_SO = Path(os.environ.get("FSX_STAGE_SPANK_SO") or REPO_ROOT / "spank" / "fsx_stage.so")
PLUGIN_DIR = REPO_ROOT / "plugin"
SBIN = Path("/usr/sbin")
BIN = Path("/usr/bin")
PARTITION = "debug"
RECORD_FIELDS = 4  # hook, job id, "set"/"unset", raw value
CONF_EXAMPLES = REPO_ROOT / "slurm-conf-examples"
MODES = ("prolog", "burst_buffer")
SLURM_USER = "slurm"  # SlurmUser of the burst_buffer flavour
SUDOERS_DIR = Path("/etc/sudoers.d")


def default_dir(mode: str = "prolog") -> Path:
    """``$TESTBED/slurm`` (``slurm-bb`` for the burst_buffer mode), TESTBED defaulting to
    the repository's ``.testbed``."""
    testbed = os.environ.get("TESTBED") or str(REPO_ROOT / ".testbed")
    return Path(testbed) / ("slurm-bb" if mode == "burst_buffer" else "slurm")


def repo_venv() -> Path:
    """The venv the hooks run ``fsx-stage`` from.

    ``$FSX_STAGE_HOME`` when set, else the running venv, else ``REPO/.venv``. The
    hooks drop privileges to the job user, so its interpreter must be readable
    by every user (a venv over a python under /root, e.g. pyenv, is not).
    """
    override = os.environ.get("FSX_STAGE_HOME")
    if override:
        return Path(override)
    if sys.prefix != sys.base_prefix:
        return Path(sys.prefix)
    return REPO_ROOT / ".venv"


def private_interpreter_dir(venv: Path) -> Path | None:
    """The first directory on the path to ``venv``'s interpreter that other users cannot
    traverse (e.g. /root for a pyenv python), or None when every user can run it.

    The hooks drop privileges to the job user; an interpreter such a user cannot read
    fails on its first lazy standard-library import.
    """
    target = (venv / "bin" / "python3").resolve()
    for directory in reversed(target.parents):
        if not directory.stat().st_mode & 0o001:
            return directory
    return None


def hooks_home(venv: Path, directory: Path) -> Path:
    """The ``FSX_STAGE_HOME`` the hooks get: ``venv`` when every user can run its python.

    Otherwise (e.g. a venv over a pyenv python under /root) a thin venv in
    ``directory`` over the system python of the same version (/usr/bin/python3.X),
    which loads ``venv``'s site-packages (the same packages, editable install
    included) and has its own ``bin/fsx-stage``. Without such a python, ``venv``
    is returned and the hooks will fail after dropping privileges (``up`` warns).
    """
    lib_dirs = sorted((venv / "lib").glob("python3.*"))
    if private_interpreter_dir(venv) is None or len(lib_dirs) != 1:
        return venv
    version = lib_dirs[0].name.removeprefix("python")
    system_python = Path(f"/usr/bin/python{version}")
    if not system_python.exists():
        return venv
    python = directory / "bin" / "python3"
    if not python.exists():
        _run([str(system_python), "-m", "venv", "--without-pip", str(directory)], os.environ)
    site_packages = directory / "lib" / f"python{version}" / "site-packages"
    source = lib_dirs[0] / "site-packages"
    _write_text(
        site_packages / "fsx_stage_repo_venv.pth",
        f"import site; site.addsitedir({str(source)!r})\n",
    )
    _write_text(
        directory / "bin" / "fsx-stage",
        f"#!{python}\nimport sys\n\nfrom fsx_stage.cli import main\n\nsys.exit(main())\n",
        mode=0o755,
    )
    return directory


@dataclass(frozen=True)
class HookRecord:
    """One Prolog/Epilog invocation seen by the test-bed wrapper."""

    hook: str
    job_id: int
    value: str | None  # raw SPANK_FSX_STAGE; None when it was unset


@dataclass(frozen=True)
class ClusterLayout:
    """Where every file of a cluster directory lives."""

    root: Path

    @property
    def slurm_conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def plugstack_conf(self) -> Path:
        return self.root / "plugstack.conf"

    @property
    def slurm_nocheck_conf(self) -> Path:
        """slurm.conf for clients without the submit-time check (its own plugstack)."""
        return self.root / "slurm-nocheck.conf"

    @property
    def plugstack_nocheck_conf(self) -> Path:
        return self.root / "plugstack-nocheck.conf"

    @property
    def munge_dir(self) -> Path:
        return self.root / "munge"

    @property
    def munge_key(self) -> Path:
        return self.munge_dir / "munge.key"

    @property
    def munge_socket(self) -> Path:
        return self.munge_dir / "munge.socket.2"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def spool_dir(self) -> Path:
        return self.root / "spool"

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def hooks_dir(self) -> Path:
        return self.root / "hooks"

    @property
    def jobs_dir(self) -> Path:
        return self.root / "jobs"

    @property
    def hook_record_log(self) -> Path:
        return self.root / "hook-record.log"

    @property
    def fsx_stage_config(self) -> Path:
        return self.root / "fsx-stage.toml"

    @property
    def hooks_venv(self) -> Path:
        """A venv job users can run, made only when the repository's venv is private."""
        return self.root / "hooks-venv"

    @property
    def bb_wrapper(self) -> Path:
        """The one command SlurmUser may run as root (burst_buffer mode)."""
        return self.hooks_dir / "fsx-stage-bb"

    @property
    def bb_paths_dir(self) -> Path:
        """Where ``fsx-stage bb data_in`` leaves each job's environment for slurm_bb_paths."""
        return self.root / "bb-paths"

    @property
    def sudoers_file(self) -> Path:
        digest = hashlib.sha256(str(self.root).encode()).hexdigest()[:12]
        return SUDOERS_DIR / f"fsx-stage-testbed-{digest}"

    @property
    def aws_dir(self) -> Path:
        """Optional ``credentials``/``config`` for the hooks (root's ~/.aws on a real node)."""
        return self.root / "aws"

    def pid_file(self, daemon: str) -> Path:
        return self.run_dir / f"{daemon}.pid"

    def log_file(self, daemon: str) -> Path:
        return self.log_dir / f"{daemon}.log"

    def hook_script(self, hook: str) -> Path:
        return self.hooks_dir / hook


DAEMONS = ("munged", "slurmctld", "slurmd")


class ClusterError(RuntimeError):
    """The cluster could not be brought up, or a Slurm command failed."""


class SlurmCluster:
    """A single-node Slurm cluster rooted at ``directory``."""

    def __init__(
        self,
        directory: Path | None = None,
        mode: str = "prolog",
        *,
        client_conf: Path | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
        self.mode = mode
        self.layout = ClusterLayout((directory or default_dir(mode)).resolve())
        self.node_name = socket.gethostname().split(".")[0]
        # The slurm.conf client commands read (another plugstack.conf); default slurm.conf.
        self.client_conf = client_conf

    def without_submit_check(self) -> SlurmCluster:
        """This cluster, its client commands loading the plugin without the checker."""
        return SlurmCluster(self.layout.root, self.mode, client_conf=self.layout.slurm_nocheck_conf)

    @property
    def burst_buffer(self) -> bool:
        return self.mode == "burst_buffer"

    # -- environment ---------------------------------------------------------------

    @property
    def env(self) -> dict[str, str]:
        """Variables a Slurm client command needs to talk to this cluster."""
        return {"SLURM_CONF": str(self.client_conf or self.layout.slurm_conf)}

    def command_env(self) -> dict[str, str]:
        """The current environment plus :attr:`env`, for subprocesses."""
        return {**os.environ, **self.env}

    # -- life cycle -----------------------------------------------------------------

    def pids(self) -> dict[str, int | None]:
        """The live pid of each daemon, None when it is not running."""
        result: dict[str, int | None] = {}
        for daemon in DAEMONS:
            pid = read_pid(self.layout.pid_file(daemon))
            result[daemon] = pid if pid is not None and pid_alive(pid) else None
        return result

    def is_running(self) -> bool:
        """True when all three daemons of this directory are alive."""
        return all(pid is not None for pid in self.pids().values())

    def up(self, timeout: float = 60.0) -> bool:
        """Start the cluster unless it runs already; wait until the node is idle.

        Returns True when this call started at least one daemon, False when a live
        cluster was reused as it is.
        """
        if not SPANK_SO.is_file():
            raise ClusterError(f"{SPANK_SO} is missing: run `make spank` first")
        pids = self.pids()
        if all(pid is not None for pid in pids.values()):
            self.write_hook_wrappers()
            self.write_plugstacks()
            self.ensure_node_usable(timeout)
            return False
        if pids["slurmctld"] is None or pids["slurmd"] is None:
            # A half-dead cluster: restart it whole with a fresh config.
            self.down()
            self._prepare()
        self._start_munged()
        self._start_slurm_daemon("slurmctld", timeout)
        self._start_slurm_daemon("slurmd", timeout)
        self.ensure_node_usable(timeout)
        return True

    def down(self, timeout: float = 30.0) -> None:
        """Stop the daemons of this directory by pid (TERM, then KILL) and wait."""
        for daemon in reversed(DAEMONS):
            pid = read_pid(self.layout.pid_file(daemon))
            if pid is not None and pid_alive(pid):
                _stop_pid(pid, timeout)
            with contextlib.suppress(FileNotFoundError):
                self.layout.pid_file(daemon).unlink()

    # -- configuration ----------------------------------------------------------------

    def _prepare(self) -> None:
        """Create the directory tree, the munge key and every config file."""
        layout = self.layout
        layout.root.mkdir(parents=True, exist_ok=True)
        # Job users traverse these; slurmd runs the hooks with the log dir as cwd
        # (0755 like Debian's /var/log/slurm).
        public = (layout.root, layout.spool_dir, layout.hooks_dir, layout.jobs_dir)
        for path in (*public, layout.munge_dir, layout.log_dir):
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(0o755)
        for path in (layout.state_dir, layout.run_dir):
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(0o700)
        if not layout.munge_key.is_file():
            fd = os.open(layout.munge_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
            with os.fdopen(fd, "wb") as key:
                key.write(os.urandom(1024))
        if not any(layout.state_dir.iterdir()):
            # Fresh controller state: job ids start over, so must the records.
            _write_text(layout.hook_record_log, "")
        layout.hook_record_log.touch(mode=0o644)
        self.write_hook_wrappers()
        _write_text(layout.slurm_conf, self.render_slurm_conf(free_port(), free_port()))
        self.write_plugstacks()
        if self.burst_buffer:
            self._prepare_burst_buffer()
        if slurm_version() >= (24, 5):
            # No cgroup interaction at all (linuxproc tracking, no task plugin);
            # `disabled` exists from 24.05 on, 22.05 never reads cgroup.conf here.
            _write_text(layout.root / "cgroup.conf", "CgroupPlugin=disabled\n")

    def _prepare_burst_buffer(self) -> None:
        """SlurmUser=slurm owns the controller's directories; burst_buffer.conf and .lua
        next to slurm.conf; the sudo rule for the one root command."""
        layout = self.layout
        ensure_system_user(SLURM_USER)
        for path in (layout.state_dir, layout.log_dir):
            shutil.chown(path, user=SLURM_USER, group=SLURM_USER)
        layout.run_dir.chmod(0o755)  # slurmctld (as slurm) removes its pid file
        layout.bb_paths_dir.mkdir(parents=True, exist_ok=True)
        layout.bb_paths_dir.chmod(0o755)
        for daemon in ("slurmctld",):
            log = layout.log_file(daemon)
            log.touch(mode=0o644)
            shutil.chown(log, user=SLURM_USER, group=SLURM_USER)
        _write_text(layout.root / "burst_buffer.conf", render_burst_buffer_conf())
        _write_text(
            layout.root / "burst_buffer.lua",
            render_burst_buffer_lua(layout.bb_wrapper, layout.bb_paths_dir),
        )
        self.write_sudoers()

    def write_sudoers(self) -> None:
        """``/etc/sudoers.d/fsx-stage-testbed-*``: SlurmUser may run exactly the bb wrapper."""
        if not SUDOERS_DIR.is_dir():
            SUDOERS_DIR.mkdir(mode=0o755)
        _write_text(
            self.layout.sudoers_file,
            render_sudoers(SLURM_USER, self.layout.bb_wrapper),
            mode=0o440,
        )

    def render_slurm_conf(self, slurmctld_port: int, slurmd_port: int) -> str:
        """slurm.conf for this directory (valid for Slurm 22.05 and 24.11)."""
        layout = self.layout
        node_line = _node_line(self.node_name)
        # The burst_buffer mode keeps the Prolog/Epilog: they stage the jobs the burst
        # buffer does not see (--fsx-stage on the sbatch command line) and skip the rest.
        hooks = [
            f"Prolog={layout.hook_script('prolog')}",
            f"Epilog={layout.hook_script('epilog')}",
        ]
        scheduler = "batch_sched_delay=0"
        if self.burst_buffer:
            cluster_name, slurm_user = "fsxstagebb", SLURM_USER
            hooks.append("BurstBufferType=burst_buffer/lua")
            # A staged-in job starts at the next scheduling pass: keep them frequent.
            scheduler += ",sched_interval=2,bf_interval=2"
        else:
            cluster_name, slurm_user = "fsxstage", "root"
        return "\n".join(
            [
                "# Generated by tests/testbed/cluster.py: a single-node test cluster.",
                f"ClusterName={cluster_name}",
                f"SlurmctldHost={self.node_name}(127.0.0.1)",
                f"SlurmUser={slurm_user}",
                "SlurmdUser=root",
                f"SlurmctldPort={slurmctld_port}",
                f"SlurmdPort={slurmd_port}",
                "AuthType=auth/munge",
                "CredType=cred/munge",
                # A requeued job waits cred_expire+1 s before it may start again.
                f"AuthInfo=socket={layout.munge_socket},cred_expire=10",
                f"StateSaveLocation={layout.state_dir}",
                f"SlurmdSpoolDir={layout.spool_dir}",
                f"SlurmctldPidFile={layout.pid_file('slurmctld')}",
                f"SlurmdPidFile={layout.pid_file('slurmd')}",
                f"SlurmctldLogFile={layout.log_file('slurmctld')}",
                f"SlurmdLogFile={layout.log_file('slurmd')}",
                "SlurmctldDebug=info",
                "SlurmdDebug=info",
                "ProctrackType=proctrack/linuxproc",
                "TaskPlugin=task/none",
                "JobAcctGatherType=jobacct_gather/none",
                "AccountingStorageType=accounting_storage/none",
                "JobCompType=jobcomp/none",
                "SelectType=select/cons_tres",
                "SelectTypeParameters=CR_Core",
                "SchedulerType=sched/backfill",
                f"SchedulerParameters={scheduler}",
                "MpiDefault=none",
                "ReturnToService=2",
                "InactiveLimit=0",
                "KillWait=5",
                "MinJobAge=600",
                "PrologFlags=Alloc",
                *hooks,
                "PrologEpilogTimeout=300",
                "BatchStartTimeout=300",
                f"PlugStackConfig={layout.plugstack_conf}",
                f"{node_line} NodeAddr=127.0.0.1 State=UNKNOWN",
                f"PartitionName={PARTITION} Nodes={self.node_name} Default=YES"
                " MaxTime=INFINITE State=UP",
                "",
            ]
        )

    def hooks_home(self) -> Path:
        """The ``FSX_STAGE_HOME`` the hook wrappers export (see :func:`hooks_home`)."""
        return hooks_home(repo_venv(), self.layout.hooks_venv)

    def write_hook_wrappers(self) -> None:
        """(Re)write the Prolog/Epilog wrappers; safe while the cluster runs."""
        self.layout.hooks_dir.mkdir(parents=True, exist_ok=True)
        for hook in ("prolog", "epilog"):
            text = render_hook_wrapper(
                hook=hook,
                record_log=self.layout.hook_record_log,
                fsx_stage_home=self.hooks_home(),
                fsx_stage_config=self.layout.fsx_stage_config,
                slurm_conf=self.layout.slurm_conf,
                aws_dir=self.layout.aws_dir,
                product_hook=PLUGIN_DIR / hook,
            )
            _write_text(self.layout.hook_script(hook), text, mode=0o755)
        if self.burst_buffer:
            text = render_bb_wrapper(
                fsx_stage_home=self.hooks_home(),
                fsx_stage_config=self.layout.fsx_stage_config,
                slurm_conf=self.layout.slurm_conf,
                aws_dir=self.layout.aws_dir,
            )
            _write_text(self.layout.bb_wrapper, text, mode=0o755)

    def write_plugstacks(self) -> None:
        """plugstack.conf with the checker, and the checker-less client's two files (every
        client command reads them anew: safe while the cluster runs)."""
        layout = self.layout
        checker = self.hooks_home() / "bin" / "fsx-stage"
        _write_text(
            layout.plugstack_conf, render_plugstack_conf(SPANK_SO, checker, layout.fsx_stage_config)
        )
        _write_text(layout.plugstack_nocheck_conf, render_plugstack_conf(SPANK_SO))
        lines = [
            f"PlugStackConfig={layout.plugstack_nocheck_conf}"
            if line.startswith("PlugStackConfig=")
            else line
            for line in layout.slurm_conf.read_text().splitlines()
        ]
        _write_text(layout.slurm_nocheck_conf, "\n".join(lines) + "\n")

    # -- daemons -------------------------------------------------------------------------

    def _start_munged(self) -> None:
        if self.pids()["munged"] is not None:
            return
        layout = self.layout
        _run(
            [
                str(SBIN / "munged"),
                "--force",  # running as root is intended here
                f"--socket={layout.munge_socket}",
                f"--key-file={layout.munge_key}",
                f"--pid-file={layout.pid_file('munged')}",
                f"--log-file={layout.log_file('munged')}",
                f"--seed-file={layout.run_dir / 'munged.seed'}",
            ],
            env=dict(os.environ),
        )

    def kill_daemon(self, daemon: str, timeout: float = 30.0) -> int:
        """SIGKILL ``daemon`` (no state save, no goodbye: what a crash leaves) and wait
        until the process is gone; return its pid.

        SIGKILL is delivered asynchronously: a restart that looked right after
        ``os.kill`` would still see the dying process and start nothing.
        """
        pid = self.pids()[daemon]
        if pid is None:
            raise ClusterError(f"{daemon} is not running")
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while pid_alive(pid):
            if time.monotonic() > deadline:
                raise ClusterError(f"{daemon} {pid} survived SIGKILL for {timeout}s")
            time.sleep(0.05)
        return pid

    def restart_daemon(self, daemon: str, timeout: float = 60.0) -> None:
        """Start ``daemon`` again with the same config (after a test killed it)."""
        self._start_slurm_daemon(daemon, timeout)
        if self.pids()[daemon] is None:
            log = self.layout.log_file(daemon)
            raise ClusterError(f"{daemon} exited right after its restart; see {log}")

    def _start_daemon(self, daemon: str, timeout: float) -> None:
        if daemon == "munged":
            self._start_munged()
        else:
            self._start_slurm_daemon(daemon, timeout)

    def _start_slurm_daemon(self, daemon: str, timeout: float) -> None:
        pid_file = self.layout.pid_file(daemon)
        if self.pids()[daemon] is not None:
            return
        with contextlib.suppress(FileNotFoundError):
            pid_file.unlink()
        _run([str(SBIN / daemon), "-f", str(self.layout.slurm_conf)], env=self.command_env())
        deadline = time.monotonic() + timeout
        while read_pid(pid_file) is None:
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"{daemon} wrote no pid file; see {self.layout.log_file(daemon)}"
                )
            time.sleep(0.05)

    def node_state(self) -> str | None:
        """The node state as sinfo reports it (e.g. ``idle``), None when unreachable."""
        proc = subprocess.run(
            [str(BIN / "sinfo"), "-h", "-N", "-o", "%T"],
            env=self.command_env(),
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0 or not proc.stdout.strip():
            return None
        return proc.stdout.split()[0]

    def ensure_node_usable(self, timeout: float = 60.0) -> None:
        """Wait for the node to accept jobs; resume it if an earlier run drained it."""
        deadline = time.monotonic() + timeout
        state: str | None = None
        while time.monotonic() < deadline:
            for daemon, pid in self.pids().items():
                if pid is None:  # an earlier test killed it and failed before restarting
                    print(f"testbed: {daemon} was not running; starting it", file=sys.stderr)
                    self._start_daemon(daemon, timeout)
            state = self.node_state()
            if state is not None and state.rstrip("~#!%$@^-") in {"idle", "mixed", "allocated"}:
                return
            if state is not None and ("drain" in state or state.startswith("down")):
                self.scontrol("update", f"NodeName={self.node_name}", "State=RESUME")
            time.sleep(0.05)
        raise ClusterError(
            f"node {self.node_name} not usable after {timeout}s (state {state}); "
            f"slurmd log ends:\n{self.log_tail('slurmd')}"
        )

    def log_tail(self, daemon: str, lines: int = 15) -> str:
        """The last ``lines`` lines of ``daemon``'s log (for failure messages)."""
        try:
            text = self.layout.log_file(daemon).read_text(errors="replace")
        except OSError as exc:
            return f"({exc})"
        return "\n".join(text.splitlines()[-lines:])

    # -- jobs ------------------------------------------------------------------------------

    def scontrol(self, *args: str) -> str:
        """Run ``scontrol ARGS`` as root against this cluster; return stdout."""
        proc = subprocess.run(
            [str(BIN / "scontrol"), *args],
            env=self.command_env(),
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise ClusterError(f"scontrol {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    def user_command(
        self, user: str, argv: Sequence[str], *, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` as ``user`` (runuser) with this cluster's environment."""
        return subprocess.run(
            [str(SBIN / "runuser"), "-u", user, "--", *argv],
            env=self.command_env(),
            cwd=cwd,
            capture_output=True,
            text=True,
            check=False,
        )

    def user_workdir(self, user: str) -> Path:
        """``DIR/jobs/USER``: a directory owned by ``user`` for job scripts and output."""
        path = self.layout.jobs_dir / user
        path.mkdir(parents=True, exist_ok=True)
        shutil.chown(path, user=user, group=_primary_group(user))
        path.chmod(0o755)
        return path

    def submit(self, script_text: str, user: str, extra_args: Sequence[str] = ()) -> int:
        """Submit ``script_text`` with sbatch as ``user``; return the job id.

        A node drained by an earlier job is resumed first, so each submission
        starts on a usable node (a drain caused by this job stays observable).
        """
        self.ensure_node_usable()
        workdir = self.user_workdir(user)
        proc = subprocess.run(
            [
                str(SBIN / "runuser"),
                "-u",
                user,
                "--",
                str(BIN / "sbatch"),
                "--parsable",
                f"--chdir={workdir}",
                *extra_args,
            ],
            input=script_text,
            env=self.command_env(),
            cwd=workdir,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise ClusterError(f"sbatch refused the job: {proc.stderr.strip()}")
        return int(proc.stdout.strip().split(";")[0])

    def job(self, job_id: int) -> dict[str, str]:
        """``scontrol show job -o JOB`` as a dict."""
        return parse_scontrol_record(self.scontrol("show", "job", "-o", str(job_id)))

    def wait(self, job_id: int, timeout: float = 120.0) -> dict[str, str]:
        """Wait until the job reaches a final (or held) state; return its record."""
        deadline = time.monotonic() + timeout
        while True:
            record = self.job(job_id)
            if _is_settled(record):
                return record
            if time.monotonic() > deadline:
                raise ClusterError(f"job {job_id} still {record.get('JobState')} after {timeout}s")
            time.sleep(0.1)

    def hook_records(self, job_id: int) -> list[HookRecord]:
        """The Prolog/Epilog invocations recorded for ``job_id``, in order."""
        return [r for r in read_hook_records(self.layout.hook_record_log) if r.job_id == job_id]

    def wait_hook_records(
        self, job_id: int, hooks: Sequence[str], timeout: float = 60.0
    ) -> list[HookRecord]:
        """Wait until every hook in ``hooks`` has a record for ``job_id``.

        The Epilog runs after the job is already reported complete, so a test
        reading the records right after :meth:`wait` may have to wait for it.
        """
        deadline = time.monotonic() + timeout
        while True:
            records = self.hook_records(job_id)
            if set(hooks) <= {r.hook for r in records}:
                return records
            if time.monotonic() > deadline:
                raise ClusterError(f"job {job_id}: hook records {records}, expected {list(hooks)}")
            time.sleep(0.1)


# -- pure helpers -------------------------------------------------------------------------

_FINAL_STATES = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "PREEMPTED",
    "OUT_OF_MEMORY",
    "BOOT_FAIL",
    "DEADLINE",
    "SPECIAL_EXIT",
}


def _is_settled(record: Mapping[str, str]) -> bool:
    """A final state, or a pending job that will not run by itself (held)."""
    state = record.get("JobState", "")
    if state in _FINAL_STATES:
        return True
    return state == "PENDING" and record.get("Priority") == "0"


def parse_scontrol_record(text: str) -> dict[str, str]:
    """Parse one ``scontrol show ... -o`` line (``Key=Value`` pairs) into a dict.

    Values may contain spaces (e.g. ``Reason`` or ``Command``): a token without
    ``=`` or whose key is not a plain identifier continues the previous value.
    """
    record: dict[str, str] = {}
    key: str | None = None
    for token in text.strip().split(" "):
        name, sep, value = token.partition("=")
        if sep and name and name.replace(":", "").replace("/", "").isalnum():
            key = name
            record[key] = value
        elif key is not None:
            record[key] += " " + token
    return record


def read_hook_records(path: Path) -> list[HookRecord]:
    """Parse ``hook-record.log``: ``HOOK<TAB>JOBID<TAB>set|unset<TAB>VALUE`` lines."""
    try:
        lines = path.read_text(encoding="utf-8", errors="surrogateescape").splitlines()
    except FileNotFoundError:
        return []
    records = []
    for line in lines:
        fields = line.split("\t")
        if len(fields) != RECORD_FIELDS or not fields[1].isdigit():
            continue
        hook, job_id, presence, value = fields
        records.append(HookRecord(hook, int(job_id), value if presence == "set" else None))
    return records


def render_plugstack_conf(
    spank_so: Path, checker: Path | None = None, config: Path | None = None
) -> str:
    """plugstack.conf loading the fsx-stage SPANK plugin (required: no job without it),
    with the submit-time checker and its site config when given."""
    words = [f"required {spank_so}"]
    if checker is not None:
        words.append(f"fsx_stage={checker}")
    if config is not None:
        words.append(f"config={config}")
    return f"# Generated by tests/testbed/cluster.py\n{' '.join(words)}\n"


def render_hook_wrapper(
    *,
    hook: str,
    record_log: Path,
    fsx_stage_home: Path,
    fsx_stage_config: Path,
    slurm_conf: Path,
    aws_dir: Path,
    product_hook: Path,
) -> str:
    """The test-bed Prolog/Epilog wrapper (POSIX sh, absolute paths only)."""
    q = shlex.quote
    return f"""#!/bin/sh
# Test-bed {hook} wrapper generated by tests/testbed/cluster.py.
# 1. Record the invocation (observation point for the tests only).
if [ "${{SPANK_FSX_STAGE+set}}" = set ]; then presence=set; else presence=unset; fi
printf '%s\\t%s\\t%s\\t%s\\n' {q(hook)} "${{SLURM_JOB_ID:-0}}" "$presence" \\
    "${{SPANK_FSX_STAGE:-}}" >>{q(str(record_log))}
# 2. Point the product at this repository's venv and this cluster's config.
FSX_STAGE_HOME={q(str(fsx_stage_home))}
FSX_STAGE_CONFIG={q(str(fsx_stage_config))}
SLURM_CONF={q(str(slurm_conf))}
export FSX_STAGE_HOME FSX_STAGE_CONFIG SLURM_CONF
# Optional S3 credentials for the hooks (what root's ~/.aws holds on a real node).
if [ -f {q(str(aws_dir / "credentials"))} ]; then
    AWS_SHARED_CREDENTIALS_FILE={q(str(aws_dir / "credentials"))}
    export AWS_SHARED_CREDENTIALS_FILE
fi
if [ -f {q(str(aws_dir / "config"))} ]; then
    AWS_CONFIG_FILE={q(str(aws_dir / "config"))}
    export AWS_CONFIG_FILE
fi
# 3. Hand over to the product hook.
exec {q(str(product_hook))}
"""


def render_burst_buffer_conf() -> str:
    """The product's burst_buffer.conf (slurm-conf-examples/), as shipped."""
    return (CONF_EXAMPLES / "burst_buffer.conf").read_text()


def render_burst_buffer_lua(bb_command: Path, paths_dir: Path) -> str:
    """The product's burst_buffer.lua with this cluster's two paths (what `make install`
    substitutes with PREFIX)."""
    text = (CONF_EXAMPLES / "burst_buffer.lua").read_text()
    for old, new in (
        ('local FSX_STAGE_BB = "/opt/fsx-stage/bin/fsx-stage"', bb_command),
        ('local PATHS_DIR = "/var/spool/fsx-stage/bb-paths"', paths_dir),
    ):
        if old not in text:
            raise ClusterError(f"burst_buffer.lua: expected the line {old!r}")
        name = old.split()[1]
        text = text.replace(old, f'local {name} = "{new}"')
    return text


def render_sudoers(slurm_user: str, command: Path) -> str:
    """The shipped rule (slurm-conf-examples/sudoers.fsx-stage) for this cluster:
    ``slurm_user`` runs ``COMMAND bb ...`` as root, nothing else."""
    text = (CONF_EXAMPLES / "sudoers.fsx-stage").read_text()
    text = text.replace("/opt/fsx-stage/bin/fsx-stage", str(command))
    return text.replace("\nslurm ALL=", f"\n{slurm_user} ALL=")


def render_bb_wrapper(
    *, fsx_stage_home: Path, fsx_stage_config: Path, slurm_conf: Path, aws_dir: Path
) -> str:
    """The test-bed ``fsx-stage bb`` wrapper sudo runs as root (sudo clears the environment)."""
    q = shlex.quote
    return f"""#!/bin/sh
# Test-bed fsx-stage bb wrapper generated by tests/testbed/cluster.py.
FSX_STAGE_CONFIG={q(str(fsx_stage_config))}
SLURM_CONF={q(str(slurm_conf))}
export FSX_STAGE_CONFIG SLURM_CONF
if [ -f {q(str(aws_dir / "credentials"))} ]; then
    AWS_SHARED_CREDENTIALS_FILE={q(str(aws_dir / "credentials"))}
    export AWS_SHARED_CREDENTIALS_FILE
fi
if [ -f {q(str(aws_dir / "config"))} ]; then
    AWS_CONFIG_FILE={q(str(aws_dir / "config"))}
    export AWS_CONFIG_FILE
fi
exec {q(str(fsx_stage_home / "bin" / "fsx-stage"))} "$@"
"""


def slurm_version() -> tuple[int, int]:
    """(major, minor) of the installed slurmd, e.g. (22, 5)."""
    out = subprocess.run(
        [str(SBIN / "slurmd"), "-V"], capture_output=True, text=True, check=True
    ).stdout
    major, minor = out.split()[-1].split(".")[:2]
    return int(major), int(minor)


def _node_line(node_name: str) -> str:
    """The ``NodeName=...`` line from ``slurmd -C`` (hardware as slurmd sees it)."""
    out = subprocess.run(
        [str(SBIN / "slurmd"), "-C"], capture_output=True, text=True, check=True
    ).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("NodeName="))
    fields = [f for f in line.split() if not f.startswith("NodeName=")]
    return " ".join([f"NodeName={node_name}", *fields])


def _primary_group(user: str) -> int:
    return pwd.getpwnam(user).pw_gid


def ensure_system_user(name: str) -> str:
    """Create the system user ``name`` (no home, no login) unless it exists."""
    try:
        pwd.getpwnam(name)
    except KeyError:
        _run(
            [
                str(SBIN / "useradd"),
                "--system",
                "--user-group",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                name,
            ],
            os.environ,
        )
    return name


def ensure_user(name: str) -> str:
    """Create the non-root user ``name`` with a home directory unless it exists."""
    try:
        pwd.getpwnam(name)
    except KeyError:
        _run([str(SBIN / "useradd"), "--create-home", "--shell", "/bin/sh", name], os.environ)
    return name


@contextlib.contextmanager
def _flock(path: Path, operation: int) -> Iterator[bool]:
    """Hold ``flock(operation)`` on ``path``; yields False if LOCK_NB could not get it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, operation)
            acquired = True
        except BlockingIOError:
            acquired = False
        yield acquired
    finally:
        os.close(fd)


@contextlib.contextmanager
def shared_cluster(directory: Path | None = None, mode: str = "prolog") -> Iterator[SlurmCluster]:
    """The cluster in ``directory`` for the duration of the block.

    A live cluster is reused and left running. A cluster this block started is
    stopped at the end, unless another user (e.g. a concurrent test session)
    still holds it, in which case it is left running too.
    """
    cluster = SlurmCluster(directory, mode)
    root = cluster.layout.root
    with _flock(root / ".users", fcntl.LOCK_SH):
        with _flock(root / ".startup", fcntl.LOCK_EX):
            started = cluster.up()
        yield cluster
    if started:
        with _flock(root / ".users", fcntl.LOCK_EX | fcntl.LOCK_NB) as alone:
            if alone:
                cluster.down()


def _write_text(path: Path, text: str, mode: int = 0o644) -> None:
    """Write ``text`` via a temporary name and rename (readers never see half a file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    tmp.replace(path)


def _run(argv: Sequence[str], env: Mapping[str, str]) -> None:
    proc = subprocess.run(list(argv), env=dict(env), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ClusterError(f"{argv[0]} failed ({proc.returncode}): {proc.stderr.strip()}")


def _stop_pid(pid: int, timeout: float) -> None:
    """SIGTERM ``pid``, SIGKILL it after ``timeout`` seconds, wait until it is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + timeout
        time.sleep(0.05)


# -- CLI ------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.testbed.cluster", description=__doc__)
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--mode", choices=MODES, default="prolog", help="cluster flavour")
    parser.add_argument("--dir", type=Path, default=None, help="cluster directory")
    args = parser.parse_args(argv)
    cluster = SlurmCluster(args.dir or default_dir(args.mode), args.mode)
    if args.action == "up":
        started = time.monotonic()
        fresh = cluster.up()
        private = private_interpreter_dir(cluster.hooks_home())
        if private is not None:
            print(
                f"warning: the hooks run a python under {private}, which job users cannot"
                " read: they will fail once they drop privileges. Point FSX_STAGE_HOME at"
                " a venv made from /usr/bin/python3.",
                file=sys.stderr,
            )
        verb = "started" if fresh else "reused"
        print(f"slurm cluster {verb} in {time.monotonic() - started:.2f}s: {cluster.layout.root}")
        print(f"export SLURM_CONF={cluster.layout.slurm_conf}")
        return 0
    if args.action == "down":
        cluster.down()
        print(f"slurm cluster stopped: {cluster.layout.root}")
        return 0
    pids = cluster.pids()
    for daemon, pid in pids.items():
        print(f"{daemon}: {'running, pid ' + str(pid) if pid else 'stopped'}")
    if all(pids.values()):
        print(f"node {cluster.node_name}: {cluster.node_state()}")
        print(f"export SLURM_CONF={cluster.layout.slurm_conf}")
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
