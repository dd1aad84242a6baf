"""`auditkit report`: re-render a run's HTML report from its record.json, without any model work."""

from __future__ import annotations

from pathlib import Path

import click

from auditkit.cli.app import Application
from auditkit.cli.options import output_options
from auditkit.errors import InputError


@click.command()
@click.argument("record_path", metavar="RECORD.json", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), default=Path("report.html"), show_default=True,
              help="Where to write the HTML report.")
@click.option("--force", is_flag=True, help="Replace an existing output file.")
@output_options
@click.pass_obj
def report(app: Application, record_path: Path, output: Path, force: bool) -> int:
    """Render RECORD.json as a self-contained HTML report (deterministic for the same record)."""
    from auditkit.evidence.record import RunRecord
    from auditkit.evidence.report import write_report

    record = RunRecord.load(record_path)
    if output.exists() and not force:
        raise InputError(f"{str(output)!r} already exists", hint="choose another -o, or pass --force to replace it")
    if output.is_dir():
        raise InputError(f"{str(output)!r} is a folder", hint="pass a file name, e.g. -o report.html")
    try:
        write_report(record, output)
    except OSError as exc:  # a missing or read-only folder, or a path under a file
        raise InputError(f"cannot write {str(output)!r} ({exc.strerror})",
                         hint="choose an -o path in an existing, writable folder") from None
    app.info(f"report: {output}")
    app.emit_json({"record": str(record_path), "report": str(output), "outcome": record.summary["outcome"],
                   "passed": record.summary["passed"]})
    return 0
