"""Reading a checkpoint the way a restore does: the newest manifest's generation."""

from __future__ import annotations

import json
from typing import Any


def newest_generation(client: Any, bucket: str, prefix: str) -> dict[str, bytes]:
    """Relative path -> bytes of the files of the newest generation under ``prefix``
    (``{}`` when no manifest exists)."""
    listing = client.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}.fsx-stage/manifests/")
    numbers = [
        int(o["Key"].rsplit("/", 1)[1].removesuffix(".json")) for o in listing.get("Contents", [])
    ]
    if not numbers:
        return {}
    n = max(numbers)
    body = client.get_object(Bucket=bucket, Key=f"{prefix}.fsx-stage/manifests/{n}.json")["Body"]
    files = json.loads(body.read())["files"]
    return {  # an unchanged file's object is in an earlier generation's directory
        f["path"]: client.get_object(
            Bucket=bucket, Key=f"{prefix}.fsx-stage/gen/{f.get('stored_in', n)}/{f['path']}"
        )["Body"].read()
        for f in files
    }


def checkpoint_object(client: Any, bucket: str, prefix: str, path: str) -> bytes:
    """The bytes of ``path`` in the newest generation under ``prefix`` (KeyError if absent)."""
    return newest_generation(client, bucket, prefix)[path]
