"""Checkpoint generations: a flush publishes a consistent set of files, restore takes the
newest complete one (docs/checkpoints.md).

Layout under a checkpoint destination ``DST/``::

    DST/.fsx-stage/claims/<N>.json         first: N is taken (conditional PUT), until N is complete
    DST/.fsx-stage/gen/<N>/<path>          the files of generation N
    DST/.fsx-stage/manifests/<N>.json      written last: exactly the files of N, with checksums

A generation is complete when its manifest exists and names only objects that are there.
Publishers of one destination (an agent, two jobs sharing a prefix) never share a number:
each claims its own. A file is in generation N only if its (size, mtime_ns, ctime_ns,
inode) and its SHA-256 are the same before and after its upload (the checksum catches a
rewrite that coarse timestamps hide); a file that changed is uploaded again (up to
``STABLE_ATTEMPTS`` times), and if it never holds still the generation is discarded, never
published with a torn or mixed file. A file whose SHA-256 is the one the previous complete
generation recorded is not uploaded again: the manifest names the earlier generation's
object. Older objects are removed only after a newer manifest is in S3, and never while a
kept manifest names them; an unfinished generation is removed only when nothing was
written to it for ``ABANDONED_AFTER_S`` (its publisher may still be running). Runs as the
job's user (in the hooks' privilege-dropped worker), with the S3 settings resolved as
root.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import socket
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fsx_stage.clock import SYSTEM_CLOCK, Clock
from fsx_stage.direction import Direction
from fsx_stage.filters import Filter, FilterAction, selects
from fsx_stage.s3url import S3Url
from fsx_stage.transfer import (
    S3Settings,
    TransferEvent,
    TransferFailure,
    TransferOptions,
    TransferSummary,
    transfer,
)
from fsx_stage.transfer.errors import classify
from fsx_stage.transfer.s3.botocore_client import create_client

META = ".fsx-stage/"
STABLE_ATTEMPTS = 3
MANIFEST_VERSION = 2
READABLE_VERSIONS = (1, 2)  # 1: no sha256, every object in the generation's own gen/<N>/
CLAIM_ATTEMPTS = 100
ABANDONED_AFTER_S = 24 * 3600.0  # an unfinished generation idle this long lost its publisher
EXACT_PATHS_LIMIT = 1000  # above: upload every file (an include filter per path is O(F^2))
LEGACY_EXCLUDE = Filter(FilterAction.EXCLUDE, META + "*")

Identity = tuple[int, int, int, int]  # size, mtime_ns, ctime_ns, inode


class GenerationError(Exception):
    """A generation could not be published (nothing new is visible to a restore)."""


@dataclass(frozen=True)
class Listed:
    """An object as a listing shows it."""

    size: int
    etag: str
    modified: float  # LastModified, seconds since the epoch


@dataclass(frozen=True)
class ManifestFile:
    """One file of a generation; its object is ``gen/<stored_in>/<path>`` (an earlier
    generation's when the file was unchanged)."""

    path: str
    size: int
    etag: str
    stored_in: int
    sha256: str | None = None  # None in version 1 manifests: never reused

    @property
    def key(self) -> str:
        return _gen_dir(self.stored_in) + self.path


@dataclass
class Manifest:
    generation: int
    created_at: float
    files: list[ManifestFile] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def keys(self) -> set[str]:
        """The keys (relative to DST) of the objects this generation's files are in."""
        return {f.key for f in self.files}

    def intact(self, listing: dict[str, Listed]) -> bool:
        """Every object it names is listed, with the size and ETag it recorded."""
        return all(
            (found := listing.get(f.key)) is not None
            and (found.size, found.etag) == (f.size, f.etag)
            for f in self.files
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": MANIFEST_VERSION,
                "generation": self.generation,
                "created_at": self.created_at,
                "files": [dataclasses.asdict(f) for f in self.files],
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: bytes) -> Manifest:
        """Raises ValueError for anything that is not a manifest this version understands."""
        try:
            data = json.loads(text)
            if data["version"] not in READABLE_VERSIONS:
                raise ValueError(f"manifest version {data['version']!r}")
            n = int(data["generation"])
            files = [
                ManifestFile(
                    str(f["path"]),
                    int(f["size"]),
                    str(f["etag"]),
                    int(f.get("stored_in", n)),
                    None if f.get("sha256") is None else str(f["sha256"]),
                )
                for f in data["files"]
            ]
            return cls(n, float(data["created_at"]), files)
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a manifest: {exc}") from None


@dataclass
class GenerationResult:
    """What a publish or a restore did; ``summary`` counts the bytes moved."""

    generation: int | None
    summary: TransferSummary
    files: int = 0
    bytes: int = 0
    removed_generations: list[int] = field(default_factory=list)
    created_at: float | None = None  # when the generation was published
    restored: bool = False

    def record(self) -> dict[str, Any] | None:
        """What the hooks keep in the job's state (``fsx-stage status``); None when no
        generation was published or restored."""
        if self.generation is None:
            return None
        return {
            "generation": self.generation,
            "created_at": self.created_at,
            "files": self.files,
            "bytes": self.bytes,
            "removed": self.removed_generations,
            "restored": self.restored,
        }


class _Store:
    """The few plain S3 calls generations need (list, get, conditional put, delete)."""

    def __init__(self, s3: S3Settings, bucket: str, prefix: str) -> None:
        self.s3, self.bucket, self.prefix = s3, bucket, prefix

    def _run(self, calls: Any) -> Any:
        async def go() -> Any:
            async with create_client(self.s3, 4) as client:
                return await calls(await client.ready())

        return asyncio.run(go())

    def keys(self, under: str) -> dict[str, Listed]:
        """The objects below ``prefix + under``, by key relative to ``prefix``."""

        async def calls(client: Any) -> dict[str, Listed]:
            found: dict[str, Listed] = {}
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix + under}
            while True:
                page = await client.list_objects_v2(**kwargs)
                for item in page.get("Contents", []):
                    rel = item["Key"][len(self.prefix) :]
                    found[rel] = Listed(
                        int(item["Size"]),
                        str(item.get("ETag", "")).strip('"'),
                        item["LastModified"].timestamp(),
                    )
                if not page.get("IsTruncated"):
                    return found
                kwargs["ContinuationToken"] = page["NextContinuationToken"]

        result: dict[str, Listed] = self._run(calls)
        return result

    def get(self, rel: str) -> bytes:
        async def calls(client: Any) -> bytes:
            reply = await client.get_object(Bucket=self.bucket, Key=self.prefix + rel)
            async with reply["Body"] as body:
                data: bytes = await body.read()
                return data

        result: bytes = self._run(calls)
        return result

    def put_new(self, rel: str, body: bytes) -> bool:
        """PUT only if no object has that key (If-None-Match: *); False if one had."""

        async def calls(client: Any) -> bool:
            try:
                await client.put_object(
                    Bucket=self.bucket, Key=self.prefix + rel, Body=body, IfNoneMatch="*"
                )
            except Exception as exc:
                status = getattr(exc, "response", {}).get("ResponseMetadata", {})
                if status.get("HTTPStatusCode") in (409, 412):
                    return False
                raise
            return True

        result: bool = self._run(calls)
        return result

    def delete(self, rels: list[str]) -> None:
        async def calls(client: Any) -> None:
            for start in range(0, len(rels), 1000):
                chunk = [{"Key": self.prefix + r} for r in rels[start : start + 1000]]
                await client.delete_objects(Bucket=self.bucket, Delete={"Objects": chunk})

        if rels:
            self._run(calls)


