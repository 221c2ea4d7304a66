"""``fsx-stage bb PHASE JOBID``: the burst_buffer/lua mode's one root command.

``slurm-conf-examples/burst_buffer.lua`` runs it as ``sudo -n fsx-stage bb PHASE JOBID``
(a sudo rule for exactly this command, docs/modes.md). Nothing but the job id is taken
from the caller: the user, the ids and the directives come from Slurm. The last stdout
line is the verdict (``OK``, ``BUSY``, ``ERROR <message>``, see
`fsx_stage.burstbuffer.verdict`); ``bb status [JOBID]`` prints what
``scontrol show bbstat`` shows.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from fsx_stage.burstbuffer import PHASES
from fsx_stage.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE


def register(subparsers: Any) -> None:
    bb = subparsers.add_parser(
        "bb", help="burst_buffer/lua mode: one phase of a job's staging (root, via sudo)"
    )
    bb.add_argument("phase", choices=(*PHASES, "status"), metavar="PHASE")
    bb.add_argument("job_id", type=int, nargs="?", metavar="JOBID")
    bb.add_argument("--hurry", action="store_true", help="teardown: scancel --hurry")
    bb.set_defaults(handler=_bb)


def _bb(args: argparse.Namespace) -> int:
    if args.phase == "status":
        return _status(args.job_id)
    from fsx_stage.burstbuffer import phases
    from fsx_stage.burstbuffer.verdict import Verdict

    if args.job_id is None or args.job_id <= 0:
        print(Verdict.error(f"fsx-stage bb {args.phase}: expected a job id").line())
        return EXIT_USAGE
    if os.geteuid() != 0:
        print(Verdict.error(f"fsx-stage bb {args.phase}: must run as root (sudo)").line())
        return EXIT_USAGE
    verdict = phases.run(args.phase, args.job_id, os.environ, hurry=args.hurry)
    sys.stdout.flush()
    print(verdict.line())
    return verdict.exit_code


def _status(job_id: int | None) -> int:
    from fsx_stage.cli.hooks import render_status
    from fsx_stage.config import ConfigError, config_path, load_config
    from fsx_stage.hooks.pending import PendingStore
    from fsx_stage.hooks.state import StateError, StateStore

    try:
        config = load_config(config_path())
    except ConfigError as exc:
        print(f"fsx-stage bb status: {exc}")
        return EXIT_FAILED
    store = StateStore(config.state_dir)
    if job_id is None:
        pending = PendingStore(store).job_ids()
        print(f"fsx-stage: jobs with results pending a flush: {pending or 'none'}")
        print("scontrol show bbstat JOBID shows one job's staging")
        return EXIT_OK
    try:
        state = store.load(job_id)
    except StateError as exc:
        print(f"fsx-stage bb status: {exc}")
        return EXIT_FAILED
    if state is None:
        print(f"fsx-stage: no staging state for job {job_id}")
        return EXIT_OK
    print(render_status(state))
    return EXIT_OK
