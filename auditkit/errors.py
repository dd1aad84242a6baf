"""One error family for every expected failure.

The CLI turns these into a single line ``error: <message>`` plus ``hint: <fix>`` and the documented exit
code; anything else is a bug and gets a traceback.
"""

from __future__ import annotations

EXIT_PASSED = 0
EXIT_POLICY_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_RUNTIME = 3
EXIT_INCONCLUSIVE = 4
EXIT_INTERRUPTED = 130


class AuditkitError(Exception):
    """An expected failure with a one-line message and a hint that names the fix."""

    exit_code = EXIT_RUNTIME

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class InputError(AuditkitError):
    """Bad user input: a file, an option, a request, a checkpoint. Exit code 2."""

    exit_code = EXIT_BAD_INPUT


class PluginError(AuditkitError):
    """A plugin is unknown, failed to load, or is registered twice. Exit code 3."""

    exit_code = EXIT_RUNTIME


class RunError(AuditkitError):
    """A run failed at run time (divergence, build failure, ...). Exit code 3."""

    exit_code = EXIT_RUNTIME


class OpBuildError(RunError):
    """The fused C++/CUDA extension could not be built or loaded."""
