"""The audit trail: a hash-chained JSON Lines ledger. This module reads and verifies it; the one writer
protocol (lock, check, append, publish) lives in :mod:`auditkit.evidence.ledger`.

Every line is the canonical JSON (sorted keys, no spaces) of an object that carries its 0-based
``index``, the SHA-256 of the line before it (``prev_sha256``; 64 zeros for the first) and an ``entry``.
Editing, deleting, inserting or reordering any line breaks the chain at that line or the next.

Format 2 (``"v": 2``, issue 11) adds:

- a **genesis** line (``entry.event = "genesis"``) that gives the trail a random ``trail_id`` and declares
  its keys; every run's record says which trail (ID and line) logged it, so a trail accuses only the
  runs that claim it of missing lines, wherever they live, and two trails can share a folder;
- **keys**: the genesis and any later ``keys`` event declare whether lines carry an HMAC
  (``AUDITKIT_TRAIL_KEY``) and which Ed25519 public key signs them. A line must carry exactly what the
  keys in force demand; a ``keys`` event is itself authenticated with the new keys and endorsed with
  the old ones, so only a key holder can change them (see :mod:`auditkit.evidence.signing`);
- ``run`` entries that mirror the record's summary and name the hidden staging folder the run was
  published from, so a run stopped between logging and publishing is explained (and completed by the
  next writer) rather than reported as missing.

Format 1 lines (no ``"v"``) are still read: a trail written before issue 11 verifies as it did, and the
first format-2 line appended to it is its genesis (``follows_v1_lines``).

The chain cannot see lines removed from the end. Two things can: a run record that claims a line the
trail no longer has, and a head hash published elsewhere (``auditkit verify --head``, then
``--expect-head``).
"""

from __future__ import annotations

import codecs
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from auditkit.errors import InputError
from auditkit.evidence.signing import (
    SIGNING_KEY_ENV,
    TRAIL_KEY_ENV,
    canonical_json,
    fingerprint,
    hmac_matches,
    is_public_hex,
    signature_matches,
    signed_bytes,
)
from auditkit.fsutil import open_regular_file, regular_file_problem, sha256_bytes, sha256_file

__all__ = ["canonical_json", "TRAIL_VERSION", "GENESIS_SHA256", "RECORD_FILE", "KeyPolicy", "TrailLine", "TrailState",
           "TrailCheck", "scan_trail", "verify_trail", "trail_file", "record_path"]

TRAIL_VERSION = 2
GENESIS_SHA256 = "0" * 64
RECORD_FILE = "record.json"
#: A trail line is about 1 KB; anything longer than this was not written by auditkit, and is not read
#: into memory to find out what it is.
MAX_LINE_BYTES = 1 << 20
#: Summary fields a run entry mirrors from its record (whichever the record has).
MIRRORED_FIELDS = ("kind", "outcome", "passed", "request_sha256", "original_sha256", "unlearned_sha256", "method")

_V1_FIELDS = {"index", "prev_sha256", "entry"}
_V2_FIELDS = {"v", "index", "prev_sha256", "entry"}
_AUTH_FIELDS = {"hmac", "sig"}
_EVENTS = ("genesis", "keys", "run")
_CHAIN_BROKEN = "chain"


@dataclass(frozen=True)
class KeyPolicy:
    """The keys a trail demands from a point on: an HMAC on every line, an Ed25519 signature by one key."""

    hmac: bool = False
    ed25519: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"hmac": self.hmac, "ed25519": self.ed25519}

    @classmethod
    def from_json(cls, value: Any) -> KeyPolicy | None:
        """The policy in a genesis or keys entry, or None when it is malformed."""
        if not isinstance(value, dict) or set(value) != {"hmac", "ed25519"} or not isinstance(value["hmac"], bool):
            return None
        if value["ed25519"] is not None and not is_public_hex(value["ed25519"]):
            return None
        return cls(hmac=value["hmac"], ed25519=value["ed25519"])

    def describe(self) -> str:
        parts = (["HMAC"] if self.hmac else []) + ([f"Ed25519 key {fingerprint(self.ed25519)}"] if self.ed25519 else [])
        return " and ".join(parts) if parts else "no keys"


