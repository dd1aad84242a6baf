"""The one writer protocol of the audit trail: lock, check, decide, append, publish.

A run is staged in a hidden folder beside its ``--out`` (:meth:`RunLedger.staging`). At the end,
:meth:`RunLedger.publish` takes an exclusive ``flock`` on a file beside the *real* trail (links are
followed, never replaced) and, holding SIGINT and SIGTERM until it is done:

1. re-checks the trail from where the check before the run left it (only lines appended since are
   read), cuts off an append that a crash left incomplete, and finishes publishing a run that was killed
   after its line was appended (the line names its staging folder);
2. decides the ``--out`` collision: a folder that appeared meanwhile is refused (the default
   ``runs/<UTC time>`` takes the next free ``-2``, ``-3``…), and ``--force`` never replaces a run that
   a trail vouches for;
3. writes record.json, naming the trail's ID and the line the run is about to get;
4. appends the line: one ``O_APPEND`` write, fsync'd; on an error the file is cut back to its old length;
5. renames the staging folder into place (a ``--force``'d folder is moved aside first, removed after).

A kill -9 anywhere leaves one of three states: nothing logged (before 4); a logged run whose complete
files wait in its staging folder, which ``auditkit verify`` explains and the next writer publishes
(between 4 and 5); a published run (after 5). Every published run has exactly one line.

Appending in place rather than replacing the file keeps links, hard links, permissions and the inode of
the trail, and costs one write whatever the trail's length; the price is that a crash inside the
write can leave an incomplete last line, which step 1 removes (its run was never published).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from auditkit import __version__
from auditkit.errors import InputError, RunError
from auditkit.evidence.record import RunRecord, utc_now
from auditkit.evidence.signing import (
    SIGNING_KEY_ENV,
    TRAIL_KEY_ENV,
    TrailKeys,
    canonical_json,
    fingerprint,
    hmac_tag,
    sign,
    signed_bytes,
)
from auditkit.evidence.trail import (
    MIRRORED_FIELDS,
    RECORD_FILE,
    TRAIL_VERSION,
    KeyPolicy,
    TrailLine,
    TrailState,
    record_path,
    scan_trail,
    trail_file,
    verify_trail,
)
from auditkit.fsutil import check_writable, fsync_dir, note_written, sha256_bytes, sha256_file, write_error
from auditkit.progress import Progress, ProgressCallback, no_progress

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

TRAIL_FILE = "audit-trail.jsonl"

#: Signals received while the protocol holds them (None outside it); they are raised once it is done.
_held: list[int] | None = None


def _reached(step: str) -> None:
    """A named point of the protocol (``locked``, ``checked``, ``appended``, ``moved-aside``, ``published``,
    ``returned``): tests stop a real process here to kill or signal it (tests/reliability_helpers.py)."""


def default_run_dir(root: Path = Path("runs")) -> Path:
    """``runs/<UTC timestamp>``, suffixed ``-2``, ``-3``… if a run already took that second.

    Only a first guess: runs started in the same second all guess the same name, and the publish
    protocol gives each the next free one under the trail's lock.
    """
    stamp = utc_now().replace(":", "-")
    candidate, n = root / stamp, 2
    while candidate.exists():
        candidate, n = root / f"{stamp}-{n}", n + 1
    return candidate


# ---------------------------------------------------------------- locking and signals


@contextlib.contextmanager
def _locked(real: Path, *, progress: ProgressCallback = no_progress) -> Iterator[None]:
    """One writer at a time: ``flock`` on ``TRAIL.lock`` beside the real trail (the trail itself may be
    replaced by hand or by a restore, and a lock on a replaced inode would lock nothing)."""
    lock_path = real.with_name(real.name + ".lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        raise write_error(exc, doing=f"create the lock file {str(lock_path)!r} of the audit trail",
                          where=real.parent, flag="--trail") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(Progress("trail", 0, 1, "waiting for another run to finish writing to the audit trail"))
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def _signals_held() -> Iterator[list[int]]:
    """Hold SIGINT and SIGTERM: the caller raises KeyboardInterrupt after its critical section if one came."""
    global _held
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = {signum: signal.signal(signum, lambda got, _frame: received.append(got))
                for signum in (signal.SIGINT, signal.SIGTERM)}
    _held = received
    try:
        yield received
    finally:
        _held = None
        for signum, handler in previous.items():
            signal.signal(signum, handler)


# ---------------------------------------------------------------- encoding lines


def _keys_for(policy: KeyPolicy, keys: TrailKeys) -> TrailKeys:
    """Exactly the keys ``policy`` demands, taken from ``keys``."""
    return TrailKeys(hmac=keys.hmac if policy.hmac else None, signing=keys.signing if policy.ed25519 else None)


def _policy_of(keys: TrailKeys) -> KeyPolicy:
    return KeyPolicy(hmac=keys.hmac is not None, ed25519=keys.public)


def _encode(index: int, prev: str, entry: dict[str, Any], *, keys: TrailKeys, endorse: TrailKeys | None) -> str:
    """One format-2 line, authenticated with ``keys`` (and, for a keys event, endorsed with ``endorse``)."""
    body: dict[str, Any] = {"v": TRAIL_VERSION, "index": index, "prev_sha256": prev, "entry": entry}
    if endorse is not None and (endorse.hmac or endorse.signing):
        data = signed_bytes(body, version=TRAIL_VERSION)
        endorsement = {**({"hmac": hmac_tag(endorse.hmac, data)} if endorse.hmac else {}),
                       **({"sig": sign(endorse.signing, data)} if endorse.signing else {})}
        body["entry"] = {**entry, "endorsement": endorsement}
    data = signed_bytes(body, version=TRAIL_VERSION)
    if keys.hmac:
        body["hmac"] = hmac_tag(keys.hmac, data)
    if keys.signing:
        body["sig"] = sign(keys.signing, data)
    return canonical_json(body)


@dataclass
class _Batch:
    """Lines to append in one write: the trail's genesis first when it has none yet."""

    state: TrailState
    keys: TrailKeys
    trail_id: str = ""
    texts: list[str] = field(default_factory=list)
    lines: list[TrailLine] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.trail_id = self.state.trail_id or secrets.token_hex(16)
        if self.state.trail_id is None:
            policy = self.policy
            genesis = {"event": "genesis", "trail_id": self.trail_id, "created_utc": utc_now(), "auditkit": __version__,
                       "keys": policy.to_json(), **({"follows_v1_lines": self.state.v1_lines}
                                                    if self.state.v1_lines else {})}
            self.add(genesis, keys=_keys_for(policy, self.keys))

    @property
    def policy(self) -> KeyPolicy:
        """The keys in force after the trail's lines (a new trail: the writer's own keys)."""
        return self.state.keys if self.state.lines else _policy_of(self.keys)

    @property
    def next_index(self) -> int:
        return self.state.next_index + len(self.texts)

    def add(self, entry: dict[str, Any], *, keys: TrailKeys, endorse: TrailKeys | None = None) -> TrailLine:
        prev = self.lines[-1].line_sha256 if self.lines else self.state.head_sha256
        text = _encode(self.next_index, prev, entry, keys=keys, endorse=endorse)
        line = TrailLine(number=self.state.lines + len(self.texts) + 1, index=self.next_index,
                         line_sha256=sha256_bytes(text.encode("utf-8")), prev_sha256=prev, entry=entry,
                         version=TRAIL_VERSION, fields={})
        self.texts.append(text)
        self.lines.append(line)
        return line

    def data(self) -> bytes:
        return "".join(f"{text}\n" for text in self.texts).encode("utf-8")


