"""``fsx-stage agent`` (the node's root service) and ``fsx-stage checkpoint`` (run inside
a job: flush its checkpoints now); docs/checkpoints.md."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from fsx_stage.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE


def register(subparsers: Any) -> None:
    agent = subparsers.add_parser(
        "agent", help="the node's checkpoint service (root; systemd fsx-stage-agent.service)"
    )
    agent.add_argument(
        "--socket",
        metavar="PATH",
        help="unix socket (default: $FSX_STAGE_AGENT_SOCKET or /run/fsx-stage/agent.sock)",
    )
    agent.set_defaults(handler=_agent)
    checkpoint = subparsers.add_parser(
        "checkpoint", help="inside a job: flush its checkpoints to S3 now"
    )
    checkpoint.add_argument(
        "--wait", action="store_true", help="return only once S3 confirmed the generation"
    )
    checkpoint.add_argument(
        "--timeout", type=float, default=600.0, metavar="S", help="give up after S seconds"
    )
    checkpoint.set_defaults(handler=_checkpoint)


def _agent(args: argparse.Namespace) -> int:
    from fsx_stage.agent.protocol import socket_path
    from fsx_stage.agent.server import Agent
    from fsx_stage.hooks.outcome import HookFault

    if os.geteuid() != 0:
        print("fsx-stage agent: must run as root", file=sys.stderr)
        return EXIT_USAGE
    try:
        agent = Agent(os.environ, args.socket or socket_path())
    except HookFault as fault:
        print(f"fsx-stage agent: {fault.message}", file=sys.stderr)
        return EXIT_FAILED
    agent.serve()
    return EXIT_OK


def _checkpoint(args: argparse.Namespace) -> int:
    from fsx_stage.agent.client import request_checkpoint

    job = os.environ.get("SLURM_JOB_ID", "")
    if not job.isdigit() or args.timeout <= 0:
        print(
            "fsx-stage checkpoint: run it inside a job (SLURM_JOB_ID unset)"
            if not job.isdigit()
            else "fsx-stage checkpoint: --timeout: expected a number > 0",
            file=sys.stderr,
        )
        return EXIT_USAGE
    reply = request_checkpoint(int(job), args.wait, args.timeout)
    if reply.ok:
        print(f"fsx-stage checkpoint: job {job}: {reply.state}")
        return EXIT_OK
    print(f"fsx-stage checkpoint: job {job}: {reply.state}: {reply.error}", file=sys.stderr)
    return EXIT_FAILED