@dataclass(frozen=True)
class TrailLine:
    """One line of a trail: its place, its hash, and what it says."""

    number: int  # 1-based line of the file
    index: int
    line_sha256: str
    prev_sha256: str
    entry: dict[str, Any]
    version: int
    fields: dict[str, Any]  # the whole parsed line (``hmac`` and ``sig`` included)

    @property
    def is_run(self) -> bool:
        """Whether the line logs a run (format 1 lines all do when they name a record)."""
        event = self.entry.get("event") if self.version >= 2 else "run"
        return event == "run" and isinstance(self.entry.get("record"), str)


@dataclass
class TrailState:
    """What a walk over a trail established, up to the first problem.

    ``size`` is the byte offset just after the last complete line checked, so a writer can continue the
    walk from there under its lock (:func:`scan_trail` with ``since``) instead of re-reading the trail.
    """

    path: Path  # the real path (symbolic links resolved)
    exists: bool = False
    lines: int = 0
    size: int = 0
    head_sha256: str = GENESIS_SHA256
    last_bytes: bytes = b""
    last: TrailLine | None = None
    trail_id: str | None = None
    keys: KeyPolicy = field(default_factory=KeyPolicy)
    keys_since: int | None = None  # the line whose event put ``keys`` in force
    declared: list[tuple[int, KeyPolicy]] = field(default_factory=list)
    ever_hmac: bool = False
    unchecked_hmacs: int = 0
    matched_hmacs: int = 0
    wrong_key: bool = False  # the first HMAC checked did not match: the key, not the trail, is wrong
    v1_lines: int = 0
    runs: list[TrailLine] = field(default_factory=list)
    torn_bytes: int = 0
    crlf_line: int | None = None
    matched_head: int | None = None
    bad_line: int | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def next_index(self) -> int:
        return self.lines

    def runs_in(self, folder: Path) -> list[TrailLine]:
        """The run lines whose record lies in ``folder`` (real paths compared)."""
        wanted = os.path.realpath(folder)
        return [line for line in self.runs
                if os.path.dirname(os.path.realpath(record_path(self.path, line.entry["record"]))) == wanted]


def record_path(trail: Path, name: str) -> Path:
    """Where a record named in a trail line lives: names are relative to the real trail's folder."""
    return Path(name) if Path(name).is_absolute() else trail.parent / name


# ---------------------------------------------------------------- the file


def trail_file(path: str | os.PathLike[str], *, flag: str = "--trail") -> tuple[Path, bool]:
    """The real path of the trail at ``path`` (links followed) and whether it exists.

    A dangling link, or anything that is not a regular file (``/dev/null``, a FIFO, a folder), is an
    :class:`InputError`: writing through it would lose every line, and reading a FIFO would block.
    """
    given = Path(path)
    real = Path(os.path.realpath(given))
    if given.is_symlink() and not given.exists():
        raise InputError(f"audit trail {str(given)!r} is a symbolic link to {os.readlink(given)!r}, which does "
                         "not exist", hint=f"mount or restore the trail it points to, create it with `auditkit "
                         f"trail init {real}`, or choose another {flag}")
    problem = regular_file_problem(given)
    if problem == "does not exist":
        return real, False
    if problem is not None:
        via = f" (a link to {str(real)!r})" if given.is_symlink() else ""
        raise InputError(f"audit trail {str(given)!r}{via} {problem}",
                         hint=f"point {flag} at an audit-trail.jsonl file (default: beside --out)")
    return real, True


@dataclass
class _Raw:
    number: int
    data: bytes
    end: int
    complete: bool
    too_long: bool = False


def _raw_lines(handle: IO[bytes], *, offset: int, number: int) -> Iterator[_Raw]:
    """The lines from byte ``offset`` on, never holding more than ~1 MiB of one line in memory."""
    handle.seek(offset)
    while True:
        chunk = handle.readline(MAX_LINE_BYTES + 2)  # the longest line allowed, "\r\n" included
        if not chunk:
            return
        number += 1
        offset += len(chunk)
        if chunk.endswith(b"\n"):
            body = chunk[:-1]
            yield _Raw(number, body, offset, True, too_long=len(body.removesuffix(b"\r")) > MAX_LINE_BYTES)
        else:
            yield _Raw(number, chunk, offset, False, too_long=len(chunk) > MAX_LINE_BYTES)
            return