_NUMBERED = ((META + "manifests/", ".json"), (META + "claims/", ".json"), (META + "gen/", ""))


def _generation_of(rel: str) -> int | None:
    """The generation a key under ``.fsx-stage/`` belongs to (manifest, claim or object)."""
    for head, tail in _NUMBERED:
        if rel.startswith(head):
            part = rel[len(head) :]
            number = part.removesuffix(tail) if tail else part.partition("/")[0]
            if number.isdigit() and (not tail or part.endswith(tail)):
                return int(number)
    return None


def _claim_key(n: int) -> str:
    return f"{META}claims/{n}.json"


def _manifest_key(n: int) -> str:
    return f"{META}manifests/{n}.json"


def _gen_dir(n: int) -> str:
    return f"{META}gen/{n}/"


def snapshot(root: str, filters: tuple[Filter, ...] = ()) -> dict[str, Identity]:
    """Every regular file below ``root`` that ``filters`` select (relative path ->
    identity); symlinks are not followed."""
    found: dict[str, Identity] = {}
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = str(Path(dirpath) / name)
            identity = _identity(path)
            rel = os.path.relpath(path, root)
            if identity is not None and selects(rel, filters):
                found[rel] = identity
    return found


def _identity(path: str) -> Identity | None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


class Generations:
    """The generations of one checkpoint destination ``s3://bucket/prefix/``."""

    def __init__(self, destination: str, s3: S3Settings, clock: Clock = SYSTEM_CLOCK) -> None:
        self.url = destination.rstrip("/") + "/"
        url = S3Url.parse(self.url)
        self.store = _Store(s3, url.bucket, url.key)
        self.s3 = s3
        self.clock = clock

    def manifest(self, n: int) -> Manifest:
        return Manifest.from_json(self.store.get(_manifest_key(n)))

    def newest_complete(self, keys: dict[str, Listed] | None = None) -> Manifest | None:
        """The newest generation whose manifest reads and whose objects are all in S3
        (with the size and ETag the manifest records). ``keys``: a listing of
        ``.fsx-stage/`` just made."""
        keys = self.store.keys(META) if keys is None else keys
        complete, _seen = _numbers(keys)
        for n in reversed(complete):
            try:
                manifest = self.manifest(n)
            except ValueError:
                continue
            if manifest.intact(keys):
                return manifest
        return None

    def _claim(self, seen: set[int]) -> int:
        """A generation number of this publisher's own: one more than any ``seen``, taken by
        a conditional PUT of its claim (a publisher listing at the same time gets the next)."""
        n = max(seen, default=0) + 1
        claim = json.dumps(
            {"host": socket.gethostname(), "pid": os.getpid(), "at": self.clock.now()}
        ).encode()
        for _attempt in range(CLAIM_ATTEMPTS):
            if self.store.put_new(_claim_key(n), claim):
                return n
            n += 1
        raise GenerationError(f"no free generation number after {CLAIM_ATTEMPTS} claims")

    def _discard(self, n: int) -> None:
        """Delete this publisher's generation ``n``: its objects, claim and manifest."""
        self.store.delete([*self.store.keys(_gen_dir(n)), _claim_key(n), _manifest_key(n)])

    # -- publish ------------------------------------------------------------------------

    def publish(
        self,
        source: str,
        options: TransferOptions,
        keep: int = 2,
        cancel: threading.Event | None = None,
    ) -> GenerationResult:
        """Upload the files of ``source`` that changed since the previous complete
        generation as a new generation, write its manifest, prune to ``keep``."""
        if keep < 1:
            raise ValueError("keep must be >= 1")
        root = source.rstrip("/")
        listing = self.store.keys(META)
        previous = self.newest_complete(listing)
        n = self._claim(_numbers(listing)[1])
        target = self.url + _gen_dir(n)
        plain = dataclasses.replace(options, sync=False)
        before = snapshot(root, options.filters)
        digests = {rel: d for rel in before if (d := _sha256(Path(root) / rel)) is not None}
        earlier = {f.path: f for f in previous.files} if previous else {}
        reused = {
            rel: earlier[rel]
            for rel, digest in digests.items()
            if rel in earlier
            and earlier[rel].sha256 == digest
            and earlier[rel].size == before[rel][0]
        }
        changed = sorted(set(digests) - set(reused))
        summary = TransferSummary()
        if changed:
            summary = transfer(
                root + "/",
                target,
                recursive=True,
                options=_only(plain, changed, len(before)),
                s3=self.s3,
                cancel=cancel,
            )
        # A failure's key is the object's (or the file's relative path): either names rel.
        torn_keys = {f.key for f in summary.failures if "changed while" in f.reason}
        hard = [f for f in summary.failures if f.key not in torn_keys]
        torn = {rel for rel in digests if {rel, self.store.prefix + _gen_dir(n) + rel} & torn_keys}
        if hard or summary.cancelled:
            return GenerationResult(None, summary)  # gen/N stays orphaned; pruned later
        after = snapshot(root, options.filters)
        stable = {
            rel: digest
            for rel, digest in digests.items()
            if after.get(rel) == before[rel]
            and rel not in torn
            and (rel in reused or _sha256(Path(root) / rel) == digest)
        }
        for rel in sorted(set(digests) - set(stable)):
            if rel not in after:
                continue  # deleted during the flush: not in N
            reused.pop(rel, None)
            digest = self._upload_stable(root, rel, target, plain, summary, cancel)
            if digest is None:
                self._discard(n)
                raise GenerationError(
                    f"{rel}: changed during every one of {STABLE_ATTEMPTS} uploads; "
                    f"generation {n} discarded"
                )
            stable[rel] = digest
        present = self.store.keys(_gen_dir(n))
        files = []
        for rel in sorted(stable):
            if rel in reused:
                files.append(dataclasses.replace(reused[rel], sha256=stable[rel]))
                continue
            key = _gen_dir(n) + rel
            if key not in present:
                raise GenerationError(f"{rel}: uploaded but not listed in {self.url}{key}")
            size = present[key].size
            if size != before[rel][0]:
                raise GenerationError(f"{rel}: S3 holds {size} B, the file has {before[rel][0]}")
            files.append(ManifestFile(rel, size, present[key].etag, n, stable[rel]))
        # Objects of files that appeared after the snapshot (or vanished) are not in N.
        wanted = Manifest(n, 0.0, files).keys()
        self.store.delete([key for key in present if key not in wanted])
        manifest = Manifest(n, time.time(), files)
        if not self.store.put_new(_manifest_key(n), manifest.to_json().encode()):
            raise GenerationError(f"generation {n} was published by another writer")
        keys = self.store.keys(META)
        if not manifest.intact(keys):  # another writer's prune removed an earlier object
            self._discard(n)
            raise GenerationError(
                f"generation {n}: an object it names was removed by another writer of "
                f"{self.url} while it was published; generation {n} discarded"
            )
        removed = self.prune(keep, n, keys)
        return GenerationResult(
            n, summary, len(files), manifest.total_bytes, removed, manifest.created_at
        )

    def _upload_stable(
        self,
        root: str,
        rel: str,
        target: str,
        options: TransferOptions,
        summary: TransferSummary,
        cancel: threading.Event | None,
    ) -> str | None:
        """Upload one file until its identity and SHA-256 are the same before and after
        the upload; its SHA-256, or None if it never held still (or vanished)."""
        path = Path(root) / rel
        for _attempt in range(STABLE_ATTEMPTS):
            before, digest = _identity(str(path)), _sha256(path)
            if before is None or digest is None:
                return None
            one = transfer(
                str(path), target + rel, recursive=False, options=options, s3=self.s3, cancel=cancel
            )
            summary.objects_done += one.objects_done
            summary.bytes_done += one.bytes_done
            if one.ok and _identity(str(path)) == before and _sha256(path) == digest:
                return digest
        return None

    def prune(self, keep: int, newest: int, keys: dict[str, Listed] | None = None) -> list[int]:
        """Remove the generations up to ``newest`` older than its ``keep`` newest intact
        ones, and those older than ``newest`` left unfinished for ``ABANDONED_AFTER_S``:
        manifests first, then their objects that no kept manifest names (a kept generation
        may name an object of a removed one). Nothing is deleted if a manifest that would
        be kept cannot be read. ``keys``: a listing of ``.fsx-stage/`` just made."""
        keys = self.store.keys(META) if keys is None else keys
        complete, seen = _numbers(keys)
        kept: list[int] = []
        named: set[str] = set()
        for n in sorted((n for n in complete if n <= newest), reverse=True):
            try:
                manifest = self.manifest(n)
            except ValueError:
                return []
            if manifest.intact(keys):  # one that is not never will be: it counts for nothing
                kept.append(n)
                named |= manifest.keys()
            if len(kept) == keep:
                break
        written: dict[int, float] = {}
        for rel, listed in keys.items():
            if (number := _generation_of(rel)) is not None:
                written[number] = max(written.get(number, 0.0), listed.modified)
        idle = self.clock.now() - ABANDONED_AFTER_S
        doomed = sorted(
            n
            for n in seen
            if n < newest
            and n not in kept
            and (n in complete or written[n] < idle)  # unfinished: its publisher is gone
        )
        dirs = tuple(_gen_dir(n) for n in doomed)
        claims = {_claim_key(n) for n in doomed}
        gone = [
            key
            for key in keys
            if key in claims or (dirs and key.startswith(dirs) and key not in named)
        ]
        self.store.delete([_manifest_key(n) for n in doomed if n in complete])
        done = {_claim_key(n) for n in complete}  # a complete generation's claim has served
        self.store.delete([*gone, *(key for key in keys if key in done)])
        return sorted(
            {n for n in doomed if n in complete}
            | {g for key in gone if (g := _generation_of(key)) is not None}
        )

    # -- restore ------------------------------------------------------------------------

    def restore(
        self,
        destination: str,
        options: TransferOptions,
        cancel: threading.Event | None = None,
        on_event: Callable[[TransferEvent], None] | None = None,
    ) -> GenerationResult:
        """Restore the newest complete generation into ``destination`` (only its files;
        others already there are left alone). Without any manifest: the plain objects
        under DST, as earlier versions wrote them (``.fsx-stage/`` excluded)."""
        manifest = self.newest_complete()
        if manifest is None:
            legacy = dataclasses.replace(options, filters=(*options.filters, LEGACY_EXCLUDE))
            summary = transfer(
                self.url,
                destination,
                recursive=True,
                options=legacy,
                s3=self.s3,
                cancel=cancel,
                on_event=on_event,
            )
            return GenerationResult(None, summary)
        summary = TransferSummary()
        by_dir: dict[int, list[str]] = {}
        for f in manifest.files:
            by_dir.setdefault(f.stored_in, []).append(f.path)
        for stored_in, paths in sorted(by_dir.items()):
            # gen/<N>/ holds exactly N's own files; an older directory holds others too.
            part = transfer(
                self.url + _gen_dir(stored_in),
                destination,
                recursive=True,
                options=options if stored_in == manifest.generation else _only(options, paths),
                s3=self.s3,
                cancel=cancel,
                on_event=on_event,
            )
            _add(summary, part)
        return GenerationResult(
            manifest.generation,
            summary,
            len(manifest.files),
            manifest.total_bytes,
            created_at=manifest.created_at,
            restored=True,
        )


