"""The application object shared by all commands, and the mapping from failures to exit codes."""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as ProgressBars
from rich.text import Text

from auditkit.errors import (
    EXIT_BAD_INPUT,
    EXIT_INCONCLUSIVE,
    EXIT_INTERRUPTED,
    EXIT_POLICY_FAILED,
    EXIT_RUNTIME,
    AuditkitError,
)
from auditkit.fsutil import forget_written, written
from auditkit.messages import MAX_LINE, one_line
from auditkit.progress import Progress, ProgressCallback


@dataclass
class Application:
    """Owns the stderr console, verbosity and JSON mode for one invocation."""

    verbosity: int = 0
    json_output: bool = False
    console: Console = field(default_factory=lambda: Console(stderr=True, highlight=False))
    threads: int = 1
    loader_workers: int = 0
    workers: int = 1

    def __post_init__(self) -> None:
        from auditkit import distributed

        if not distributed.is_writer():  # progress, outcome and JSON come from rank 0 alone
            self.verbosity, self.json_output = -1, False

    def scale_out(self) -> int | None:
        """With ``--workers N`` (N > 1), run this same command in N local worker processes through torch's
        elastic launcher and return its exit code; None when this process is to do the work itself (one
        worker, or already a worker of a launch such as ``torchrun``).

        The workers print nothing but rank 0's progress and outcome; a failure comes back here and is
        printed once, as the one ``error:``/``hint:`` pair of the run.
        """
        from auditkit import distributed

        if self.workers <= 1 or distributed.launched():
            return None
        argv = _argv.get()
        code, failure = distributed.launch(_cli_worker, (argv,), workers=self.workers)
        if failure is not None:
            return _fail(failure["message"], failure["hint"], code, json_output="--json" in argv,
                         problems=failure["problems"])
        return code

    def start_torch(self) -> None:
        """Import torch and apply --threads and --loader-workers: called by the commands that run models."""
        import torch

        from auditkit.data import set_loader_workers

        torch.set_num_threads(self.threads)
        set_loader_workers(self.loader_workers)

    def info(self, message: str) -> None:
        """A human line on stderr (hidden by -q); ``message`` is printed without rich markup, and never
        wrapped by rich (80 columns without a terminal would split a path mid-way in a CI log)."""
        if self.verbosity >= 0:
            self.console.print(message, markup=False, soft_wrap=True)

    def detail(self, message: str) -> None:
        """A line shown only with -v."""
        if self.verbosity >= 1:
            self.console.print(message, markup=False, style="dim", soft_wrap=True)

    def warn(self, message: str) -> None:
        """A warning on stderr (shown unless -q)."""
        if self.verbosity >= 0:
            self.console.print(f"warning: {message}", markup=False, style="yellow", soft_wrap=True)

    def _line(self, message: str) -> None:
        """Like :meth:`info`, but never hard-wrapped: one verdict per line, whatever the terminal width."""
        if self.verbosity >= 0:
            self.console.print(message, markup=False, soft_wrap=True)

    def emit_json(self, payload: dict[str, Any]) -> None:
        """The machine-readable summary on stdout (only with --json)."""
        if self.json_output:
            click.echo(json.dumps(payload, indent=2, sort_keys=True, ensure_ascii=False))

    def report_outcome(self, outcome: Any) -> None:
        """The end of `forget` / `audit`: checks that did not pass, the audit's power, and last the outcome
        with why (and, when inconclusive, what would make it conclusive); then where the evidence is."""
        from auditkit.audit.results import power_summary

        audit = outcome.record.audit
        for warning in outcome.warnings:
            self.warn(warning)
        if audit is None:
            self.info("audit skipped (--no-audit): nothing shows that the samples are forgotten")
        else:
            for verdict in audit["verdicts"]:
                if verdict["status"] != "pass":
                    self._line(f"  {verdict['attack']}: {verdict['status']} ({verdict['reason']})")
            for warning in audit["warnings"]:
                self.detail(f"  note: {warning}")
            self._line(f"power: {power_summary(audit)}")
            line = f"audit {audit['outcome'].upper()}: {audit['outcome_reason']}"
            if audit["conclusive_hint"]:
                line += f"; to make it conclusive: {audit['conclusive_hint']}"
            self._line(line)
        self.detail(f"record: {outcome.out / 'record.json'}")
        self.detail(f"audit trail: {outcome.trail} (line {outcome.trail_line.index + 1})")
        self.info(f"report: {outcome.out / 'report.html'}")
        self.emit_json(outcome.summary())

    @contextlib.contextmanager
    def progress(self) -> Iterator[ProgressCallback]:
        """A progress callback for the core: rich bars on a terminal, silence otherwise (CI, pipes, -q).

        A report with nothing completed yet and a message announces a stage's cost and is always shown
        (unless -q); without a terminal, -v also logs each stage once it completes. A ``wait`` report (the
        op's first build) is one line either way: a live timer on a terminal, and otherwise its message
        at once and how it ended, with the time it took, on the same line when it ends.
        """
        if self.verbosity < 0 or not self.console.is_terminal:
            def log(report: Progress) -> None:
                if report.wait:
                    if self.verbosity >= 0:
                        self.console.print(report.message, markup=False, soft_wrap=True,
                                           end=" " if report.completed == 0 else "\n")
                elif report.completed == 0 and report.message:
                    self.info(f"{report.stage}: {report.message}")
                elif report.completed >= report.total:
                    self.detail(f"{report.stage}: done ({report.total}) {report.message}".rstrip())

            yield log
            return
        columns = (TextColumn("{task.description}", markup=False), BarColumn(), _StepCount(), TimeElapsedColumn())
        with ProgressBars(*columns, console=self.console, transient=True) as bars:
            tasks: dict[str, Any] = {}
            waiting: dict[str, str] = {}

            def render(report: Progress) -> None:
                if report.wait:  # a pulsing bar with the elapsed time, then one permanent line
                    if report.completed == 0:
                        waiting[report.stage] = report.message
                        tasks[report.stage] = bars.add_task(report.message, total=None, wait=True)
                    else:
                        bars.remove_task(tasks.pop(report.stage))
                        self.info(f"{waiting.pop(report.stage, '')} {report.message}".strip())
                    return
                if report.completed == 0 and report.message:
                    # A stage announcing its cost before it starts (e.g. reference models to train).
                    self.info(f"{report.stage}: {report.message}")
                if report.stage not in tasks:
                    tasks[report.stage] = bars.add_task(report.stage, total=report.total)
                label = f"{report.stage} {report.message}".rstrip()
                bars.update(tasks[report.stage], completed=report.completed, total=report.total, description=label)

            yield render