# ---------------------------------------------------------------- one line


def _reject_constant(name: str) -> Any:
    raise ValueError(f"holds {name}, which strict JSON does not allow")


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"holds the number {text}, too large for a JSON float")
    return value


def _parse(text: str) -> tuple[Any, str | None]:
    try:
        return json.loads(text, parse_constant=_reject_constant, parse_float=_finite), None
    except RecursionError:
        return None, "is nested too deeply to be a trail line"
    except ValueError as exc:
        message = str(exc)
        return None, message.split(":")[0] if message.startswith("holds") else f"is not valid JSON ({message})"


_LINE_START = b'{"entry":'  # every canonical line starts so: "entry" sorts first among its keys


def _cut_short(data: bytes) -> bool:
    """Whether ``data`` (the file's end, without a newline) can be the start of a line whose write was cut
    short; anything else there is checked, and named, like a whole line."""
    if not (data.startswith(_LINE_START) or _LINE_START.startswith(data)):
        return False
    try:
        codecs.getincrementaldecoder("utf-8")().decode(data, final=False)  # a character may be cut in two
    except UnicodeDecodeError:
        return False
    return True


def _is_hex(value: Any, digits: int) -> bool:
    return isinstance(value, str) and len(value) == digits and all(c in "0123456789abcdef" for c in value)


