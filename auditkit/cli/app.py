"""The application object shared by all commands, and the mapping from failures to exit codes."""

from __future__ import annotations

import json

from dataclasses import dataclass, field
from typing import Any

import click
from rich.console import Console

from auditkit.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_RUNTIME, AuditkitError


@dataclass
class Application:
    """Owns the stderr console, verbosity and JSON mode for one invocation."""

    verbosity: int = 0
    json_output: bool = False
    console: Console = field(default_factory=lambda: Console(stderr=True, highlight=False))

    def info(self, message: str) -> None:
        """A human line on stderr (hidden by -q); ``message`` is printed without rich markup."""
        if self.verbosity >= 0:
            self.console.print(message, markup=False)

    def detail(self, message: str) -> None:
        """A line shown only with -v."""
        if self.verbosity >= 1:
            self.console.print(message, markup=False, style="dim")

    def emit_json(self, payload: dict[str, Any]) -> None:
        """The machine-readable summary on stdout (only with --json)."""
        if self.json_output:
            click.echo(json.dumps(payload, indent=2, sort_keys=True))


def run_cli(group: click.Group, args: list[str] | None = None) -> int:
    """Invoke ``group`` and turn every outcome into a documented exit code.

    Expected failures (:class:`AuditkitError`, click usage errors) print one ``error:`` line and a
    ``hint:`` line, never a traceback; anything else is a bug and gets a rich traceback.
    """
    err = Console(stderr=True, highlight=False)
    try:
        result = group.main(args=args, standalone_mode=False)
    except AuditkitError as exc:
        err.print(f"error: {exc.message}", markup=False, soft_wrap=True)
        if exc.hint:
            err.print(f"hint: {exc.hint}", markup=False, soft_wrap=True)
        return exc.exit_code
    except click.exceptions.Abort:
        err.print("error: interrupted; nothing was written", markup=False)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        err.print("error: interrupted; nothing was written", markup=False)
        return EXIT_INTERRUPTED
    except click.ClickException as exc:
        err.print(f"error: {exc.format_message()}", markup=False, soft_wrap=True)
        err.print("hint: run the command with --help for its usage", markup=False)
        return EXIT_BAD_INPUT
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except Exception:
        err.print_exception(show_locals=False)
        return EXIT_RUNTIME
    return result if isinstance(result, int) else 0



