"""`auditkit verify`: check an audit trail's hash chain and keys, or a run record against its files."""

from __future__ import annotations

import re
from pathlib import Path

import click

from auditkit.cli.app import Application
from auditkit.cli.options import output_options
from auditkit.errors import EXIT_POLICY_FAILED, InputError


def _head_hash(value: str | None) -> str | None:
    if value is None:
        return None
    digest = value.strip().lower().removeprefix("sha256:")
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise InputError(f"--expect-head {value!r} is not a SHA-256 (64 hex digits)",
                         hint="pass the head_sha256 printed by `auditkit verify TRAIL --head`")
    return digest


@click.command()
@click.argument("path", metavar="TRAIL|RECORD", type=click.Path(path_type=Path))
@click.option("--public-key", type=click.Path(path_type=Path), default=None,
              help="The operator's Ed25519 public key (PEM, from `auditkit trail keygen`): the trail must be signed "
                   "with it, and every signed line is checked against it.")
@click.option("--head", "show_head", is_flag=True,
              help="Print the head on stdout (the last line's SHA-256, and its signature when signed), to publish "
                   "elsewhere.")
@click.option("--expect-head", default=None, metavar="SHA256",
              help="A head printed earlier by --head: it must be a line of the trail, which proves the trail only "
                   "grew since.")
@output_options
@click.pass_obj
def verify(app: Application, path: Path, public_key: Path | None, show_head: bool, expect_head: str | None) -> int:
    """Verify an audit trail (audit-trail.jsonl) or a run's record.json.

    \b
    A trail: every line must chain to the one before it and carry the keys the trail demands (an
    HMAC checked when AUDITKIT_TRAIL_KEY is set; Ed25519 signatures, checked against --public-key);
    the first bad line is named. Each run line is also compared with the record it points at, and
    runs that claim this trail but are missing from it are reported.
    A record: model.pt and report.html beside it must have the SHA-256 it lists.
    Exit code 0 when intact, 1 when tampering or a mismatch is found, 2 when PATH is not a trail or record.
    """
    from auditkit.evidence.record import verify_record_files
    from auditkit.evidence.signing import fingerprint, hmac_key_from_env, load_public_key
    from auditkit.evidence.trail import verify_trail

    if path.suffix == ".json":  # records are .json, trails .jsonl
        if public_key or show_head or expect_head:
            raise InputError("--public-key, --head and --expect-head apply to a trail, not to a record",
                             hint=f"verify the trail that logged {path} with them")
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

    key = hmac_key_from_env()
    public = load_public_key(public_key) if public_key is not None else None
    result = verify_trail(path, key=key, public_key=public, expect_head=_head_hash(expect_head))
    for warning in result.warnings:
        app.warn(warning)
    for note in result.notes:
        app.detail(f"note: {note}")
    if result.ok:
        parts = [f"{result.lines} line(s)", f"{result.runs} run(s)"]
        if result.trail_id:
            parts.append(f"trail ID {result.trail_id}")
        if result.keyed and key:
            parts.append("HMAC checked")
        if result.keys.ed25519:
            source = "--public-key" if public else "the key the trail declares"
            parts.append(f"signed by Ed25519 key {fingerprint(result.keys.ed25519)} (checked against {source})")
        app.info(f"trail intact: {', '.join(parts)}; head SHA-256 {result.head_sha256}")
        if result.grown_since is not None:
            app.info(f"the expected head is line {result.grown_since}: the trail only grew since "
                     f"({result.lines - result.grown_since} line(s) added)")
        if show_head and not app.json_output:
            click.echo(f"head_sha256 {result.head_sha256}\nline {result.lines}")
            if result.trail_id:
                click.echo(f"trail_id {result.trail_id}")
            if result.signature:
                click.echo(f"signature {result.signature}\npublic_key {result.keys.ed25519}")
    else:
        app.info(f"TAMPERED: {result.problem}")
    app.emit_json({"kind": "trail", "path": str(path), "ok": result.ok, "lines": result.lines, "runs": result.runs,
                   "bad_line": result.bad_line, "problem": result.problem, "head_sha256": result.head_sha256,
                   "trail_id": result.trail_id, "keyed": result.keyed, "public_key": result.keys.ed25519,
                   "signature": result.signature, "pending": result.pending, "grown_since": result.grown_since,
                   "warnings": result.warnings, "notes": result.notes})
    return 0 if result.ok else EXIT_POLICY_FAILED