def checkpoint_generation(
    src: str,
    dst: str,
    direction: Direction,
    keep: int,
    options: TransferOptions,
    s3: S3Settings,
    cancel: threading.Event | None,
    on_event: Callable[[TransferEvent], None] | None = None,
) -> GenerationResult:
    """The hooks' step for a checkpoint: restore (a download), else publish. A
    generation that could not be published, or S3 refusing the listing or the manifest,
    is a failure in the summary (the flush stays pending). ``on_event`` sees a restore's
    transfer events."""
    try:
        if direction is Direction.DOWNLOAD:
            return Generations(src, s3).restore(dst, options, cancel, on_event)
        return Generations(dst, s3).publish(src, options, keep, cancel)
    except GenerationError as exc:
        failure = TransferFailure(key=src, reason=str(exc), category="other")
    except OSError:
        raise
    except Exception as exc:  # botocore/aiohttp: S3 did not answer or refused
        category, reason = classify(exc)  # worded as every transfer failure, no secret
        failure = TransferFailure(key=dst, reason=reason, category=category)
    return GenerationResult(None, TransferSummary(failures=[failure]))


def _numbers(keys: dict[str, Listed]) -> tuple[list[int], set[int]]:
    """(complete generations, oldest first; every generation number) of a listing."""
    complete = sorted(
        n
        for rel in keys
        if rel.startswith(META + "manifests/") and (n := _generation_of(rel)) is not None
    )
    return complete, {n for rel in keys if (n := _generation_of(rel)) is not None}


def _sha256(path: Path) -> str | None:
    """The file's SHA-256 (read as the caller, symlinks not followed); None if gone."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _only(options: TransferOptions, paths: list[str], total: int = 0) -> TransferOptions:
    """``options`` selecting exactly ``paths`` (glob characters escaped), unless they are
    all ``total`` files or too many for one filter each: then every selected file."""
    if len(paths) == total or len(paths) > EXACT_PATHS_LIMIT:
        return options
    exact = (Filter(FilterAction.INCLUDE, _escape(p)) for p in paths)
    return dataclasses.replace(options, filters=(Filter(FilterAction.EXCLUDE, "*"), *exact))


def _escape(path: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in path)


def _add(total: TransferSummary, part: TransferSummary) -> None:
    total.objects_done += part.objects_done
    total.objects_skipped += part.objects_skipped
    total.bytes_done += part.bytes_done
    total.elapsed_s += part.elapsed_s
    total.failures.extend(part.failures)
    total.cancelled = total.cancelled or part.cancelled