class _Walker:
    """Checks lines one at a time against everything the lines before them established."""

    def __init__(self, state: TrailState, *, key: bytes | None, expect_head: str | None) -> None:
        self.state = state
        self.key = key
        self.expect_head = expect_head

    def fail(self, number: int, problem: str) -> bool:
        self.state.bad_line, self.state.problem = number, f"line {number} {problem}"
        return False

    def feed(self, raw: _Raw) -> bool:
        """Check one raw line; False (and the problem in the state) when it is bad."""
        state = self.state
        if raw.too_long:
            return self.fail(raw.number, f"is longer than {MAX_LINE_BYTES // (1 << 20)} MiB: not a line auditkit "
                                         "wrote (a trail line is about 1 KB)")
        if not raw.complete and _cut_short(raw.data):
            state.torn_bytes = len(raw.data)  # see verify_trail: an append cut short, never published
            return True
        data = raw.data
        if data.endswith(b"\r"):
            data = data[:-1]
            state.crlf_line = state.crlf_line or raw.number
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            if raw.number == 1:  # not a damaged trail: not a text file at all
                raise InputError(f"audit trail {str(state.path)!r} is not UTF-8 text",
                                 hint="point at an audit-trail.jsonl written by auditkit") from None
            return self.fail(raw.number, "is not UTF-8 text")
        if not text:
            return self.fail(raw.number, "is empty")
        obj, problem = _parse(text)
        if problem is None:
            problem = self._check(obj, text, raw.number)
        if problem == _CHAIN_BROKEN:
            # The link is stored in this line but the edit was almost always to the one before it, so
            # that is the line named (line 1 when the chain does not start at the genesis hash).
            previous = raw.number - 1
            state.bad_line = max(previous, 1)
            state.problem = (f"line {raw.number} does not chain to line {previous}: line {previous} was changed "
                             f"(or line {raw.number}'s link to it was)" if previous else
                             "line 1 does not start the chain (lines were removed from the start)")
            return False
        if problem is not None:
            return self.fail(raw.number, problem)
        line_sha = sha256_bytes(data)
        line = TrailLine(number=raw.number, index=obj["index"], line_sha256=line_sha, prev_sha256=obj["prev_sha256"],
                         entry=obj["entry"], version=obj.get("v", 1), fields=obj)
        state.lines, state.size, state.head_sha256 = state.lines + 1, raw.end, line_sha
        state.last_bytes, state.last = raw.data + b"\n", line
        if line.is_run:
            state.runs.append(line)
        if self.expect_head is not None and line_sha == self.expect_head:
            state.matched_head = raw.number
        return True

    def _check(self, obj: Any, text: str, number: int) -> str | None:
        state = self.state
        if not isinstance(obj, dict):
            return "is not a JSON object"
        version = obj.get("v", 1)
        if "v" in obj and (type(version) is not int or version != TRAIL_VERSION):
            if type(version) is int and version > TRAIL_VERSION:
                raise InputError(f"line {number} of audit trail {str(state.path)!r} is in trail format {version}, "
                                 f"newer than this auditkit reads (1 and {TRAIL_VERSION})",
                                 hint="upgrade auditkit to read or append to this trail")
            return f"has an unknown format version {version!r}"
        expected = _V1_FIELDS if version == 1 else _V2_FIELDS
        if set(obj) - _AUTH_FIELDS != expected or (version == 1 and "sig" in obj):
            return f"does not have the fields {', '.join(sorted(expected))}"
        entry = obj["entry"]
        if not isinstance(entry, dict):
            return "has an entry that is not an object"
        if type(obj["index"]) is not int or obj["index"] != state.lines:
            return (f"has index {obj['index']!r} where {state.lines} was expected (a line was inserted, deleted or "
                    "moved)")
        if obj["prev_sha256"] != state.head_sha256:
            return _CHAIN_BROKEN
        try:
            canonical = canonical_json(obj)
        except (ValueError, RecursionError):
            return "holds a value with no canonical JSON form"
        if canonical != text:
            return "is not in canonical form (it was edited by hand)"
        if version == 1:
            return self._check_v1(obj, number)
        return self._check_v2(obj, entry, number)

    def _check_v1(self, obj: dict[str, Any], number: int) -> str | None:
        state = self.state
        if state.trail_id is not None:
            return "is in format 1 after the trail's format-2 genesis (a line was inserted)"
        state.v1_lines += 1
        if "hmac" in obj:
            if not state.keys.hmac:
                state.keys, state.keys_since = KeyPolicy(hmac=True), number
            return self._check_hmac(obj, signed_bytes(obj, version=1))
        if state.keys.hmac:
            return (f"has no HMAC although line {state.keys_since} before it has one (it was appended without "
                    f"{TRAIL_KEY_ENV})")
        return None

    def _check_v2(self, obj: dict[str, Any], entry: dict[str, Any], number: int) -> str | None:
        state = self.state
        event = entry.get("event")
        if event not in _EVENTS:
            return f"has an entry whose event {event!r} is none of {', '.join(_EVENTS)}"
        before = state.keys
        after = before
        if event == "genesis":
            if state.trail_id is not None:
                return "is a second genesis line (the trail's genesis is an earlier line)"
            if not _is_hex(entry.get("trail_id"), 32):
                return "is a genesis line without a valid trail_id"
            if entry.get("follows_v1_lines", 0) != state.v1_lines:
                return (f"says it follows {entry.get('follows_v1_lines', 0)} format-1 line(s), but "
                        f"{state.v1_lines} precede it")
            after = KeyPolicy.from_json(entry.get("keys"))
            if after is None:
                return "declares keys in an unknown form"
            if before.hmac and not after.hmac:
                return "drops the HMAC that the format-1 lines before it carry"
            state.trail_id = entry["trail_id"]
        elif state.trail_id is None:
            return "comes before the trail's genesis line (lines were removed from the start)"
        elif event == "keys":
            after = KeyPolicy.from_json(entry.get("keys"))
            if after is None:
                return "declares keys in an unknown form"
            problem = self._check_endorsement(obj, entry, before)
            if problem:
                return problem
        problem = self._check_auth(obj, after, "from this line on" if event in ("genesis", "keys")
                                   else f"since line {state.keys_since}")
        if problem:
            return problem
        if event in ("genesis", "keys"):
            state.keys, state.keys_since = after, number
            state.declared.append((number, after))
        return None

    def _check_auth(self, obj: dict[str, Any], policy: KeyPolicy, since: str) -> str | None:
        if policy.hmac and "hmac" not in obj:
            return f"has no HMAC, which the trail demands {since} (it was appended without {TRAIL_KEY_ENV})"
        if not policy.hmac and "hmac" in obj:
            return "carries an HMAC, but the trail's keys at that point demand none"
        if policy.ed25519 and "sig" not in obj:
            return f"has no signature, which the trail demands {since} (it was appended without {SIGNING_KEY_ENV})"
        if not policy.ed25519 and "sig" in obj:
            return "carries a signature, but the trail's keys at that point demand none"
        data = signed_bytes(obj, version=TRAIL_VERSION)
        if policy.ed25519 and not signature_matches(policy.ed25519, data, obj["sig"]):
            return (f"has a wrong signature (edited after it was signed, or not signed by Ed25519 key "
                    f"{fingerprint(policy.ed25519)})")
        return self._check_hmac(obj, data) if policy.hmac else None

    def _check_hmac(self, obj: dict[str, Any], data: bytes) -> str | None:
        self.state.ever_hmac = True
        if self.key is None:
            self.state.unchecked_hmacs += 1
            return None
        return self._match(data, obj["hmac"], "has a wrong HMAC (edited, or {env} is not the key it was written with)")

    def _match(self, data: bytes, tag: Any, problem: str) -> str | None:
        if hmac_matches(self.key, data, tag):
            self.state.matched_hmacs += 1
            return None
        self.state.wrong_key = not self.state.matched_hmacs
        return problem.format(env=TRAIL_KEY_ENV)

    def _check_endorsement(self, obj: dict[str, Any], entry: dict[str, Any], before: KeyPolicy) -> str | None:
        """A keys event must be authenticated by the keys it replaces, so only their holder can change them."""
        endorsement = entry.get("endorsement")
        if not before.hmac and not before.ed25519:
            return None if endorsement is None else "carries an endorsement although no keys were in force"
        if not isinstance(endorsement, dict):
            return f"changes the trail's keys without the endorsement of the keys in force ({before.describe()})"
        bare = {**obj, "entry": {k: v for k, v in entry.items() if k != "endorsement"}}
        data = signed_bytes(bare, version=TRAIL_VERSION)
        if before.ed25519 and not signature_matches(before.ed25519, data, endorsement.get("sig")):
            return (f"changes the trail's keys without a valid endorsement by Ed25519 key "
                    f"{fingerprint(before.ed25519)}, which was in force")
        if before.hmac:
            if "hmac" not in endorsement:
                return "changes the trail's keys without an HMAC endorsement by the key in force"
            if self.key is None:
                self.state.unchecked_hmacs += 1
            else:
                return self._match(data, endorsement["hmac"],
                                   "changes the trail's keys with a wrong HMAC endorsement ({env} is not the key in force)")
        return None


