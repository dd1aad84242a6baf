"""Progress reports from long-running stages; the core reports, the CLI renders."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    """One progress report from a long-running stage (the CLI renders it as a bar).

    ``wait`` marks a single step that cannot report partial progress (the fused op's first build): it
    reports ``completed=0`` with what it waits for, then ``completed=1`` with how it ended, and the CLI
    shows it as one line, with a live timer on a terminal.
    """

    stage: str
    completed: int
    total: int
    message: str = ""
    wait: bool = False


ProgressCallback = Callable[[Progress], None]


def no_progress(_: Progress) -> None:
    """A progress callback that ignores every report."""
