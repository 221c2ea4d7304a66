"""Who can reach the instance metadata service, and with it the instance role?

The probe asks only for the role's name, never its credentials.
"""

from __future__ import annotations

import http.client
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from fsx_stage.config import SiteConfig
from fsx_stage.doctor import Finding, fail, ok, warn
from fsx_stage.doctor.probe import as_probe_user

#: The endpoint botocore uses (``AWS_EC2_METADATA_SERVICE_ENDPOINT`` overrides it there too).
IMDS_ENDPOINT = "http://169.254.169.254/"
IMDS_ENDPOINT_ENV = "AWS_EC2_METADATA_SERVICE_ENDPOINT"
IMDS_TIMEOUT_S = 2.0
HARDENING = "see docs/install.md, 'Instance metadata'"
_TTL = "X-aws-ec2-metadata-token-ttl-seconds"
_TOKEN = "X-aws-ec2-metadata-token"  # noqa: S105 (a header name)


def default_endpoint(env: Mapping[str, str]) -> str:
    return env.get(IMDS_ENDPOINT_ENV) or IMDS_ENDPOINT


def probe_imds(endpoint: str) -> dict[str, Any]:
    """Ask the metadata service for the instance role's name (IMDSv2, then v1).

    Runs as the unprivileged probe user. Never fetches the role's credentials.
    """
    parts = urlsplit(endpoint)
    host, port = parts.hostname or "", parts.port or 80
    base = parts.path.rstrip("/")
    headers: dict[str, str] = {}
    try:
        conn = http.client.HTTPConnection(host, port, timeout=IMDS_TIMEOUT_S)
        conn.request("PUT", f"{base}/latest/api/token", headers={_TTL: "60"})
        reply = conn.getresponse()
        token = reply.read().decode("ascii", "replace").strip()
        if reply.status == 200 and token:
            headers[_TOKEN] = token
        conn.request("GET", f"{base}/latest/meta-data/iam/security-credentials/", headers=headers)
        reply = conn.getresponse()
        body = reply.read().decode("utf-8", "replace")
        conn.close()
    except OSError as exc:
        return {"reachable": False, "detail": exc.strerror or type(exc).__name__}
    roles = body.split() if reply.status == 200 else []
    return {"reachable": True, "roles": roles}


def exposure(config: SiteConfig, source: str | None, endpoint: str, probe_user: str) -> Finding:
    """Can a job (any non-root user) get the instance role's credentials from IMDS?

    If it can, and fsx-stage itself uses that role, the site policy is no boundary: a job
    can call S3 directly with the same rights.
    """
    topic = "imds"
    probed = as_probe_user(topic, probe_user, probe_imds, endpoint)
    if isinstance(probed, Finding):
        return probed
    probe_user, result = probed
    if not result["reachable"]:
        why = result["detail"]
        return ok(topic, f"{endpoint} not reachable by non-root user {probe_user} ({why})")
    roles = result["roles"]
    if not roles:
        return ok(topic, f"{endpoint} reachable by {probe_user}, but no instance role is attached")
    role = roles[0]
    own = config.s3.credentials_file is not None or config.s3.profile is not None
    if source == "iam-role" or (source is None and not own):
        return fail(
            topic,
            f"non-root user {probe_user} can get instance role {role!r} credentials from "
            f"{endpoint}, and fsx-stage uses that role: any job can bypass the site policy. "
            "Restrict IMDS to root (iptables owner match), or give the role no S3 rights "
            f"and fsx-stage its own [s3] credentials_file ({HARDENING})",
        )
    return warn(
        topic,
        f"non-root user {probe_user} can get instance role {role!r} credentials from "
        f"{endpoint}: make sure that role has no S3 rights, or restrict IMDS to root "
        f"({HARDENING})",
    )
