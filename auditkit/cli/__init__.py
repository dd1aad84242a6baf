"""The `auditkit` command line: one module per command, an Application object in ``ctx.obj``."""

from __future__ import annotations

import signal
import sys

import click

from auditkit import __version__
from auditkit.cli.adopt import adopt
from auditkit.cli.app import Application, run_cli
from auditkit.cli.audit import audit
from auditkit.cli.doctor import doctor
from auditkit.cli.forget import forget
from auditkit.cli.ids import ids
from auditkit.cli.plugins import plugins
from auditkit.cli.report import report
from auditkit.cli.trail import trail
from auditkit.cli.train import train
from auditkit.cli.verify import verify

MAX_THREADS = 1024
MAX_WORKERS = 256


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="auditkit")
@click.option("-v", "--verbose", count=True, help="More detail on stderr (repeatable).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr.")
@click.option("--json", "json_output", is_flag=True, help="Print a machine-readable summary on stdout.")
# Bounded: a huge AUDITKIT_THREADS overflowed torch.set_num_threads with a traceback.
@click.option("--threads", type=click.IntRange(min=1, max=MAX_THREADS), default=1, show_default=True,
              envvar="AUDITKIT_THREADS",
              help="CPU threads for torch (env AUDITKIT_THREADS). One is fastest for the small bundled "
                   "models; raise it for large ones.")
@click.option("--loader-workers", type=click.IntRange(min=0), default=0, show_default=True,
              envvar="AUDITKIT_LOADER_WORKERS",
              help="DataLoader worker processes reading streamed datasets such as imagefolder (env "
                   "AUDITKIT_LOADER_WORKERS); results do not depend on it.")
@click.option("--workers", type=click.IntRange(min=1, max=MAX_WORKERS), default=1, show_default=True,
              envvar="AUDITKIT_WORKERS",
              help="Worker processes on this machine that share the heavy work of forget and audit (reference "
                   "models; ∇τ's batches), through torch's elastic launcher (env AUDITKIT_WORKERS). Audit "
                   "results do not depend on it; ∇τ with N > 1 is data-parallel (see README, Scaling out).")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool, json_output: bool, threads: int,
        loader_workers: int, workers: int) -> None:
    """Forget samples from a trained PyTorch model with ∇τ, audit it with membership-inference
    attacks, and write a compliance report.

    \b
    Quick start:  auditkit train  &&  auditkit forget --ids examples/request.csv --retrain-reference
    Exit codes: 0 audit passed, 1 audit failed the policy (or verify found tampering),
    2 usage error or bad input, 3 runtime or plugin error, 4 audit inconclusive (it could not have
    failed: too few samples, or no measurable leak before unlearning), 130 interrupted (Ctrl-C or SIGTERM).
    """
    # torch is imported by the commands that use it (Application.start_torch): `--help` of any command,
    # `verify` and `report` never load it.
    ctx.obj = Application(verbosity=-1 if quiet else verbose, json_output=json_output, threads=threads,
                          loader_workers=loader_workers, workers=workers)


for command in (train, adopt, forget, audit, report, ids, plugins, doctor, verify, trail):
    cli.add_command(command)


def _terminate(_signum: int, _frame: object) -> None:
    # SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so staging folders are removed on the way out;
    # while the trail's publish protocol runs, both are held until it is done (auditkit.evidence.ledger).
    raise KeyboardInterrupt


def main() -> None:
    """Console-script entry point."""
    signal.signal(signal.SIGTERM, _terminate)
    sys.exit(run_cli(cli))
