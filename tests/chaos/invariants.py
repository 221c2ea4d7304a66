"""The independent checker: the invariants every chaos scenario must keep.

It looks only at the outside world: S3 through boto3 (listing and hashing bodies), the
scratch tree through ``os.walk``/``lstat``, the hooks' pending records and job states as
JSON files, log files as bytes, and the node through ``sinfo``. It never imports the code
under test's transfer or hooks modules, so a bug there cannot hide itself here.

Each check raises :class:`InvariantBroken` with what broke, and counts itself in
:attr:`Checker.passed` when it holds.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import stat
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.checkpoints.layout import newest_generation

TEMP_SUFFIX = ".fsxpart"  # the transfer core's temporary names: ".NAME[.digest].fsxpart"
SERVING_STATES = {"idle", "mixed", "allocated", "completing"}


class InvariantBroken(AssertionError):
    """An invariant of issue #5 does not hold."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_temporary(name: str) -> bool:
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


def s3_objects(client: Any, bucket: str, prefix: str = "") -> dict[str, str]:
    """Key -> sha256 of the body of every object under ``prefix`` (bodies are downloaded)."""
    keys: list[str] = []
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(item["Key"] for item in page.get("Contents", []))

    def digest(key: str) -> str:
        return sha256(client.get_object(Bucket=bucket, Key=key)["Body"].read())

    with ThreadPoolExecutor(8) as pool:
        return dict(zip(keys, pool.map(digest, keys), strict=True))


def local_files(root: Path) -> dict[str, str]:
    """Relative POSIX path -> sha256 of every regular file below ``root``, no symlinks
    followed (a symlink is reported as ``symlink:TARGET``); temporaries are left out."""
    found: dict[str, str] = {}
    if not root.exists():
        return found
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        base = Path(dirpath)
        for name in [*filenames, *(d for d in dirnames if (base / d).is_symlink())]:
            if is_temporary(name):
                continue
            path = base / name
            relative = path.relative_to(root).as_posix()
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                found[relative] = f"symlink:{os.readlink(path)}"
            elif stat.S_ISREG(info.st_mode):
                found[relative] = sha256(path.read_bytes())
    return found


def temporaries(root: Path) -> list[Path]:
    """Leftover temporary files below ``root`` (harmless: never under a final name)."""
    return [
        Path(dirpath) / name
        for dirpath, _dirs, names in os.walk(root)
        for name in names
        if is_temporary(name)
    ]


@dataclass
class Canary:
    """A root-owned file outside every allowed root, holding a random secret.

    Symlinks planted by a job point at it. Afterwards it must be unchanged and its
    contents must appear in no job-visible file and no object.
    """

    path: Path
    content: bytes = field(default_factory=lambda: b"canary-" + secrets.token_hex(16).encode())

    def plant(self) -> Canary:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_bytes(self.content)
        os.chown(self.path, 0, 0)
        self.path.chmod(0o600)
        return self