# ---------------------------------------------------------------- the file


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _append(state: TrailState, data: bytes, *, given: Path) -> None:
    """Append ``data`` to the real trail in one fsync'd write; on failure cut the file back."""
    real = state.path
    try:
        fd = os.open(real, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        raise write_error(exc, doing=f"open audit trail {str(given)!r} for appending", where=real.parent,
                          flag="--trail") from None
    try:
        size = os.fstat(fd).st_size
        if size != state.size:  # under the lock nobody else appends: something outside auditkit wrote
            raise RunError(f"audit trail {str(given)!r} changed while it was locked ({size} bytes, not {state.size})",
                           hint="something other than auditkit writes to it; stop that, then run again")
        try:
            _write_all(fd, data)
            os.fsync(fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
                os.fsync(fd)
            raise write_error(exc, doing=f"append to audit trail {str(given)!r}; nothing was logged",
                              where=real.parent, flag="--trail") from None
    finally:
        os.close(fd)
    if size == 0:
        fsync_dir(real.parent)


def _cut(state: TrailState, *, given: Path) -> str:
    """Remove an incomplete last line (an append cut short: its run was never published)."""
    try:
        fd = os.open(state.path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.ftruncate(fd, state.size)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise write_error(exc, doing=f"remove the incomplete last line of audit trail {str(given)!r}",
                          where=state.path.parent, flag="--trail") from None
    cut, state.torn_bytes = state.torn_bytes, 0
    return (f"removed an incomplete line {state.lines + 1} ({cut} bytes) from the audit trail: an append cut short "
            "by a crash or a full disk, whose run was never published")


def _aside(staging: Path) -> Path:
    """Where a --force'd folder waits while its replacement is renamed in: named after the staging folder."""
    return staging.with_name(staging.name.removesuffix(".tmp") + ".old")


def _install(staging: Path, target: Path) -> None:
    """Rename ``staging`` to ``target``, moving an existing ``target`` aside first; safe to repeat after a kill."""
    aside = _aside(staging)
    if os.path.lexists(target):
        aside.mkdir(exist_ok=True)
        os.replace(target, aside / "old")
        _reached("moved-aside")
    os.replace(staging, target)
    fsync_dir(target.parent)
    _reached("published")
    shutil.rmtree(aside, ignore_errors=True)


def _finish_pending(state: TrailState) -> list[str]:
    """Publish the run of the last line if a kill stopped it between logging and publishing."""
    last = state.last
    if last is None or not last.is_run or not isinstance(last.entry.get("staging"), str):
        return []
    record = record_path(state.path, last.entry["record"])
    staging = record_path(state.path, last.entry["staging"])
    expected = last.entry.get("record_sha256")
    if record.is_file() and sha256_file(record) == expected:
        shutil.rmtree(_aside(staging), ignore_errors=True)  # published; a kill may have left the replaced folder
        return []
    staged = staging / RECORD_FILE
    if not staged.is_file() or sha256_file(staged) != expected:
        return []
    try:
        _install(staging, Path(os.path.realpath(record.parent)))
    except OSError as exc:
        raise write_error(exc, doing=f"publish the run of trail line {last.number}, stopped after it was logged",
                          where=staging.parent, flag="--out") from None
    return [f"published the run logged on line {last.number} of the audit trail ({last.entry['record']}), which was "
            "stopped between logging and publishing"]


# ---------------------------------------------------------------- keys


def _require_keys(state: TrailState, keys: TrailKeys, trail: Path, *, extra_ok: bool = False) -> None:
    """The writer's keys must be exactly what a verified trail demands (``extra_ok``: more is fine, for key
    changes); a key that matches none of the trail's HMACs is named as the problem, not the trail."""
    if state.wrong_key:
        raise InputError(f"{TRAIL_KEY_ENV} is not the key audit trail {str(trail)!r} was written with (the HMAC of "
                         f"line {state.bad_line} does not match it)",
                         hint=f"set {TRAIL_KEY_ENV} to the trail's key, or use another --trail")
    if not state.ok:
        raise _broken(state.problem, trail)
    if not state.lines:
        return
    policy, since = state.keys, state.keys_since
    if policy.hmac and keys.hmac is None:
        raise InputError(f"audit trail {str(trail)!r} is keyed (HMAC since line {since}), but {TRAIL_KEY_ENV} is not "
                         "set", hint=f"set {TRAIL_KEY_ENV} to the trail's key: an un-keyed line would break the trail")
    if policy.ed25519 and keys.signing is None:
        raise InputError(f"audit trail {str(trail)!r} is signed (Ed25519 key {fingerprint(policy.ed25519)} since line "
                         f"{since}), but {SIGNING_KEY_ENV} is not set",
                         hint=f"set {SIGNING_KEY_ENV} to the path of the trail's private key (a PEM file)")
    if policy.ed25519 and keys.public != policy.ed25519:
        raise InputError(f"{SIGNING_KEY_ENV} holds Ed25519 key {fingerprint(keys.public)}, but audit trail "
                         f"{str(trail)!r} is signed with key {fingerprint(policy.ed25519)}",
                         hint=f"point {SIGNING_KEY_ENV} at the trail's key, or rotate it with `auditkit trail keys "
                              f"{trail} --sign NEW.pem`")
    if extra_ok:
        return
    if not policy.hmac and keys.hmac is not None:
        raise InputError(f"audit trail {str(trail)!r} is not keyed, but {TRAIL_KEY_ENV} is set",
                         hint=f"turn keys on for it with `auditkit trail keys {trail} --hmac` (a recorded event), or "
                              f"unset {TRAIL_KEY_ENV}")
    if not policy.ed25519 and keys.signing is not None:
        raise InputError(f"audit trail {str(trail)!r} is not signed, but {SIGNING_KEY_ENV} is set",
                         hint=f"turn signing on with `auditkit trail keys {trail} --sign KEY.pem` (a recorded "
                              f"event), or unset {SIGNING_KEY_ENV}")


def _broken(problem: str | None, trail: Path) -> RunError:
    return RunError(f"audit trail {str(trail)!r} is broken: {problem}",
                    hint=f"investigate with `auditkit verify {trail}`, or start a new trail with --trail")


def _fresh_state(trail: Path, keys: TrailKeys, *, since: TrailState | None = None, extra_ok: bool = False
                 ) -> TrailState:
    """The trail as it is now (under the lock), refused when broken or when the keys do not fit."""
    state = scan_trail(trail, key=keys.hmac, since=since)
    _require_keys(state, keys, trail, extra_ok=extra_ok)
    return state


def _repair(state: TrailState, trail: Path) -> list[str]:
    """What every writer does first under the lock: cut an incomplete line, finish a stopped publish."""
    notes = [_cut(state, given=trail)] if state.torn_bytes else []
    return notes + _finish_pending(state)


# ---------------------------------------------------------------- one run


@dataclass
class Published:
    """A run in place: where it is, its trail line, and what the writer repaired on the way."""

    out: Path
    trail: Path
    line: TrailLine
    notes: list[str] = field(default_factory=list)


class RunLedger:
    """One run's way into the trail: checked before the heavy work, then staged and published.

    Args:
        trail: the audit trail (a link is written through to its target).
        out: the run folder asked for (``--out``, or the default ``runs/<UTC time>``).
        force: replace an existing ``out`` that no trail vouches for.
        out_is_default: ``out`` was not asked for, so a name taken meanwhile moves to the next free one.
        keys: the writer's keys (default: from the environment).
    """

    def __init__(self, *, trail: Path, out: Path, force: bool = False, out_is_default: bool = False,
                 keys: TrailKeys | None = None, progress: ProgressCallback = no_progress) -> None:
        self.trail = Path(trail)
        self.out = Path(out)
        self.force = force
        self.out_is_default = out_is_default
        self.keys = keys if keys is not None else TrailKeys.from_env()
        self.progress = progress
        self._state: TrailState | None = None
        self._logged = False

    # -- before the run

    def check(self) -> None:
        """Every check of the trail and ``out`` that needs no heavy work; creates nothing.

        The trail must be a regular file or absent (a link is followed; a dangling one is refused), its
        folder writable, the whole trail must verify (records included), and the keys in the
        environment must be the ones it demands; ``out`` must not be a dangling link nor the folder of a
        logged run.
        """
        real, exists = trail_file(self.trail)
        check_writable(real, flag="--trail")
        if exists:
            check = verify_trail(self.trail, key=self.keys.hmac)
            state = check.state
            _require_keys(state, self.keys, self.trail)  # the chain, then the keys: a usage error comes first
            if not check.ok:  # the chain holds, but a record or a run that claims the trail says otherwise
                raise _broken(check.problem, self.trail)
            self._state = state
        else:
            self._state = TrailState(path=real)
        _refuse_dangling(self.out)
        if not self.out_is_default:
            self._refuse_logged(self._state, Path(os.path.realpath(self.out)))
        if self.force and self.out.is_dir():
            _refuse_claimed(Path(os.path.realpath(self.out)), self.out, trail=real, trail_id=self._state.trail_id)

    def _refuse_logged(self, state: TrailState, target: Path) -> None:
        logged = state.runs_in(target)
        if not logged:
            return
        line = logged[-1]
        if (target / RECORD_FILE).is_file():
            raise InputError(f"--out {str(self.out)!r} holds the run recorded on line {line.number} of the audit trail;"
                             " replacing it would break the trail",
                             hint="choose another --out (runs are never replaced once logged)")
        staging = line.entry.get("staging")
        if isinstance(staging, str) and (record_path(state.path, staging) / RECORD_FILE).is_file():
            raise InputError(f"--out {str(self.out)!r} is taken by the run logged on line {line.number} of the audit "
                             "trail, which another process is publishing now (or was stopped before it could)",
                             hint=f"choose another --out; `auditkit trail recover {self.trail}` finishes a stopped one")
        raise InputError(f"--out {str(self.out)!r} is the folder of the run logged on line {line.number} of the audit "
                         "trail, which is not on disk now; reusing its name would break the trail",
                         hint=f"choose another --out (`auditkit verify {self.trail}` says where that run went)")

    # -- staging

    def _target(self, out: Path) -> Path:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise write_error(exc, doing=f"create the folder of --out {str(out)!r}", where=out.parent,
                              flag="--out") from None
        return Path(os.path.realpath(out))

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """A hidden folder beside the real ``out`` to write the run into; removed unless it was published,
        or logged and waiting to be (then the next writer publishes it)."""
        target = self._target(self.out)
        try:
            tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
            umask = os.umask(0)
            os.umask(umask)
            tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the published run folder follows the umask
        except OSError as exc:
            raise write_error(exc, doing=f"create a staging folder beside --out {str(self.out)!r}",
                              where=target.parent, flag="--out") from None
        try:
            yield tmp
        except OSError as exc:  # a full disk, a read-only remount, lost permissions while writing the run
            raise write_error(exc, doing=f"write the run into {str(tmp)!r}; nothing was published",
                              where=target.parent, flag="--out") from None
        finally:
            if not self._logged:
                shutil.rmtree(tmp, ignore_errors=True)

    # -- publishing

    def publish(self, staging: Path, record: RunRecord) -> Published:
        """Log ``record`` (staged, with its outputs, in ``staging``) and rename the run into place."""
        real = _lockable(self.trail)
        with _locked(real, progress=self.progress):
            _reached("locked")
            with _signals_held() as received:
                published = self._publish_locked(staging, record)
                note_written(f"run {published.out} (line {published.line.number} of audit trail {self.trail})")
        if received:
            raise KeyboardInterrupt
        _reached("returned")
        return published

    def _publish_locked(self, staging: Path, record: RunRecord) -> Published:
        state = _fresh_state(self.trail, self.keys, since=self._state)
        notes = _repair(state, self.trail)
        out, target = self._decide(state)
        batch = _Batch(state, self.keys)
        claim_index = batch.next_index
        record.trail = {"id": batch.trail_id, "index": claim_index,
                        "file": os.path.relpath(state.path, target)}
        try:
            record.write(staging / RECORD_FILE)
        except OSError as exc:
            raise write_error(exc, doing=f"write {RECORD_FILE} into {str(staging)!r}; nothing was logged",
                              where=target.parent, flag="--out") from None
        asked = Path(os.path.realpath(out.parent)) / out.name  # the last component as asked: a link stays a link
        entry = {"event": "run", **{k: record.summary[k] for k in MIRRORED_FIELDS if k in record.summary},
                 "record": os.path.relpath(asked / RECORD_FILE, state.path.parent),
                 "record_sha256": sha256_file(staging / RECORD_FILE), "outputs": dict(record.outputs),
                 "finished_utc": record.provenance.get("finished_utc"), "auditkit": __version__,
                 "staging": os.path.relpath(staging, state.path.parent)}
        line = batch.add(entry, keys=_keys_for(batch.policy, self.keys))
        _reached("checked")
        _append(state, batch.data(), given=self.trail)
        self._logged = True
        _reached("appended")
        try:
            _install(staging, target)
        except OSError as exc:
            raise write_error(exc, doing=f"move the run into place at {str(out)!r}; it is logged on line "
                                         f"{line.number} and its files wait in {str(staging)!r}, which the next run "
                                         "(or `auditkit trail recover`) publishes", where=target.parent,
                              flag="--out") from None
        return Published(out=out, trail=self.trail, line=line, notes=notes)

    def _decide(self, state: TrailState) -> tuple[Path, Path]:
        """The folder this run is published as, decided under the lock."""
        out, n = self.out, 2
        base = re.sub(r"-\d+$", "", out.name) if self.out_is_default else out.name
        while True:
            _refuse_dangling(out)
            target = Path(os.path.realpath(out))
            taken = bool(state.runs_in(target)) or os.path.lexists(target)
            if not (self.out_is_default and taken):
                break
            out, n = out.with_name(f"{base}-{n}"), n + 1
        if not os.path.lexists(target):
            self._refuse_logged(state, target)  # a logged run whose folder is gone: its name stays taken
        else:
            if not self.force:
                raise InputError(f"output {str(out)!r} appeared while the run was working (another run published it "
                                 "first); nothing was logged", hint="choose another --out, or pass --force to replace it")
            self._refuse_logged(state, target)
            if not target.is_dir():
                raise InputError(f"--out {str(out)!r} is a file, not a run folder",
                                 hint="choose another --out (a folder name, e.g. runs/<name>)")
            _refuse_claimed(target, out, trail=state.path, trail_id=state.trail_id)
        return out, target


def _refuse_dangling(out: Path) -> None:
    if out.is_symlink() and not out.exists():
        raise InputError(f"--out {str(out)!r} is a symbolic link to {os.readlink(out)!r}, which does not exist",
                         hint="remove the link, create the folder it points to, or choose another --out")


def _refuse_claimed(target: Path, out: Path, *, trail: Path, trail_id: str | None) -> None:
    """--force never replaces a run that names the trail that logged it (this one, ``trail`` with ID
    ``trail_id``, or another)."""
    try:
        record = RunRecord.load(target / RECORD_FILE)
    except InputError:
        return
    claim = record.trail
    if isinstance(claim, dict) and claim.get("id"):
        index = claim.get("index")
        place = f"line {index + 1}" if isinstance(index, int) else "a line"
        file = claim.get("file")
        ours = claim["id"] == trail_id or (isinstance(file, str) and os.path.realpath(target / file) == str(trail))
        if ours:  # this trail: logged since the trail was last read
            raise InputError(f"--out {str(out)!r} holds the run recorded on {place} of the audit trail; replacing it "
                             "would break the trail", hint="choose another --out (runs are never replaced once logged)")
        raise InputError(f"--out {str(out)!r} holds a run logged on {place} of audit trail {claim.get('file')!r} (ID "
                         f"{claim['id']}); replacing it would break that trail",
                         hint="choose another --out (runs are never replaced once logged)")


# ---------------------------------------------------------------- trail commands


def _lockable(trail: Path) -> Path:
    """The real trail path, with its folder created so the lock file can sit beside it."""
    real, _ = trail_file(trail)
    check_writable(real, flag="--trail")
    try:
        real.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(exc, doing=f"create the folder of audit trail {str(trail)!r}", where=real.parent,
                          flag="--trail") from None
    return real


def _with_trail(trail: Path, keys: TrailKeys, work: Callable[[TrailState], Any], *, extra_ok: bool = False) -> Any:
    real = _lockable(trail)
    with _locked(real), _signals_held() as received:
        state = _fresh_state(trail, keys, extra_ok=extra_ok)
        result = work(state)
    if received:
        raise KeyboardInterrupt
    return result


def init_trail(trail: str | os.PathLike[str], *, keys: TrailKeys) -> TrailLine:
    """Start a new trail: its genesis line, declaring ``keys`` (an HMAC, a signing key, both or neither)."""
    path = Path(trail)

    def work(state: TrailState) -> TrailLine:
        if state.lines or state.torn_bytes:
            raise InputError(f"audit trail {str(path)!r} already exists ({state.lines} line(s))",
                             hint="a trail is created once; use `auditkit trail keys` to change its keys")
        batch = _Batch(state, keys)
        _append(state, batch.data(), given=path)
        note_written(f"audit trail {path}")
        return batch.lines[-1]

    return _with_trail(path, keys, work)


def change_keys(trail: str | os.PathLike[str], *, keys: TrailKeys, hmac: bool | None = None,
                signing: Ed25519PrivateKey | None = None, stop_signing: bool = False) -> TrailLine:
    """Record a keys event: from the next line on, the trail demands the keys asked for.

    ``keys`` are the writer's (from the environment): the event is endorsed with those in force, so only
    their holder can change them, and authenticated with the new ones, which proves they work. ``hmac``
    turns the HMAC (with ``keys.hmac``) on or off; ``signing`` turns signing on or rotates its key;
    ``stop_signing`` turns it off; what is not named stays as it is.
    """
    path = Path(trail)

    def work(state: TrailState) -> TrailLine:
        _repair(state, path)
        batch = _Batch(state, keys)
        policy = batch.policy
        if hmac and keys.hmac is None:
            raise InputError(f"--hmac needs the key in {TRAIL_KEY_ENV}", hint=f"set {TRAIL_KEY_ENV} to the new secret")
        new = TrailKeys(hmac=keys.hmac if (policy.hmac if hmac is None else hmac) else None,
                        signing=None if stop_signing else signing if signing is not None
                        else keys.signing if policy.ed25519 else None)
        if _policy_of(new) == policy:
            raise InputError(f"audit trail {str(path)!r} already demands {policy.describe()}",
                             hint="name a change: --hmac, --no-hmac, --sign PRIVATE.pem or --no-sign")
        entry = {"event": "keys", "keys": _policy_of(new).to_json(), "changed_utc": utc_now(), "auditkit": __version__}
        line = batch.add(entry, keys=new, endorse=_keys_for(policy, keys))
        _append(state, batch.data(), given=path)
        note_written(f"a keys event on line {line.number} of audit trail {path}")
        return line

    return _with_trail(path, keys, work, extra_ok=True)


def recover_trail(trail: str | os.PathLike[str], *, keys: TrailKeys) -> list[str]:
    """What the next writer would repair, now: an incomplete last line, a run stopped before publishing."""
    path = Path(trail)
    return _with_trail(path, keys, lambda state: _repair(state, path), extra_ok=True)


def append_entry(trail: str | os.PathLike[str], entry: dict[str, Any], *, keys: TrailKeys | None = None) -> TrailLine:
    """Append one ``run`` entry (a dict with at least ``record`` and ``record_sha256`` to be checked against
    a record) under the lock; the Python API's way to log evidence produced outside `forget`/`audit`."""
    path = Path(trail)
    keys = keys if keys is not None else TrailKeys()

    def work(state: TrailState) -> TrailLine:
        _repair(state, path)
        batch = _Batch(state, keys)
        line = batch.add({"event": "run", **entry}, keys=_keys_for(batch.policy, keys))
        _append(state, batch.data(), given=path)
        return line

    return _with_trail(path, keys, work)
