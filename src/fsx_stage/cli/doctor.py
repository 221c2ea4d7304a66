"""``fsx-stage doctor``: check this node's fsx-stage setup (for admins, as root).

Prints one line per check, ``ok``, ``warn`` or ``FAIL``, with what to fix; exits 0 when
nothing failed, 1 otherwise. The metadata-service probe goes to
``$AWS_EC2_METADATA_SERVICE_ENDPOINT`` (botocore's setting) or ``--imds-endpoint``,
default http://169.254.169.254/.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator, Mapping
from typing import Any

from fsx_stage.cli import EXIT_FAILED, EXIT_OK
from fsx_stage.doctor import Finding, Status, warn


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "doctor",
        help="check this node's setup: config, credentials, IMDS, scratch, state, Slurm (admin)",
    )
    parser.add_argument(
        "--imds-endpoint",
        metavar="URL",
        help="instance metadata service to probe (default: $AWS_EC2_METADATA_SERVICE_ENDPOINT "
        "or http://169.254.169.254/)",
    )
    parser.add_argument(
        "--probe-user",
        default="nobody",
        metavar="USER",
        help="the unprivileged user the IMDS probe runs as (default: nobody)",
    )
    parser.set_defaults(handler=_doctor)


def findings(env: Mapping[str, str], imds_endpoint: str, probe_user: str) -> Iterator[Finding]:
    """Every check, in order; those that need the site config only when it is valid."""
    from fsx_stage.doctor import imds, node, slurm

    if os.geteuid() != 0:
        yield warn("user", "not root: the hooks run as root; run doctor as root for the full check")
    yield node.installation(probe_user)
    config, finding = node.load(env)
    yield finding
    if config is not None:
        source, finding = node.credentials(config)
        yield finding
        yield imds.exposure(config, source, imds_endpoint, probe_user)
        yield from node.scratch(config)
        yield node.state_dir(config)
        yield node.log_destination(config)
    conf = slurm.show_config(env)
    if isinstance(conf, Finding):
        yield conf
        return
    yield from slurm.settings(config, conf)
    yield from slurm.plugin(conf, env)


def _doctor(args: argparse.Namespace) -> int:
    from fsx_stage.doctor import imds

    endpoint = args.imds_endpoint or imds.default_endpoint(os.environ)
    failed = False
    for finding in findings(os.environ, endpoint, args.probe_user):
        failed |= finding.status is Status.FAIL
        print(f"{finding.status.value:<4}  {finding.topic}: {finding.message}", flush=True)
    return EXIT_FAILED if failed else EXIT_OK
