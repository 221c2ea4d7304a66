"""The benchmark workloads and their data (full size, or tiny for ``BENCH_QUICK=1``)."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

Direction = Literal["download", "upload"]


@dataclass(frozen=True)
class Workload:
    """One workload: a set of objects moved in one direction by one command."""

    id: str
    title: str
    direction: Direction
    files: tuple[tuple[str, int], ...]  # (relative path, size) of every object
    data: str  # the data set it reads: uploads read the local copy, downloads the objects
    targets: bool  # whether the speed targets apply (W4 is server-bound: report only)

    @property
    def total_bytes(self) -> int:
        return sum(size for _, size in self.files)

    @property
    def count(self) -> int:
        return len(self.files)


def _many(count: int, size: int) -> tuple[tuple[str, int], ...]:
    return tuple((f"f{i:05d}.bin", size) for i in range(count))


def _mixed_tree(count: int, low: int, high: int) -> tuple[tuple[str, int], ...]:
    rng = random.Random(5)  # the same tree on every run
    return tuple((f"d{i % 8}/s{i % 3}/f{i:04d}.bin", rng.randint(low, high)) for i in range(count))


def workloads(quick: bool) -> list[Workload]:
    """W1-W5; ``quick`` shrinks every size for a smoke run."""
    one = 16 * MiB if quick else GiB
    many = 100 if quick else 2000
    mixed = _mixed_tree(10, MiB, 4 * MiB) if quick else _mixed_tree(200, MiB, 32 * MiB)
    big = (("big.bin", one),)
    small = _many(many, 64 * KiB)
    label = f"{one // MiB} MiB" if quick else "1 GiB"
    return [
        Workload("W1", f"one {label} object, download", "download", big, "big", True),
        Workload("W2", f"{many:,} x 64 KiB objects, download", "download", small, "small", True),
        Workload("W3", f"{many:,} x 64 KiB objects, upload", "upload", small, "small", True),
        Workload("W4", f"one {label} object, upload", "upload", big, "big", False),
        Workload(
            "W5",
            f"mixed tree, {len(mixed)} objects of 1-{32 if not quick else 4} MiB, download",
            "download",
            mixed,
            "mixed",
            False,
        ),
    ]


def write_tree(root: Path, files: tuple[tuple[str, int], ...]) -> None:
    """Write incompressible files (random bytes) under ``root``."""
    block = os.urandom(4 * MiB)
    for rel, size in files:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as f:
            left = size
            while left:
                n = min(left, len(block))
                # A fresh 16-byte salt per block keeps blocks distinct without
                # paying os.urandom for every byte.
                f.write(os.urandom(16) + block[16:n] if n > 16 else os.urandom(n))
                left -= n


def local_tree(root: Path) -> dict[str, int]:
    """``{relative path: size}`` of every regular file under ``root``."""
    return {
        str(p.relative_to(root)): p.stat().st_size
        for p in root.rglob("*")
        if p.is_file() and not p.is_symlink()
    }
