"""``fsx-stage cp`` and ``fsx-stage sync``: copy between S3 and a local directory."""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TextIO

from fsx_stage import sizes
from fsx_stage.direction import Direction
from fsx_stage.s3url import S3UrlError

if TYPE_CHECKING:  # the engine (aiobotocore, aiohttp) is imported only when a copy runs
    from fsx_stage.transfer import Encryption, TransferEvent, TransferSummary

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


_SSE_HELP = """\
encryption (both directions):
  --sse AES256                         SSE-S3
  --sse aws:kms [--sse-kms-key-id ID]  SSE-KMS (default key if no ID)
  --sse-c-key-file FILE                SSE-C; FILE holds the 32-byte key, raw or base64

sizes: bytes, or a number with K, M, G, T (optionally KiB/KB...; all binary: 64M = 64 MiB)
filters: --exclude/--include are globs on the path relative to SRC (* also matches /),
  applied in the order given: the last one that matches decides (as aws s3 sync).
exit status: 0 all done, 1 some object failed (listed on stderr), 2 bad usage
"""


def parse_size(text: str) -> int:
    """A size in the one grammar of :mod:`fsx_stage.sizes`, for argparse."""
    try:
        return sizes.parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _at_most(high: int) -> Callable[[str], int]:
    """A positive integer up to ``high`` (the limits of ``TransferOptions``, in user words)."""

    def parse(text: str) -> int:
        value = _positive(text)
        if value > high:
            raise argparse.ArgumentTypeError(f"expected at most {high}, got {text!r}")
        return value

    return parse


def _size_between(low: int, high: int | None) -> Callable[[str], int]:
    """A size within S3's multipart limits, e.g. ``expected a size from 5MiB to 5GiB``."""

    def parse(text: str) -> int:
        value = parse_size(text)
        if value < low or (high is not None and value > high):
            bounds = (
                f"from {_human(low)} to {_human(high)}" if high else f"of at least {_human(low)}"
            )
            raise argparse.ArgumentTypeError(
                f"expected a size {bounds.replace('.0', '')}, got {text!r}"
            )
        return value

    return parse


COMMANDS = {
    "cp": "copy an object, a prefix or a tree between S3 and a local path",
    "sync": "like cp --recursive, skipping files that are already identical",
}


