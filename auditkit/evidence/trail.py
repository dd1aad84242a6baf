"""The audit trail: an append-only JSON Lines file in which every line carries its predecessor's SHA-256.

Each line is the canonical JSON (sorted keys, no spaces) of ``{"index", "prev_sha256", "entry"}`` and,
when a key is set in ``AUDITKIT_TRAIL_KEY``, an ``"hmac"`` (HMAC-SHA256 of the same object without it).
Editing, deleting, inserting or reordering any line breaks the chain at that line or the next, which
:func:`verify_trail` names. The chain alone cannot notice a change to the *last* line's contents or the
removal of the last line(s); the HMAC catches the former, and :func:`verify_trail` cross-checks every
entry against the run record it names (when that record is still on disk) and reports run folders
beside the trail whose record no line names (lines removed from the end); the head hash it prints can
be anchored elsewhere for everything else.

Appends hold an exclusive lock and replace the whole file atomically (temp file + fsync + rename), so a
killed process leaves the old trail or the new one, never half a line.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auditkit.errors import InputError, RunError
from auditkit.fsutil import atomic_write_bytes, sha256_bytes, sha256_file

TRAIL_KEY_ENV = "AUDITKIT_TRAIL_KEY"
RECORD_FILE = "record.json"
GENESIS_SHA256 = "0" * 64

# Entry fields that must agree with the run record a trail line points at.
_CHAIN_BROKEN = "chain"
_MIRRORED_FIELDS = ("kind", "passed", "request_sha256", "original_sha256", "unlearned_sha256")


def canonical_json(value: Any) -> str:
    """The one serialisation hashed everywhere: sorted keys, no whitespace, UTF-8 kept as is."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def trail_key_from_env() -> bytes | None:
    """The HMAC key from ``AUDITKIT_TRAIL_KEY`` (UTF-8), or None when unset or empty."""
    value = os.environ.get(TRAIL_KEY_ENV, "")
    return value.encode("utf-8") if value else None


@dataclass(frozen=True)
class TrailLine:
    """One appended line: its 0-based ``index``, its own SHA-256 and the entry it records."""

    index: int
    line_sha256: str
    prev_sha256: str
    entry: dict[str, Any]


@dataclass
class TrailCheck:
    """What :func:`verify_trail` found.

    ``bad_line`` is the 1-based line number of the first problem (None when the trail is intact);
    ``warnings`` are findings that do not break the chain (a record that is no longer on disk, an
    HMAC that cannot be checked without the key).
    """

    path: str
    lines: int
    keyed: bool
    head_sha256: str
    bad_line: int | None = None
    problem: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.bad_line is None


def _mac(key: bytes, body: dict[str, Any]) -> str:
    return hmac.new(key, canonical_json(body).encode("utf-8"), hashlib.sha256).hexdigest()


def _encode_line(index: int, prev_sha256: str, entry: dict[str, Any], key: bytes | None) -> str:
    body: dict[str, Any] = {"index": index, "prev_sha256": prev_sha256, "entry": entry}
    if key is not None:
        body["hmac"] = _mac(key, body)
    return canonical_json(body)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    # A sibling lock file: the trail itself is replaced by rename, so locking it would lock a stale inode.
    lock_path = path.with_name(path.name + ".lock")
    with open(lock_path, "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _read_lines(path: Path) -> list[str]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise InputError(f"cannot read audit trail {str(path)!r}: {exc.strerror}",
                         hint="check the --trail path and its permissions") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"audit trail {str(path)!r} is not UTF-8 text",
                         hint="point --trail at an auditkit audit-trail.jsonl") from None
    lines = text.split("\n") if text else []
    if text.endswith("\n"):
        lines.pop()
    return lines


