"""`auditkit audit`: run the membership-inference battery on any checkpoint against a request."""

from __future__ import annotations

from pathlib import Path

import click

from auditkit.cli.app import Application
from auditkit.cli.options import DEFAULT_CHECKPOINT, output_options, run_options, settings_from_options


@click.command()
@click.option("--ids", "request", required=True, type=click.Path(path_type=Path),
              help="CSV of the sample IDs the checkpoint should have forgotten.")
@click.option("--original", type=click.Path(path_type=Path), default=None,
              help=f"The model trained on all the data, for before/after [default: {DEFAULT_CHECKPOINT}].")
@click.option("--method", default=None,
              help="How the checkpoint was unlearned (a method plugin), for u-lira's unlearned shadows.")
@click.option("--option", "method_options", multiple=True, metavar="KEY=VALUE",
              help="Option of that method (repeatable), as it was run, e.g. --option epochs=5.")
@run_options
@output_options
@click.pass_obj
def audit(app: Application, **flags) -> int:
    """Audit --checkpoint (e.g. a retrained model, or someone else's unlearning) against a request.

    The checkpoint is audited in the role of the unlearned model, compared with --original and, with
    --retrained, with a model retrained without the samples. With --attacks …,u-lira, --method and
    --option say how the checkpoint was unlearned: u-lira unlearns its shadow models the same way.
    Writes record.json and report.html into
    --out and appends to the audit trail. Exit code 0 when the audit passes, 1 when it fails, 4 when
    it is inconclusive.
    """
    from auditkit.pipeline import run_audit_checkpoint

    if (code := app.scale_out()) is not None:  # --workers N: this command again, in N worker processes
        return code
    app.start_torch()

    from auditkit.errors import InputError

    settings = settings_from_options(flags, kind="audit")
    if settings.checkpoint is None:
        raise click.UsageError("auditkit audit needs --checkpoint (the model to audit)")
    if (flags["method"] is not None or flags["method_options"]) and "u-lira" not in (settings.attacks or []):
        # Only u-lira unlearns anything in an audit: without it the flags would be silently ignored.
        raise InputError("--method and --option say how the audited checkpoint was unlearned, which only u-lira uses",
                         hint="add u-lira to --attacks (e.g. --attacks loss,u-lira), or drop --method and --option")
    if flags["method_options"] and flags["method"] is None:
        raise InputError("--option needs --method, the method whose options they are",
                         hint="pass --method NAME with --option KEY=VALUE")
    with app.progress() as progress:
        outcome = run_audit_checkpoint(settings, progress=progress)
    app.report_outcome(outcome)
    return outcome.exit_code