def scan_trail(path: str | os.PathLike[str], *, key: bytes | None = None, since: TrailState | None = None,
               expect_head: str | None = None) -> TrailState:
    """Walk the trail at ``path`` and return what it established, stopping at the first bad line.

    ``since`` is an earlier state of the same trail: when its last line is still where it was, only the
    lines appended after it are read (the writer's cheap re-check under its lock). A missing file is an
    empty trail; see :func:`trail_file` for what is refused.
    """
    given = Path(path)
    real, exists = trail_file(given)
    state = TrailState(path=real, exists=exists)
    if not exists:
        return state
    with open_regular_file(real, role="audit trail", hint="check the trail's permissions") as handle:
        if since is not None and since.ok and since.path == real and _unchanged(handle, since):
            state = _copy(since)
        walker = _Walker(state, key=key, expect_head=expect_head)
        for raw in _raw_lines(handle, offset=state.size, number=state.lines):
            if not walker.feed(raw):
                break
    return state


def _unchanged(handle: IO[bytes], state: TrailState) -> bool:
    """Whether the last line ``state`` checked is still at the same place, byte for byte."""
    handle.seek(state.size - len(state.last_bytes))
    return handle.read(len(state.last_bytes)) == state.last_bytes and not state.torn_bytes


def _copy(state: TrailState) -> TrailState:
    return TrailState(**{**state.__dict__, "declared": list(state.declared), "runs": list(state.runs)})


# ---------------------------------------------------------------- verification


@dataclass
class TrailCheck:
    """What :func:`verify_trail` found.

    ``bad_line`` is the 1-based number of the first problem line (for lines removed from the end, the
    first missing one); ``problem`` says what is wrong (None when intact); ``warnings`` are findings that
    do not break the trail (a record no longer on disk, HMACs that cannot be checked without the key).
    """

    path: str
    lines: int
    keyed: bool
    head_sha256: str
    trail_id: str | None = None
    keys: KeyPolicy = field(default_factory=KeyPolicy)
    signature: str | None = None  # the head line's Ed25519 signature
    runs: int = 0
    pending: list[int] = field(default_factory=list)
    grown_since: int | None = None  # with expect_head: the line it matched
    bad_line: int | None = None
    problem: str | None = None
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # facts worth knowing that weaken nothing
    state: TrailState | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.problem is None