class _StepCount(MofNCompleteColumn):
    """``done/total`` of a stage; nothing for a wait, whose elapsed time is all there is to show."""

    def render(self, task: Any) -> Any:
        return Text("") if task.fields.get("wait") else super().render(task)


def run_cli(group: click.Group, args: list[str] | None = None) -> int:
    """Invoke ``group`` and turn every outcome into a documented exit code.

    Expected failures (:class:`AuditkitError`, click usage errors, interruption) print one ``error:``
    line and a ``hint:`` line (each at most :data:`~auditkit.messages.MAX_LINE` characters), never a
    traceback, and with ``--json`` also an ``{"error", "hint", "exit_code"}`` object on stdout (plus
    ``"problems"``, every one, when the error lists several, e.g. a config file's); anything else is a
    bug and gets a rich traceback (exit code 3).
    """
    from auditkit import distributed

    argv = list(sys.argv[1:] if args is None else args)
    code, failure = _invoke(group, argv)
    if failure is not None:
        return _fail(failure["message"], failure["hint"], code, json_output="--json" in argv,
                     problems=failure["problems"])
    if code in (EXIT_POLICY_FAILED, EXIT_INCONCLUSIVE) and not distributed.is_writer():
        # Under torchrun the first non-zero exit is "the" failure and the others are stopped: the writer's
        # code alone carries the outcome, and a rank that finished its share exits 0.
        return 0
    return code


#: The arguments of the invocation being run: ``--workers`` relaunches the same command line.
_argv: contextvars.ContextVar[list[str]] = contextvars.ContextVar("argv", default=[])


def _invoke(group: click.Group, argv: list[str]) -> tuple[int, dict[str, Any] | None]:
    """Run ``group`` on ``argv``: the exit code, and the expected failure to print (None when none)."""
    from auditkit import distributed

    forget_written()
    token = _argv.set(argv)
    code, failure = 0, None
    try:
        result = group.main(args=argv, standalone_mode=False)
        code = result if isinstance(result, int) else 0
    except AuditkitError as exc:
        code, failure = exc.exit_code, _failure(exc.message, exc.hint, getattr(exc, "problems", None))
    except (click.exceptions.Abort, KeyboardInterrupt):
        done = written()  # Ctrl-C or SIGTERM: say truthfully what is already in place
        message = f"interrupted after writing {'; '.join(done)}" if done else "interrupted; nothing was written"
        hint = "what is named above is complete; nothing else was written" if done else None
        code, failure = EXIT_INTERRUPTED, _failure(message, hint)
    except click.ClickException as exc:
        code, failure = EXIT_BAD_INPUT, _failure(exc.format_message(), "run the command with --help for its usage")
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except Exception:
        Console(stderr=True, highlight=False).print_exception(show_locals=False)
        code = EXIT_RUNTIME
    finally:
        _argv.reset(token)
    distributed.leave(clean=failure is None and code != EXIT_RUNTIME)
    return code, failure


def _failure(message: str, hint: str | None, problems: list[str] | None = None) -> dict[str, Any]:
    return {"message": message, "hint": hint, "problems": problems}


def _cli_worker(argv: list[str]) -> tuple[int, dict[str, Any] | None]:
    """One worker of ``--workers``: the command in this process, as a rank of the launch. Its failure goes
    back to the launching process, which prints it once (ranks agree on an error: they share every
    decision through :mod:`auditkit.distributed`)."""
    from auditkit.cli import _terminate, cli

    signal.signal(signal.SIGTERM, _terminate)
    code, failure = _invoke(cli, argv)
    if code == EXIT_INTERRUPTED:  # the agent is stopping the workers (one died, or Ctrl-C): it reads no result
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    # The agent keeps a finished worker until it has read the result; a SIGTERM then just ends it.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    return code, failure


def _fail(message: str, hint: str | None, code: int, *, json_output: bool, problems: list[str] | None = None) -> int:
    # The last guard of the two-line contract: whatever a message quotes, each line stays one short line.
    message = one_line(message, limit=MAX_LINE - len("error: "))
    hint = one_line(hint, limit=MAX_LINE - len("hint: ")) if hint else hint
    err = Console(stderr=True, highlight=False)
    err.print(f"error: {message}", markup=False, soft_wrap=True)
    if hint:
        err.print(f"hint: {hint}", markup=False, soft_wrap=True)
    if json_output:
        failure = {"error": message, "hint": hint, "exit_code": code, **({"problems": problems} if problems else {})}
        click.echo(json.dumps(failure, ensure_ascii=False))
    return code