class _FilterAction(argparse.Action):
    """Collect ``--include``/``--exclude`` into one ordered list of (action, glob)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        action = (option_string or "").lstrip("-")
        collected: list[tuple[str, str]] = list(getattr(namespace, self.dest, []))
        setattr(namespace, self.dest, [*collected, (action, str(values))])


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for name, summary in COMMANDS.items():
        parser = subparsers.add_parser(
            name,
            help=summary,
            description=summary,
            epilog=_SSE_HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        parser.add_argument(
            "src",
            metavar="SRC",
            nargs="+",
            help="s3://bucket/key, s3://bucket/prefix/ or a path; several s3:// objects of "
            "one bucket (a list) are downloaded into the directory DST",
        )
        parser.add_argument(
            "dst", metavar="DST", help="s3://bucket/key, s3://bucket/prefix/ or a path"
        )
        if name == "cp":
            parser.add_argument(
                "--recursive",
                "-r",
                action="store_true",
                help="copy everything under the prefix or directory",
            )
        for action in ("include", "exclude"):
            parser.add_argument(
                f"--{action}", action=_FilterAction, dest="filters", default=[], metavar="GLOB"
            )
        parser.add_argument(
            "--concurrency",
            type=_at_most(1024),
            default=64,
            metavar="N",
            help="requests in flight per worker process (default 64)",
        )
        parser.add_argument(
            "--workers",
            type=_at_most(64),
            default=None,
            metavar="N",
            help="worker processes for many objects (default: one per two cores, max 8)",
        )
        parser.add_argument(
            "--part-size",
            type=_size_between(5 << 20, 5 << 30),
            default=None,
            metavar="SIZE",
            help="multipart part / download range size (default: adaptive)",
        )
        parser.add_argument(
            "--multipart-threshold",
            type=_size_between(5 << 20, None),
            default=16 << 20,
            metavar="SIZE",
            help="use parts above this size (default 16MiB)",
        )
        parser.add_argument(
            "--endpoint-url",
            metavar="URL",
            help="S3 endpoint (default: AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL)",
        )
        parser.add_argument("--region", metavar="REGION")
        parser.add_argument("--profile", metavar="NAME")
        parser.add_argument("--path-style", action="store_true", help="path-style addressing")
        parser.add_argument("--sse", choices=["AES256", "aws:kms"], help="server-side encryption")
        parser.add_argument("--sse-kms-key-id", metavar="ID")
        parser.add_argument("--sse-c-key-file", type=Path, metavar="FILE")
        parser.add_argument(
            "--delete",
            action="store_true",
            help="sync: remove destination files/objects not in SRC (excluded ones are kept)",
        )
        parser.add_argument(
            "--exact-timestamps",
            action="store_true",
            help="sync downloads: same-size files are copied again unless their mtime equals "
            "the object's LastModified (files fsx-stage downloaded: the ETag record decides)",
        )
        parser.add_argument(
            "--dryrun", action="store_true", help="print what would be copied; change nothing"
        )
        parser.add_argument("--fsync", action="store_true", help="fsync each file before rename")
        parser.add_argument(
            "--preserve-owner",
            action="store_true",
            help="restore file-owner/file-group (root only)",
        )
        parser.add_argument(
            "--json",
            action="store_true",
            help="one JSON line per event on stdout, then a summary line",
        )
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")
        parser.add_argument(
            "--verbose", "-v", action="store_true", help="log retries and their reasons on stderr"
        )
        parser.set_defaults(handler=run, sync=name == "sync")


def _encryption(args: argparse.Namespace) -> Encryption:
    from fsx_stage.transfer import Encryption, Secret, TransferUsageError

    if args.sse_c_key_file is not None:
        if args.sse:
            raise TransferUsageError("--sse and --sse-c-key-file exclude each other")
        raw = args.sse_c_key_file.read_bytes()
        if len(raw) != 32:
            try:
                raw = base64.b64decode(raw.strip(), validate=True)
            except (binascii.Error, ValueError):
                raw = b""
        if len(raw) != 32:
            raise TransferUsageError(
                f"--sse-c-key-file {args.sse_c_key_file}: expected 32 raw bytes or their base64"
            )
        return Encryption(mode="sse-c", customer_key=Secret(base64.b64encode(raw).decode()))
    if args.sse_kms_key_id and args.sse != "aws:kms":
        raise TransferUsageError("--sse-kms-key-id needs --sse aws:kms")
    if args.sse == "AES256":
        return Encryption(mode="sse-s3")
    if args.sse == "aws:kms":
        return Encryption(mode="sse-kms", kms_key_id=args.sse_kms_key_id)
    return Encryption()


class Progress:
    """A one-line progress bar with rate and ETA, redrawn at most 5 times a second.

    The total is what the listing announced so far: while it is still streaming (before
    the ``listed`` event) it is shown as a lower bound (``>=``) with no ETA. An object
    queued with an unknown size (a single key, before its GET) counts with the size its
    first bytes report.
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.started = time.monotonic()
        self.drawn = 0.0
        self.total = 0
        self.listed = False
        self.done_bytes = 0
        self.objects = 0
        self.finished = 0
        self.partial: dict[str, int] = {}
        self.unsized: set[str] = set()  # queued without a size, none reported yet

    def __call__(self, event: TransferEvent) -> None:
        if event.kind == "queued":
            self.objects += 1
            if event.total >= 0:
                self.total += event.total
            else:
                self.unsized.add(event.key)
        elif event.kind == "listed":
            self.listed = True
        elif event.kind == "bytes":
            self._size_known(event)
            self.partial[event.key] = self.partial.get(event.key, 0) + event.bytes
        else:
            self._size_known(event)
            self.partial.pop(event.key, None)
            self.finished += 1
            self.done_bytes += event.bytes if event.kind == "done" else max(event.total, 0)
        now = time.monotonic()
        if now - self.drawn >= 0.2:
            self.drawn = now
            self.draw(now)

    def _size_known(self, event: TransferEvent) -> None:
        if event.key in self.unsized and event.total >= 0:
            self.unsized.discard(event.key)
            self.total += event.total

    def line(self, now: float) -> str:
        """The bar's text (no carriage return)."""
        moved = self.done_bytes + sum(self.partial.values())
        elapsed = max(now - self.started, 1e-6)
        rate = moved / elapsed
        total = max(self.total, moved)
        fraction = moved / total if total else 0.0
        bar = "#" * int(fraction * 20)
        if self.listed:
            eta_s = (total - moved) / rate if rate > 0 else 0.0
            eta = f"{int(eta_s) // 60}:{int(eta_s) % 60:02d}"
            size, count = _human(total), str(self.objects)
        else:
            eta, size, count = "-:--", f">={_human(total)}", f">={self.objects}"
        return (
            f"[{bar:<20}] {_human(moved)}/{size} {_human(rate)}/s "
            f"ETA {eta} {self.finished}/{count} objects"
        )

    def draw(self, now: float) -> None:
        # \x1b[K clears what a longer previous line left at the end.
        self.stream.write(f"\r{self.line(now)}\x1b[K")
        self.stream.flush()

    def close(self) -> None:
        self.listed = True  # whatever was listed is all there is
        self.draw(time.monotonic())
        self.stream.write("\n")
        self.stream.flush()