def verify_trail(path: str | os.PathLike[str], *, key: bytes | None = None, public_key: str | None = None,
                 expect_head: str | None = None, check_records: bool = True) -> TrailCheck:
    """Check the trail at ``path``: the chain, the keys, the records it names, and runs that claim it.

    Args:
        key: the HMAC key (``AUDITKIT_TRAIL_KEY``): every HMAC is checked, and a trail that never carried
            one is reported (it should have).
        public_key: the auditor's own copy of the operator's Ed25519 public key (hex): the trail must
            declare it, and so every line it signed (and every key it endorsed) is checked against it.
        expect_head: a head hash taken earlier (:attr:`TrailCheck.head_sha256`): it must be one of the
            trail's lines, which proves the trail only grew since.
        check_records: compare each run entry with the record it names, and look for runs beside the
            trail (and beside the runs it names) that claim lines it does not have.
    """
    given = Path(path)
    real, exists = trail_file(given)
    if not exists:
        raise InputError(f"audit trail {str(given)!r} does not exist",
                         hint="pass the audit-trail.jsonl written by `auditkit forget` (default runs/audit-trail.jsonl)")
    state = scan_trail(given, key=key, expect_head=expect_head)
    last = state.last
    check = TrailCheck(path=str(given), lines=state.lines, keyed=state.ever_hmac, head_sha256=state.head_sha256,
                       trail_id=state.trail_id, keys=state.keys, runs=len(state.runs),
                       signature=last.fields.get("sig") if last is not None else None, state=state)
    if not state.ok:
        check.bad_line, check.problem = state.bad_line, state.problem
        return check
    if state.crlf_line is not None:
        check.warnings.append(f"the trail has CRLF line endings (from line {state.crlf_line}: converted by an editor "
                              "or git's autocrlf); its lines were checked without the carriage returns")
    if state.torn_bytes:
        check.warnings.append(f"line {state.lines + 1} is incomplete ({state.torn_bytes} bytes without a newline: "
                              "an append cut short by a crash or a full disk); its run was never published, and "
                              "the next run on this trail removes it")
    problem = _check_keys(state, key=key, public_key=public_key, check=check)
    if problem is None and check_records:
        problem = _check_runs(state, given, check)
    if problem is None and expect_head is not None:
        if state.matched_head is None:
            problem = (state.lines + 1, f"the trail does not contain the head {expect_head} taken earlier: it was "
                                        "rewritten or cut since")
        else:
            check.grown_since = state.matched_head
    if problem is not None:
        check.bad_line, check.problem = problem
    elif state.unchecked_hmacs:
        check.warnings.append(f"the trail carries HMACs; set {TRAIL_KEY_ENV} to check them")
    return check


def _check_keys(state: TrailState, *, key: bytes | None, public_key: str | None,
                check: TrailCheck) -> tuple[int, str] | None:
    if key is not None and not state.ever_hmac and state.lines:
        return 1, f"line 1 has no HMAC although {TRAIL_KEY_ENV} is set (the trail was never keyed)"
    signers = [(number, policy.ed25519) for number, policy in state.declared if policy.ed25519]
    if public_key is not None:
        if not any(signer == public_key for _, signer in signers):
            named = ", ".join(fingerprint(s) for _, s in signers) or "none"
            return 1, (f"the trail is not signed with Ed25519 key {fingerprint(public_key)} (the keys it declares: "
                       f"{named})")
        first = next(number for number, signer in signers if signer == public_key)
        if not state.keys.ed25519:
            check.warnings.append(f"signing was turned off on line {state.keys_since}: the lines after it are not "
                                  "signed")
        if first > 1:
            check.notes.append(f"lines 1-{first - 1} predate the key; the hash chain under the signed lines covers "
                               "them")
    elif signers:
        check.warnings.append(f"signatures were checked against the key the trail itself declares (Ed25519 "
                        f"{fingerprint(signers[-1][1])}); pass --public-key with your own copy to rule out a "
                        "trail re-signed with another key")
    return None


