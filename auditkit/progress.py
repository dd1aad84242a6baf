"""Progress reports from long-running stages; the core reports, the CLI renders."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    """One progress report from a long-running stage (the CLI renders it as a bar)."""

    stage: str
    completed: int
    total: int
    message: str = ""


ProgressCallback = Callable[[Progress], None]


def no_progress(_: Progress) -> None:
    """A progress callback that ignores every report."""