def _human(amount: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if amount < 1024:
            return f"{amount:.1f}{unit}" if unit != "B" else f"{int(amount)}B"
        amount /= 1024
    return f"{amount:.1f}TiB"


def _json_emitter(stream: TextIO) -> Callable[[TransferEvent], None]:
    def emit(event: TransferEvent) -> None:
        record = {"event": event.kind, "key": event.key, "bytes": event.bytes, "total": event.total}
        if event.kind == "failed":
            record.update(reason=event.reason, category=event.category)
        stream.write(json.dumps(record) + "\n")

    return emit


def run(args: argparse.Namespace) -> int:
    from fsx_stage.filters import Filter
    from fsx_stage.transfer import S3Settings, TransferOptions, TransferUsageError, transfer

    if args.verbose:
        logging.basicConfig(level=logging.WARNING, format="fsx-stage: %(message)s")
        logging.getLogger("fsx_stage").setLevel(logging.INFO)
    for flag, given in (("--delete", args.delete), ("--exact-timestamps", args.exact_timestamps)):
        if given and not args.sync:
            print(
                f"fsx-stage {args.command}: {flag} is for sync: use fsx-stage sync SRC DST {flag}",
                file=sys.stderr,
            )
            return EXIT_USAGE
    if args.delete and len(args.src) > 1:
        print("fsx-stage sync: --delete takes one SRC prefix or directory", file=sys.stderr)
        return EXIT_USAGE
    try:
        options = TransferOptions(
            concurrency=args.concurrency,
            workers=args.workers,
            part_size=args.part_size,
            multipart_threshold=args.multipart_threshold,
            filters=tuple(Filter(action=action, pattern=glob) for action, glob in args.filters),
            sync=args.sync,
            fsync=args.fsync,
            preserve_owner=args.preserve_owner,
            dryrun=args.dryrun,
            delete=args.delete,
            exact_timestamps=args.exact_timestamps,
            encryption=_encryption(args),
        )
        s3 = S3Settings(
            endpoint_url=args.endpoint_url,
            region=args.region,
            profile=args.profile,
            addressing_style="path" if args.path_style else "auto",
        )
    except (ValueError, OSError) as exc:
        print(f"fsx-stage {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE

    progress: Progress | None = (
        Progress(sys.stderr)
        if not args.json and not args.no_progress and sys.stderr.isatty()
        else None
    )
    on_event: Callable[[TransferEvent], None] | None = (
        _json_emitter(sys.stdout) if args.json else progress
    )
    if progress is not None and args.delete:
        bar = progress

        def on_event(event: TransferEvent) -> None:  # removals are not progress
            if event.kind != "deleted":
                bar(event)

    planned: list[int] = []
    if args.dryrun and not args.json:
        try:
            on_event = _dryrun_printer(args, planned)
        except (TransferUsageError, S3UrlError) as exc:
            print(f"fsx-stage {args.command}: {exc}", file=sys.stderr)
            return EXIT_USAGE
    cancel = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        cancel.set()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        summary = transfer(
            args.src[0] if len(args.src) == 1 else args.src,
            args.dst,
            recursive=(args.sync and len(args.src) == 1) or getattr(args, "recursive", False),
            options=options,
            s3=s3,
            on_event=on_event,
            cancel=cancel,
        )
    except (TransferUsageError, S3UrlError) as exc:
        print(f"fsx-stage {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if progress is not None:
            progress.close()
    return _report(args, summary, planned)


def _dryrun_printer(
    args: argparse.Namespace, planned: list[int]
) -> Callable[[TransferEvent], None]:
    """Prints ``(dryrun) download: s3://b/k to path`` per planned job; counts into ``planned``."""
    from fsx_stage.transfer.objects.routes import resolve

    recursive = (args.sync and len(args.src) == 1) or getattr(args, "recursive", False)
    route = resolve(args.src[0] if len(args.src) == 1 else args.src, args.dst, recursive)
    names = {job.key: job.rel for job in route.named}
    root = route.local_root.rstrip("/") or "/"

    def emit(event: TransferEvent) -> None:
        if event.kind == "deleted":
            download = route.direction is Direction.DOWNLOAD
            gone = f"{root}/{event.key}" if download else f"s3://{route.bucket}/{event.key}"
            print(f"(dryrun) delete: {gone}")
            return
        if event.kind != "planned":
            return
        planned.append(event.bytes)
        path = f"{root}/{names.get(event.key, event.key[len(route.prefix) :])}"
        url = f"s3://{route.bucket}/{event.key}"
        line = (
            f"download: {url} to {path}"
            if route.direction is Direction.DOWNLOAD
            else (f"upload: {path} to {url}")
        )
        print(f"(dryrun) {line}")

    return emit


def _report(args: argparse.Namespace, summary: TransferSummary, planned: Sequence[int] = ()) -> int:
    from fsx_stage.cli import transfer_summary

    prefix = f"fsx-stage {args.command}: "
    if args.json:  # stdout carries every event; stderr lists each failure
        lines = [f"failed: {f.key}: {f.reason} [{f.category}]" for f in summary.failures]
    else:
        lines = transfer_summary.failure_lines(summary.failures)
    if summary.cancelled:
        lines.append("cancelled")
    if args.json:
        record = {"event": "summary", "ok": summary.ok, **summary.to_json()}
        sys.stdout.write(json.dumps(record) + "\n")
    elif summary.ok and not (summary.objects_done or summary.objects_skipped or planned):
        lines.append(transfer_summary.empty_source(args.src))
    elif args.dryrun:
        lines.append(
            transfer_summary.dryrun_line(summary, Direction.of_source(args.src[0]), planned)
        )
    else:
        lines.append(transfer_summary.totals_line(summary, Direction.of_source(args.src[0])))
    for line in lines:
        print(prefix + line, file=sys.stderr)
    return EXIT_OK if summary.ok else EXIT_FAILED