def _read_record(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None, "is not a readable JSON record"
    return (record, None) if isinstance(record, dict) else (None, "is not a JSON object")


def _check_runs(state: TrailState, given: Path, check: TrailCheck) -> tuple[int, str] | None:
    """Each run entry against its record; then runs that claim this trail but are not in it."""
    named: set[str] = set()
    folders = {os.path.realpath(given.parent), os.path.realpath(state.path.parent)}
    beside = set(folders)
    for line in state.runs:
        name = line.entry["record"]
        file = record_path(state.path, name)
        named.add(os.path.realpath(file))
        folders.add(os.path.dirname(os.path.dirname(os.path.realpath(file))))
        problem = _check_record(line, name, file, state.path, check)
        if problem:
            return line.number, f"line {line.number} {problem}"
    grown = False
    for folder in sorted(folders):
        for candidate in sorted(Path(folder).glob(f"*/{RECORD_FILE}")):
            if candidate.parent.name.startswith(".") or os.path.realpath(candidate) in named:
                continue  # hidden folders are staging runs, never published
            problem = _claim(state, candidate, v1_beside=folder in beside)
            if problem and not grown:
                # A writer may have logged and published this run since the trail was read: its line goes
                # in before its folder appears, so reading the lines appended since settles it.
                grown = True
                later = scan_trail(given, since=state)
                named |= {os.path.realpath(record_path(later.path, line.entry["record"])) for line in later.runs}
                problem = None if os.path.realpath(candidate) in named else problem
            if problem:
                return state.lines + 1, f"line {state.lines + 1} is missing: {problem}"
    return None


def _shown(path: Path, trail: Path) -> str:
    return os.path.relpath(path, trail.parent)


def _check_record(line: TrailLine, name: str, file: Path, trail: Path, check: TrailCheck) -> str | None:
    """Compare a run entry with the record it names; a missing record is explained, not a problem."""
    if "record_sha256" not in line.entry:
        return None
    if not file.is_file():
        staging = line.entry.get("staging")
        staged = record_path(trail, staging) / RECORD_FILE if isinstance(staging, str) else None
        if staged is not None and staged.is_file() and sha256_file(staged) == line.entry["record_sha256"]:
            check.pending.append(line.number)
            check.warnings.append(f"line {line.number}: its run ({name}) was stopped after it was logged and before "
                                  f"it was published; the complete files wait in {staging}, and the next run on "
                                  "this trail (or `auditkit trail recover`) publishes them")
        else:
            check.warnings.append(f"line {line.number}: record {name} is not on disk; its entry was checked by the "
                                  "chain only")
        return None
    if sha256_file(file) != line.entry["record_sha256"]:
        return f"names record {name}, whose SHA-256 no longer matches"
    record, problem = _read_record(file)
    if problem:
        return f"names record {name}, which {problem}"
    summary = record.get("summary", {})
    summary = summary if isinstance(summary, dict) else {}
    for key in MIRRORED_FIELDS:
        if key in line.entry and summary.get(key) != line.entry[key]:
            return f"says {key}={line.entry[key]!r} but record {name} says {summary.get(key)!r}"
    return None


def _claim(state: TrailState, candidate: Path, *, v1_beside: bool) -> str | None:
    """Why the run at ``candidate``, which no line names, means lines were removed (None when it is not ours)."""
    record, problem = _read_record(candidate)
    shown = _shown(candidate, state.path)
    if problem:
        return None
    claim = record.get("trail")
    if isinstance(claim, dict):
        index = claim.get("index")
        place = f"line {index + 1}" if type(index) is int else "a line"
        if claim.get("id") == state.trail_id and state.trail_id is not None:
            return f"{shown} is not in the trail, though it was logged on its {place} (lines were removed from its end)"
        file = claim.get("file")
        if isinstance(file, str) and os.path.realpath(candidate.parent / file) == str(state.path):
            return (f"{shown} is not in the trail, though it was logged on {place} of the trail at this path (ID "
                    f"{claim.get('id')}, this trail's is {state.trail_id}): the trail was replaced or rewritten")
        return None  # a run of another trail
    if v1_beside and (state.v1_lines or state.trail_id is None):
        # A run written before trails had IDs: beside a trail that dates from then, it is this trail's.
        return f"{shown} is not in the trail (lines were removed from its end)"
    return None