@dataclass
class Checker:
    """Runs the invariant checks and counts the ones that held."""

    client: Any
    passed: int = 0
    secrets: tuple[str, ...] = ()

    def _ok(self) -> None:
        self.passed += 1

    # -- 1. what a job reads is complete and identical ------------------------------------
    def staged_in(
        self,
        bucket: str,
        prefix: str,
        local_root: Path,
        *,
        complete: bool = True,
        listing: Mapping[str, str] | None = None,
    ) -> int:
        """Every file under ``local_root`` is byte-identical to ``prefix + relative``; with
        ``complete``, every object under ``prefix`` is there too. Returns the file count."""
        if listing is None:
            listing = s3_objects(self.client, bucket, prefix)
        objects = {k.removeprefix(prefix): h for k, h in listing.items()}
        files = local_files(local_root)
        for relative, digest in files.items():
            if relative not in objects:
                raise InvariantBroken(f"{local_root}/{relative}: no object {prefix}{relative}")
            if objects[relative] != digest:
                raise InvariantBroken(
                    f"{local_root}/{relative} differs from s3://{bucket}/{prefix}{relative}"
                )
        if complete:
            missing = sorted(set(objects) - set(files))
            if missing:
                raise InvariantBroken(
                    f"{len(missing)} objects not staged into {local_root}: {missing[:5]}"
                )
        self._ok()
        return len(files)

    def no_torn_files(self, root: Path, expected: Mapping[str, bytes]) -> int:
        """Every final-named file under ``root`` has exactly the expected bytes (a file may
        be missing: a run that stopped early; never present and partial)."""
        files = local_files(root)
        for relative, digest in files.items():
            if relative not in expected:
                raise InvariantBroken(f"{root}/{relative}: unexpected file")
            if sha256(expected[relative]) != digest:
                raise InvariantBroken(f"{root}/{relative}: torn or wrong content")
        self._ok()
        return len(files)

    # -- 2. every written byte is in S3 or kept and pending ---------------------------------
    def flushed_or_pending(
        self,
        bucket: str,
        prefix: str,
        local_root: Path,
        written: Mapping[str, bytes],
        pending_record: Path,
    ) -> str:
        """Each file the job wrote (relative path -> bytes) is identical in S3 under
        ``prefix``, or still identical on scratch with ``pending_record`` naming its
        directory. Returns ``"flushed"``, ``"pending"`` or ``"mixed"``."""
        generation = newest_generation(self.client, bucket, prefix)  # checkpoints
        objects = {rel: sha256(body) for rel, body in generation.items()} or {
            k.removeprefix(prefix): h for k, h in s3_objects(self.client, bucket, prefix).items()
        }
        pending = _pending_sources(pending_record)
        kept = local_files(local_root)
        outcomes = set()
        for relative, body in written.items():
            digest = sha256(body)
            if objects.get(relative) == digest:
                outcomes.add("flushed")
                continue
            on_scratch = kept.get(relative) == digest
            listed = any(
                str(local_root).rstrip("/") == s.rstrip("/") or str(local_root / relative) == s
                for s in pending
            )
            if on_scratch and listed:
                outcomes.add("pending")
                continue
            raise InvariantBroken(
                f"lost: {relative} is not in s3://{bucket}/{prefix} "
                f"(object {'differs' if relative in objects else 'missing'}), "
                f"{'kept' if on_scratch else 'not kept'} on scratch, "
                f"{'listed' if listed else 'not listed'} in {pending_record}"
            )
        self._ok()
        return outcomes.pop() if len(outcomes) == 1 else "mixed" if outcomes else "flushed"

    # -- 3. confinement ------------------------------------------------------------------
    def confined(
        self,
        uid: int,
        allowed_roots: Iterable[Path],
        search_roots: Iterable[Path],
        canaries: Iterable[Canary] = (),
        buckets: Mapping[str, Any] | None = None,
    ) -> None:
        """No file owned by ``uid`` exists under ``search_roots`` outside ``allowed_roots``;
        every canary is unchanged, still root-owned, and its secret is in no file under the
        allowed roots (nor in any object of ``buckets``: name -> client)."""
        allowed = [Path(r).resolve() for r in allowed_roots]
        for root in search_roots:
            for path in _walk(Path(root)):
                try:
                    info = path.lstat()
                except FileNotFoundError:
                    continue
                if info.st_uid == uid and not any(_under(path, a) for a in allowed):
                    raise InvariantBroken(f"{path} belongs to uid {uid} outside the allowed roots")
        for canary in canaries:
            info = canary.path.lstat()
            if not stat.S_ISREG(info.st_mode) or info.st_uid != 0:
                raise InvariantBroken(f"canary {canary.path} was replaced")
            if canary.path.read_bytes() != canary.content:
                raise InvariantBroken(f"canary {canary.path} was modified")
            for root in allowed:
                for path in _walk(root):
                    if (
                        path.is_file()
                        and not path.is_symlink()
                        and canary.content in path.read_bytes()
                    ):
                        raise InvariantBroken(
                            f"{path} holds the canary's secret from {canary.path}"
                        )
            for bucket, client in (buckets or {}).items():
                for item in _list(client, bucket):
                    body = client.get_object(Bucket=bucket, Key=item)["Body"].read()
                    if canary.content in body:
                        raise InvariantBroken(f"s3://{bucket}/{item} holds the canary's secret")
        self._ok()

    # -- 4. no secret in any log -------------------------------------------------------------
    def no_secrets(self, paths: Iterable[Path], extra_text: Iterable[str] = ()) -> int:
        """None of :attr:`secrets` appears in any of ``paths`` (files or directory trees)
        nor in ``extra_text`` (captured stdout/stderr). Returns the bytes scanned."""
        scanned = 0
        needles = [s.encode() for s in self.secrets if s]
        for base in paths:
            for path in [base] if base.is_file() else _walk(base):
                if not path.is_file() or path.is_symlink():
                    continue
                data = path.read_bytes()
                scanned += len(data)
                for needle in needles:
                    if needle in data:
                        raise InvariantBroken(f"a secret appears in {path}")
        for text in extra_text:
            scanned += len(text)
            for needle in needles:
                if needle.decode() in text:
                    raise InvariantBroken("a secret appears in captured output")
        self._ok()
        return scanned

    # -- 5. the node stays in service ----------------------------------------------------------
    def node_in_service(self, env: Mapping[str, str]) -> str:
        state = node_state(env)
        if state.rstrip("*~#!%$@^-+") not in SERVING_STATES:
            raise InvariantBroken(f"node out of service: {state!r}")
        self._ok()
        return state


def node_state(env: Mapping[str, str]) -> str:
    """``sinfo -h -o %T`` for the cluster ``env`` points at."""
    proc = subprocess.run(
        ["/usr/bin/sinfo", "-h", "-o", "%T"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.stdout.strip() or f"unreachable: {proc.stderr.strip()}"


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    return data


def _pending_sources(record: Path) -> list[str]:
    data = read_json(record)
    if data is None:
        return []
    return [str(e.get("source", "")) for e in data.get("entries", [])]


def _walk(root: Path) -> Iterator[Path]:
    if not root.exists():
        return
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        base = Path(dirpath)
        for name in [*dirnames, *filenames]:
            yield base / name


def _under(path: Path, root: Path) -> bool:
    try:
        Path(os.path.realpath(path.parent)).joinpath(path.name).relative_to(root)
    except ValueError:
        return False
    return True


def _list(client: Any, bucket: str) -> list[str]:
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return keys
