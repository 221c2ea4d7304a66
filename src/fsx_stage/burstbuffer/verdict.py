"""The contract between ``fsx-stage bb`` and ``burst_buffer.lua``: one verdict line.

The command's last stdout line is ``OK``, ``BUSY`` or ``ERROR <message>`` (one line, no
credentials); the exit status is 0 for OK and BUSY, 1 for ERROR, 2 for a usage error.
The lua returns ``slurm.SUCCESS`` for OK, ``slurm.SUCCESS, "BUSY"`` for BUSY and
``slurm.ERROR, message`` for ERROR: Slurm shows the message as the job's reason and in its
SystemComment; after data_in it holds the job until ``scontrol release JOBID`` runs the
phase again (22.05 does not hold a job after a failed data_out, docs/modes.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fsx_stage.hooks.slurmctl import one_line
from fsx_stage.redaction import redact


@dataclass(frozen=True)
class Verdict:
    word: Literal["OK", "BUSY", "ERROR"]
    message: str = ""

    @classmethod
    def error(cls, message: str) -> Verdict:
        return cls("ERROR", one_line(redact(message)))

    @property
    def exit_code(self) -> int:
        return 1 if self.word == "ERROR" else 0

    def line(self) -> str:
        return f"ERROR {self.message}" if self.word == "ERROR" else self.word


OK = Verdict("OK")
BUSY = Verdict("BUSY")
