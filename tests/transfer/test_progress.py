"""The ``cp``/``sync`` progress bar, fed by real transfers against SeaweedFS."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from fsx_stage.cli.transfer import Progress
from fsx_stage.transfer import S3Settings, TransferEvent, TransferOptions, transfer

MiB = 1024 * 1024


class Recorder(Progress):
    """The real bar, drawing every event (not 5 times a second), lines kept in order."""

    def __init__(self) -> None:
        super().__init__(io.StringIO())
        self.kinds: list[str] = []
        self.lines: list[str] = []

    def __call__(self, event: TransferEvent) -> None:
        self.drawn = float("-inf")  # draw now
        super().__call__(event)
        self.kinds.append(event.kind)
        self.lines.append(self.line(self.started + 1.0))


def _download(src: str, dst: Path, s3: S3Settings, recursive: bool, **options: Any) -> Recorder:
    bar = Recorder()
    summary = transfer(
        src,
        str(dst),
        recursive=recursive,
        options=TransferOptions(workers=1, **options),
        s3=s3,
        on_event=bar,
    )
    assert summary.ok, summary.failures
    bar.close()
    return bar


@pytest.mark.parametrize("ranged", [False, True], ids=["one-get", "ranged"])
def test_a_single_object_shows_its_size_as_the_total(
    s3_client: Any, bucket: str, s3: S3Settings, tmp_path: Path, ranged: bool
) -> None:
    s3_client.put_object(Bucket=bucket, Key="big.bin", Body=b"x" * (12 * MiB))
    options = {"multipart_threshold": 5 * MiB, "part_size": 5 * MiB} if ranged else {}
    bar = _download(f"s3://{bucket}/big.bin", tmp_path / "big.bin", s3, False, **options)
    moving = [line for kind, line in zip(bar.kinds, bar.lines, strict=True) if kind == "bytes"]
    assert moving, bar.kinds
    assert all("/12.0MiB " in line for line in moving), moving  # never "48.0MiB/0B"
    assert bar.lines[-1].startswith("[####################] 12.0MiB/12.0MiB")


def test_a_prefix_total_is_a_lower_bound_until_the_listing_is_complete(
    s3_client: Any, bucket: str, s3: S3Settings, tmp_path: Path
) -> None:
    for i in range(5):
        s3_client.put_object(Bucket=bucket, Key=f"p/{i}", Body=b"y" * 1000)
    bar = _download(f"s3://{bucket}/p/", tmp_path / "p", s3, True)
    listed = bar.kinds.index("listed")
    assert bar.kinds.count("queued") == 5 and listed > max(
        i for i, kind in enumerate(bar.kinds) if kind == "queued"
    )
    for line in bar.lines[:listed]:
        assert "/>=" in line and "ETA -:--" in line, line  # no fake total, no fake ETA
    for line in bar.lines[listed:]:
        assert ">=" not in line and "/4.9KiB " in line and "/5 objects" in line, line


def test_each_redraw_clears_the_rest_of_the_line() -> None:
    stream = io.StringIO()
    bar = Progress(stream)
    bar(TransferEvent("queued", "k", 0, 10 * 1024**3))
    bar.draw(bar.started + 1)
    bar(TransferEvent("failed", "k", 0, 10 * 1024**3, "gone", "missing"))
    bar.close()
    frames = stream.getvalue().split("\r")[1:]
    assert frames and all(frame.rstrip("\n").endswith("\x1b[K") for frame in frames)
