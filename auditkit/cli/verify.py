"""`auditkit verify`: check an audit trail's hash chain, or a run record against its files."""

from __future__ import annotations

from pathlib import Path

import click

from auditkit.cli.app import Application
from auditkit.cli.options import output_options
from auditkit.errors import EXIT_POLICY_FAILED


@click.command()
@click.argument("path", metavar="TRAIL|RECORD", type=click.Path(path_type=Path))
@output_options
@click.pass_obj
def verify(app: Application, path: Path) -> int:
    """Verify an audit trail (audit-trail.jsonl) or a run's record.json.

    \b
    A trail: every line must chain to the one before it (and carry a valid HMAC when
    AUDITKIT_TRAIL_KEY is set); the first bad line is named. Each line is also compared with the
    record it points at, and run folders beside the trail must all appear in it.
    A record: model.pt and report.html beside it must have the SHA-256 it lists.
    Exit code 0 when intact, 1 when tampering or a mismatch is found.
    """
    from auditkit.evidence.record import verify_record_files
    from auditkit.evidence.trail import trail_key_from_env, verify_trail

    if path.suffix == ".json":  # records are .json, trails .jsonl
        check = verify_record_files(path)
        for name, digest in check.checked.items():
            app.detail(f"{name}: {digest}")
        for problem in check.problems:
            app.info(f"MISMATCH: {problem}")
        if check.ok:
            app.info(f"record intact: {len(check.checked)} output file(s) match {path}")
        app.emit_json({"kind": "record", "path": str(path), "ok": check.ok, "problems": check.problems,
                       "checked": check.checked})
        return 0 if check.ok else EXIT_POLICY_FAILED

    result = verify_trail(path, key=trail_key_from_env())
    for warning in result.warnings:
        app.warn(warning)
    if result.ok:
        keyed = ", HMAC checked" if result.keyed and trail_key_from_env() else ""
        app.info(f"trail intact: {result.lines} line(s){keyed}; head SHA-256 {result.head_sha256}")
    else:
        app.info(f"TAMPERED: {result.problem}")
    app.emit_json({"kind": "trail", "path": str(path), "ok": result.ok, "lines": result.lines,
                   "bad_line": result.bad_line, "problem": result.problem, "head_sha256": result.head_sha256,
                   "keyed": result.keyed, "warnings": result.warnings})
    return 0 if result.ok else EXIT_POLICY_FAILED

