"""`auditkit forget`: validate a deletion request, unlearn, audit, and write the evidence."""

from __future__ import annotations

from pathlib import Path

import click

from auditkit.cli.app import Application
from auditkit.cli.options import output_options, run_options, settings_from_options


@click.command()
@click.option("--ids", "request", required=True, type=click.Path(path_type=Path),
              help="CSV of sample IDs to forget (an `id` column, or one column without header).")
@click.option("--method", default=None, help="Unlearning method plugin [default: nabla-tau].")
@click.option("--option", "method_options", multiple=True, metavar="KEY=VALUE",
              help="Option of the method (repeatable), e.g. --option per_sample=true.")
@click.option("--no-audit", is_flag=True, help="Skip the membership-inference battery (the report says so).")
@click.option("--retrain-reference", is_flag=True,
              help="Also retrain from scratch without the samples (the checkpoint's own recipe), write it as "
                   "retrained.pt and judge the verdicts against it. Costs one training run.")
@run_options
@output_options
@click.pass_obj
def forget(app: Application, **flags) -> int:
    """Forget the samples in --ids from a trained model and prove it with a membership-inference audit.

    \b
    Writes into --out (default runs/<UTC time>): model.pt (the unlearned checkpoint), retrained.pt
    (with --retrain-reference), record.json
    (request hash, checkpoint hashes, method, history, attack results, provenance) and report.html,
    and appends one line to the audit trail. Exit code 0 when the audit passes (or is skipped), 1 when
    it fails the policy, 4 when it is inconclusive (the unlearned model is written all the same).
    """
    from auditkit.errors import InputError
    from auditkit.pipeline import run_forget

    app.start_torch()

    # Flags that only feed the battery would be silently ignored: the user meant one or the other.
    unused = [flag for flag, key in (("--attacks", "attacks"), ("--retrained", "retrained")) if flags[key] is not None]
    unused += ["--retrain-reference"] if flags["retrain_reference"] else []
    unused += ["--attack-option"] if flags["attack_options"] else []
    if flags["no_audit"] and unused:
        raise InputError(f"{' and '.join(unused)} cannot be combined with --no-audit, which skips the battery",
                         hint=f"drop --no-audit to audit, or drop {' and '.join(unused)}")
    if flags["retrain_reference"] and flags["retrained"] is not None:
        raise InputError("--retrain-reference and --retrained both name the retrained reference model",
                         hint="pass --retrained PATH to use a model you retrained, or --retrain-reference to train one")
    if (code := app.scale_out()) is not None:  # --workers N: this command again, in N worker processes
        return code
    settings = settings_from_options(flags, kind="forget")
    app.detail(f"forgetting with {settings.method} from {settings.checkpoint} into {settings.out}")
    with app.progress() as progress:
        outcome = run_forget(settings, progress=progress)
    app.report_outcome(outcome)
    return outcome.exit_code