def append_to_trail(path: str | os.PathLike[str], entry: dict[str, Any], *, key: bytes | None = None) -> TrailLine:
    """Append ``entry`` (a JSON-serialisable dict) as the next line of the trail at ``path``.

    Creates the file (and its parent folder) when missing. The last existing line must parse, since
    its hash and index seed the new line; call :func:`verify_trail` first to check the whole chain.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the folder of audit trail {str(target)!r}: {exc.strerror}",
                         hint="choose a writable --trail path") from None
    with _locked(target):
        lines = _read_lines(target)
        if lines:
            try:
                last = json.loads(lines[-1])
                index = int(last["index"]) + 1
            except (ValueError, KeyError, TypeError):
                raise RunError(f"the last line of audit trail {str(target)!r} is damaged",
                               hint=f"run `auditkit verify {target}` to find the first bad line") from None
            prev = sha256_bytes(lines[-1].encode("utf-8"))
        else:
            index, prev = 0, GENESIS_SHA256
        line = _encode_line(index, prev, entry, key)
        existing = "".join(f"{text}\n" for text in lines)
        atomic_write_bytes(target, (existing + line + "\n").encode("utf-8"))
    return TrailLine(index=index, line_sha256=sha256_bytes(line.encode("utf-8")), prev_sha256=prev, entry=entry)


def line_naming_record(path: str | os.PathLike[str], record: str | os.PathLike[str]) -> int | None:
    """The 1-based number of the trail line whose entry names ``record`` (a path), or None."""
    trail = Path(path)
    wanted = Path(record).resolve()
    for number, text in enumerate(_read_lines(trail), start=1):
        try:
            name = json.loads(text)["entry"]["record"]
        except (ValueError, KeyError, TypeError):
            continue
        if isinstance(name, str) and (Path(name) if Path(name).is_absolute() else trail.parent / name).resolve() == wanted:
            return number
    return None


def _check_line(text: str, position: int, prev: str, key: bytes | None) -> tuple[dict[str, Any] | None, str | None]:
    """Parse and check one line; returns (parsed line, problem)."""
    try:
        obj = json.loads(text)
    except ValueError:
        return None, "is not valid JSON"
    if not isinstance(obj, dict) or set(obj) - {"hmac"} != {"index", "prev_sha256", "entry"}:
        return None, "does not have the fields index, prev_sha256 and entry"
    if not isinstance(obj["entry"], dict):
        return None, "has an entry that is not an object"
    if obj["index"] != position:
        return None, f"has index {obj['index']!r} where {position} was expected (a line was inserted, deleted or moved)"
    if obj["prev_sha256"] != prev:
        return None, _CHAIN_BROKEN
    if canonical_json(obj) != text:
        return None, "is not in canonical form (it was edited by hand)"
    if key is not None:
        if "hmac" not in obj:
            return None, f"has no HMAC although {TRAIL_KEY_ENV} is set"
        body = {k: v for k, v in obj.items() if k != "hmac"}
        if not hmac.compare_digest(str(obj["hmac"]), _mac(key, body)):
            return None, f"has a wrong HMAC (edited, or {TRAIL_KEY_ENV} is not the key it was written with)"
    return obj, None


def _check_record(entry: dict[str, Any], trail_dir: Path) -> tuple[str | None, str | None]:
    """Compare an entry with the record it names; returns (problem, warning)."""
    record_name = entry.get("record")
    if not isinstance(record_name, str) or "record_sha256" not in entry:
        return None, None
    record_path = Path(record_name) if Path(record_name).is_absolute() else trail_dir / record_name
    if not record_path.is_file():
        return None, f"record {record_name} is not on disk; its entry was checked by the chain only"
    if sha256_file(record_path) != entry["record_sha256"]:
        return f"names record {record_name}, whose SHA-256 no longer matches", None
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except ValueError:
        return f"names record {record_name}, which is not valid JSON", None
    summary = record.get("summary", {}) if isinstance(record, dict) else {}
    for name in _MIRRORED_FIELDS:
        if name in entry and summary.get(name) != entry[name]:
            return f"says {name}={entry[name]!r} but record {record_name} says {summary.get(name)!r}", None
    return None, None


def verify_trail(path: str | os.PathLike[str], *, key: bytes | None = None, check_records: bool = True) -> TrailCheck:
    """Walk the chain of the trail at ``path`` and report the first line that breaks it.

    With ``key`` every line's HMAC is checked too. With ``check_records`` each entry is compared with
    the run record it names (paths relative to the trail's folder), which catches edits to the last
    line that the chain alone cannot see.
    """
    target = Path(path)
    if not target.is_file():
        raise InputError(f"audit trail {str(target)!r} does not exist",
                         hint="pass the audit-trail.jsonl written by `auditkit forget` (default runs/audit-trail.jsonl)")
    lines = _read_lines(target)
    check = TrailCheck(path=str(target), lines=len(lines), keyed=False, head_sha256=GENESIS_SHA256)
    prev = GENESIS_SHA256
    entries: list[dict[str, Any]] = []
    for position, text in enumerate(lines):
        obj, problem = _check_line(text, position, prev, key)
        if problem is None and check_records:
            problem, warning = _check_record(obj["entry"], target.parent)
            if warning:
                check.warnings.append(f"line {position + 1}: {warning}")
        if problem == _CHAIN_BROKEN:
            # The link is stored in this line but the edit was almost always to the one before it, so
            # that is the line named (line 1 when the chain does not start at the genesis hash).
            check.bad_line = max(position, 1)
            check.problem = (f"line {position + 1} does not chain to line {position}: line {position} was changed "
                             f"(or line {position + 1}'s link to it was)" if position else
                             "line 1 does not start the chain (lines were removed from the start)")
            return check
        if problem is not None:
            check.bad_line, check.problem = position + 1, f"line {position + 1} {problem}"
            return check
        check.keyed = check.keyed or "hmac" in obj
        entries.append(obj["entry"])
        prev = sha256_bytes(text.encode("utf-8"))
    check.head_sha256 = prev
    if check_records:
        named = {(target.parent / str(e.get("record", ""))).resolve() for e in entries}
        # Hidden folders are runs still staging, or killed before publishing: never published, so
        # their absence from the trail is no sign of removed lines.
        orphans = sorted(p for p in target.parent.glob(f"*/{RECORD_FILE}")
                         if not p.parent.name.startswith(".") and p.resolve() not in named)
        if orphans:
            # Runs append their line before their folder appears, so a record the trail does not name
            # means lines were removed from the end (the one edit a hash chain cannot see by itself).
            check.bad_line = len(lines) + 1
            check.problem = (f"line {len(lines) + 1} is missing: {orphans[0].relative_to(target.parent)} is not in the "
                             f"trail (lines were removed from its end)")
            return check
    if check.keyed and key is None:
        check.warnings.append(f"the trail carries HMACs; set {TRAIL_KEY_ENV} to check them")
    return check
