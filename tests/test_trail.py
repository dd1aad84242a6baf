"""The audit trail's format and its verification, at the API level: every single-line edit, deletion,
insertion and reorder is named; keys (HMAC, Ed25519) cannot be bypassed, and changing them is a recorded
event; several trails share a folder; old (format 1) trails still verify; hostile lines and files are
named, never a traceback. tests/test_trail_cli.py goes through the command line, tests/test_ledger.py
through concurrent and killed writers.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from auditkit.errors import InputError
from auditkit.evidence.ledger import append_entry, change_keys, init_trail
from auditkit.evidence.signing import TrailKeys, canonical_json, hmac_tag, public_hex, signed_bytes
from auditkit.evidence.trail import GENESIS_SHA256, MAX_LINE_BYTES, scan_trail, verify_trail
from auditkit.fsutil import sha256_bytes
from reliability_helpers import TESTS, publish_fake_run

N_RUNS = 5
V1 = TESTS / "data" / "trail-v1"
V1_KEY = b"v1-fixture-key"


@pytest.fixture
def trail(tmp_path):
    """A genesis line and five runs, published through the real protocol into tmp/runs/."""
    path = tmp_path / "runs" / "audit-trail.jsonl"
    for i in range(N_RUNS):
        publish_fake_run(path, tmp_path / "runs" / f"run-{i}")
    return path


def _lines(path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def _save(path, lines: list[str]) -> None:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def test_a_published_trail_verifies_and_chains(trail):
    check = verify_trail(trail)
    assert check.ok and check.lines == N_RUNS + 1 and check.runs == N_RUNS and not check.warnings
    lines = [json.loads(line) for line in _lines(trail)]
    genesis = lines[0]
    assert genesis["v"] == 2 and genesis["prev_sha256"] == GENESIS_SHA256
    assert genesis["entry"]["event"] == "genesis" and check.trail_id == genesis["entry"]["trail_id"]
    assert genesis["entry"]["keys"] == {"hmac": False, "ed25519": None}
    for before, after in zip(_lines(trail), _lines(trail)[1:]):
        assert json.loads(after)["prev_sha256"] == sha256_bytes(before.encode())
    assert check.head_sha256 == sha256_bytes(_lines(trail)[-1].encode())
    for line in lines[1:]:  # each run says which trail and line logged it
        record = json.loads((trail.parent / line["entry"]["record"]).read_text(encoding="utf-8"))
        assert record["trail"] == {"id": check.trail_id, "index": line["index"], "file": "../audit-trail.jsonl"}


def _edit(lines, k):
    obj = json.loads(lines[k])
    if "passed" in obj["entry"]:
        obj["entry"]["passed"] = not obj["entry"]["passed"]  # the edit a forger wants, kept canonical
    else:
        obj["entry"]["created_utc"] = "1999-01-01T00:00:00Z"
    lines[k] = canonical_json(obj)


def _edit_whitespace(lines, k):
    lines[k] = lines[k].replace(",", ", ", 1)


def _delete(lines, k):
    del lines[k]


def _insert(lines, k):
    lines.insert(k, lines[(k + 2) % len(lines)])


def _swap(lines, k):
    j = k + 1 if k + 1 < len(lines) else k - 1
    lines[k], lines[j] = lines[j], lines[k]
    return min(j, k)


@pytest.mark.parametrize("tamper", [_edit, _edit_whitespace, _delete, _insert, _swap])
@pytest.mark.parametrize("k", range(N_RUNS + 1))
def test_every_single_line_tampering_names_its_line(trail, tamper, k):
    lines = _lines(trail)
    moved = tamper(lines, k)
    _save(trail, lines)
    check = verify_trail(trail)
    expected = (moved if moved is not None else k) + 1
    assert not check.ok
    assert check.bad_line == expected, check.problem
    # an edit the chain sees on the next line is named as the edited line
    assert check.problem.startswith(f"line {expected}") or f": line {expected} was changed" in check.problem


def test_removing_the_last_line_is_caught_through_the_run_that_claims_it(trail):
    _save(trail, _lines(trail)[:-1])
    check = verify_trail(trail)
    assert check.bad_line == N_RUNS + 1
    assert check.problem == (f"line {N_RUNS + 1} is missing: run-4/record.json is not in the trail, though it was "
                             f"logged on its line {N_RUNS + 1} (lines were removed from its end)")


def test_a_trail_replaced_by_a_new_one_is_caught_through_the_runs_of_the_old(trail, tmp_path):
    trail.unlink()
    publish_fake_run(trail, tmp_path / "runs" / "new")  # a fresh trail (a new ID) at the same path
    check = verify_trail(trail)
    assert not check.ok and "the trail was replaced or rewritten" in check.problem


def test_a_changed_record_is_named_by_its_line(trail):
    record = trail.parent / "run-2" / "record.json"
    record.write_text(record.read_text(encoding="utf-8").replace('"fake"', '"edited"'), encoding="utf-8")
    check = verify_trail(trail)
    assert check.bad_line == 4 and "no longer matches" in check.problem


def test_without_records_the_chain_alone_still_catches_middle_edits(trail):
    for run in trail.parent.glob("run-*"):
        (run / "record.json").unlink()
    check = verify_trail(trail)
    assert check.ok and len(check.warnings) == N_RUNS and all("not on disk" in w for w in check.warnings)
    lines = _lines(trail)
    _edit(lines, 2)
    _save(trail, lines)
    assert verify_trail(trail).bad_line == 3


# ---------------------------------------------------------------- several trails, runs elsewhere


def test_two_trails_in_one_folder_vouch_each_for_its_own_runs(tmp_path):
    runs = tmp_path / "runs"
    a, b = runs / "audit-trail.jsonl", runs / "other.jsonl"
    for name, path in (("a1", a), ("b1", b), ("a2", a), ("b2", b)):
        publish_fake_run(path, runs / name)
    assert verify_trail(a).ok and verify_trail(b).ok  # they used to call each other's runs removed lines
    _save(b, _lines(b)[:-1])
    assert verify_trail(a).ok
    check = verify_trail(b)
    assert not check.ok and "b2/record.json is not in the trail" in check.problem


def test_runs_that_live_elsewhere_are_vouched_for_and_their_removal_is_caught(tmp_path):
    trail = tmp_path / "ledger" / "audit-trail.jsonl"
    for name in ("x", "y"):
        publish_fake_run(trail, tmp_path / "elsewhere" / name)
    assert json.loads(_lines(trail)[-1])["entry"]["record"] == "../elsewhere/y/record.json"
    assert verify_trail(trail).ok
    _save(trail, _lines(trail)[:-1])
    check = verify_trail(trail)
    assert not check.ok and "is not in the trail" in check.problem


# ---------------------------------------------------------------- keys


def test_an_hmac_catches_a_rewritten_last_line_and_a_wrong_key(tmp_path):
    path = tmp_path / "audit-trail.jsonl"
    keys = TrailKeys(hmac=b"secret")
    for i in range(3):
        append_entry(path, {"n": i}, keys=keys)
    assert verify_trail(path, key=b"secret").ok
    unkeyed = verify_trail(path)
    assert unkeyed.ok and unkeyed.keyed and "AUDITKIT_TRAIL_KEY" in unkeyed.warnings[0]
    wrong = scan_trail(path, key=b"other")
    assert wrong.bad_line == 1 and wrong.wrong_key

    lines = _lines(path)
    obj = json.loads(lines[-1])
    obj["entry"]["n"] = 99
    lines[-1] = canonical_json(obj)  # a forger without the key can keep the chain but not the HMAC
    _save(path, lines)
    assert verify_trail(path).ok  # the limitation the key exists for
    check = verify_trail(path, key=b"secret")
    assert check.bad_line == 4 and "wrong HMAC" in check.problem and not scan_trail(path, key=b"secret").wrong_key


def test_a_keyed_trail_refuses_an_unkeyed_append_and_the_reverse(tmp_path):
    keyed, plain = tmp_path / "keyed.jsonl", tmp_path / "plain.jsonl"
    append_entry(keyed, {"n": 0}, keys=TrailKeys(hmac=b"secret"))
    append_entry(plain, {"n": 0})
    before = keyed.read_bytes(), plain.read_bytes()
    with pytest.raises(InputError, match="is keyed .* but AUDITKIT_TRAIL_KEY is not set"):
        append_entry(keyed, {"n": 1})
    with pytest.raises(InputError, match="is not keyed, but AUDITKIT_TRAIL_KEY is set") as caught:
        append_entry(plain, {"n": 1}, keys=TrailKeys(hmac=b"secret"))
    assert "auditkit trail keys" in caught.value.hint and "--hmac" in caught.value.hint
    assert (keyed.read_bytes(), plain.read_bytes()) == before


def test_turning_keys_on_is_a_recorded_event_that_verify_accepts(tmp_path):
    path = tmp_path / "audit-trail.jsonl"
    append_entry(path, {"n": 0})
    keys = TrailKeys(hmac=b"secret")
    event = change_keys(path, keys=keys, hmac=True)
    assert event.number == 3 and event.entry["keys"] == {"hmac": True, "ed25519": None}
    append_entry(path, {"n": 1}, keys=keys)
    check = verify_trail(path, key=b"secret")
    assert check.ok and check.lines == 4, check.problem  # "broken" before: lines 1-2 carry no HMAC

    # The bypass the key exists to stop: a line appended without it, however well chained.
    lines = _lines(path)
    body = {"v": 2, "index": 4, "prev_sha256": sha256_bytes(lines[-1].encode()), "entry": {"event": "run", "n": 2}}
    _save(path, [*lines, canonical_json(body)])
    for key in (None, b"secret"):
        check = verify_trail(path, key=key)
        assert check.bad_line == 5 and "has no HMAC, which the trail demands since line 3" in check.problem


def test_keys_cannot_be_turned_off_or_dropped_without_the_key(tmp_path):
    path = tmp_path / "audit-trail.jsonl"
    keys = TrailKeys(hmac=b"secret")
    append_entry(path, {"n": 0}, keys=keys)
    lines = _lines(path)
    off = {"v": 2, "index": 2, "prev_sha256": sha256_bytes(lines[-1].encode()),
           "entry": {"event": "keys", "keys": {"hmac": False, "ed25519": None}}}
    _save(path, [*lines, canonical_json(off)])
    assert "without the endorsement of the keys in force (HMAC)" in verify_trail(path).problem

    # Rewriting the whole trail without HMACs keeps the chain, but not against the key.
    stripped, prev = [], GENESIS_SHA256
    for index, text in enumerate(lines):
        obj = json.loads(text)
        obj.pop("hmac")
        obj["prev_sha256"] = prev
        if obj["entry"]["event"] == "genesis":
            obj["entry"]["keys"]["hmac"] = False
        stripped.append(canonical_json(obj))
        prev = sha256_bytes(stripped[-1].encode())
    _save(path, stripped)
    assert verify_trail(path).ok
    assert "the trail was never keyed" in verify_trail(path, key=b"secret").problem


def test_an_ed25519_signature_lets_an_auditor_verify_with_public_material_and_forge_nothing(tmp_path):
    """The operator signs (and MACs); the auditor holds only the public key. Whoever holds the HMAC
    key can rewrite a line so that HMAC verification passes; the signature still catches it."""
    operator = Ed25519PrivateKey.generate()
    public = public_hex(operator)
    path = tmp_path / "audit-trail.jsonl"
    keys = TrailKeys(hmac=b"shared", signing=operator)
    for i in range(3):
        append_entry(path, {"n": i}, keys=keys)
    assert verify_trail(path, public_key=public).ok
    check = verify_trail(path, key=b"shared", public_key=public)
    assert check.ok and check.signature == json.loads(_lines(path)[-1])["sig"]

    lines = _lines(path)
    forged = json.loads(lines[-1])
    forged["entry"]["n"] = 99
    forged["hmac"] = hmac_tag(b"shared", signed_bytes(forged, version=2))  # the HMAC holder's forgery
    _save(path, [*lines[:-1], canonical_json(forged)])
    hmac_only = TrailKeys(hmac=b"shared")
    assert hmac_only.hmac and verify_trail(path, key=b"shared").problem.startswith("line 4 has a wrong signature")
    assert "wrong signature" in verify_trail(path, public_key=public).problem


def test_a_trail_re_signed_with_another_key_fails_against_the_auditors_copy(tmp_path):
    path = tmp_path / "audit-trail.jsonl"
    append_entry(path, {"n": 0}, keys=TrailKeys(signing=Ed25519PrivateKey.generate()))
    auditors_copy = public_hex(Ed25519PrivateKey.generate())
    check = verify_trail(path, public_key=auditors_copy)
    assert not check.ok and check.problem.startswith("the trail is not signed with Ed25519 key")
    assert "checked against the key the trail itself declares" in verify_trail(path).warnings[0]


def test_signing_turned_on_rotated_and_off_is_endorsed_each_time(tmp_path):
    path = tmp_path / "audit-trail.jsonl"
    first, second = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    append_entry(path, {"n": 0})
    change_keys(path, keys=TrailKeys(), signing=first)
    append_entry(path, {"n": 1}, keys=TrailKeys(signing=first))
    with pytest.raises(InputError, match="is signed .* but AUDITKIT_TRAIL_SIGNING_KEY is not set"):
        append_entry(path, {"n": 2})
    change_keys(path, keys=TrailKeys(signing=first), signing=second)  # rotation: endorsed by the first key
    append_entry(path, {"n": 2}, keys=TrailKeys(signing=second))
    for public in (first, second):
        assert verify_trail(path, public_key=public_hex(public)).ok
    change_keys(path, keys=TrailKeys(signing=second), stop_signing=True)
    append_entry(path, {"n": 3})
    check = verify_trail(path, public_key=public_hex(first))
    assert check.ok and any("signing was turned off on line 7" in w for w in check.warnings)

    lines = _lines(path)  # a rotation the old key did not endorse is refused
    event = json.loads(lines[4])
    event["entry"]["endorsement"]["sig"] = "00" * 64
    _save(path, [*lines[:4], canonical_json(event)])
    assert "without a valid endorsement by Ed25519 key" in verify_trail(path).problem


def test_init_creates_a_trail_with_the_keys_and_refuses_an_existing_one(tmp_path):
    path = tmp_path / "secure" / "trail.jsonl"
    line = init_trail(path, keys=TrailKeys(hmac=b"k"))
    assert line.number == 1 and line.entry["keys"] == {"hmac": True, "ed25519": None}
    with pytest.raises(InputError, match="already exists"):
        init_trail(path, keys=TrailKeys(hmac=b"k"))
    assert verify_trail(path, key=b"k").ok


# ---------------------------------------------------------------- anchoring


def test_an_earlier_head_proves_the_trail_only_grew(trail, tmp_path):
    head = verify_trail(trail).head_sha256
    publish_fake_run(trail, tmp_path / "runs" / "later")
    check = verify_trail(trail, expect_head=head)
    assert check.ok and check.grown_since == N_RUNS + 1
    lines = _lines(trail)
    _edit(lines, 3)  # a rewrite from line 4 on: every later line re-chained
    for k in range(4, len(lines)):
        obj = json.loads(lines[k])
        obj["prev_sha256"] = sha256_bytes(lines[k - 1].encode())
        lines[k] = canonical_json(obj)
    _save(trail, lines)
    check = verify_trail(trail, expect_head=head, check_records=False)
    assert not check.ok and f"does not contain the head {head}" in check.problem


# ---------------------------------------------------------------- format 1


def test_format_1_trails_written_before_issue_11_still_verify():
    plain = verify_trail(V1 / "runs" / "audit-trail.jsonl")
    assert plain.ok and plain.lines == plain.runs == 6 and plain.trail_id is None and not plain.warnings
    keyed = verify_trail(V1 / "keyed" / "audit-trail.jsonl", key=V1_KEY)
    assert keyed.ok and keyed.keyed and keyed.lines == 2
    assert verify_trail(V1 / "keyed" / "audit-trail.jsonl", key=b"wrong").bad_line == 1


@pytest.mark.parametrize("folder, key", [("runs", None), ("keyed", V1_KEY)])
def test_a_format_1_trail_continues_with_a_genesis_that_follows_it(tmp_path, folder, key):
    shutil.copytree(V1 / folder, tmp_path / folder)
    path = tmp_path / folder / "audit-trail.jsonl"
    old = len(_lines(path))
    if key:
        with pytest.raises(InputError, match="is keyed .*AUDITKIT_TRAIL_KEY is not set"):
            publish_fake_run(path, tmp_path / folder / "new")
        os.environ["AUDITKIT_TRAIL_KEY"] = key.decode()
    try:
        publish_fake_run(path, tmp_path / folder / "new")
    finally:
        os.environ.pop("AUDITKIT_TRAIL_KEY", None)
    genesis = json.loads(_lines(path)[old])
    assert genesis["entry"]["event"] == "genesis" and genesis["entry"]["follows_v1_lines"] == old
    assert ("hmac" in genesis) == bool(key)
    check = verify_trail(path, key=key)
    assert check.ok and check.lines == old + 2 and not check.warnings, (check.problem, check.warnings)


def test_a_format_1_line_after_the_genesis_is_an_insertion(trail):
    lines = _lines(trail)
    v1 = json.loads(lines[2])
    v1.pop("v")
    _save(trail, [*lines[:2], canonical_json(v1), *lines[3:]])
    assert "is in format 1 after the trail's format-2 genesis" in verify_trail(trail).problem


# ---------------------------------------------------------------- hostile lines and files


def _append_raw(path, data: bytes) -> None:
    with open(path, "ab") as handle:
        handle.write(data)


@pytest.mark.parametrize("line, problem", [
    (b'{"v":2,"index":NaN}', "holds NaN, which strict JSON does not allow"),
    (b'{"index":-Infinity}', "holds -Infinity, which strict JSON does not allow"),
    (b'{"index":1e400}', "holds the number 1e400, too large for a JSON float"),
    (b"[" * 200_000 + b"]" * 200_000, "is nested too deeply to be a trail line"),
    (b"not json", "is not valid JSON"),
    (b"", "is empty"),
    (b"\xff\xfe", "is not UTF-8 text"),
    (b"[1, 2]", "is not a JSON object"),
    (b'{"index": 0}', "does not have the fields"),
])
def test_hostile_lines_are_named(trail, line, problem):
    _append_raw(trail, line + b"\n")
    check = verify_trail(trail)
    assert check.bad_line == N_RUNS + 2 and check.problem.startswith(f"line {N_RUNS + 2} {problem}"), check.problem


def test_a_100_mb_line_is_named_without_being_read_into_memory(trail):
    with open(trail, "ab") as handle:
        handle.truncate(trail.stat().st_size + 100 * (1 << 20))  # 100 MiB of NUL bytes, sparse on disk
        handle.seek(0, os.SEEK_END)
        handle.write(b"\n")
    check = verify_trail(trail)
    assert check.problem == f"line {N_RUNS + 2} is longer than 1 MiB: not a line auditkit wrote (a trail line is about 1 KB)"
    assert MAX_LINE_BYTES == 1 << 20


def test_a_future_format_is_refused_as_unreadable_not_as_tampering(trail):
    lines = _lines(trail)
    obj = json.loads(lines[-1])
    obj["v"] = 3
    _save(trail, [*lines[:-1], canonical_json(obj)])
    with pytest.raises(InputError, match="is in trail format 3, newer than this auditkit reads"):
        verify_trail(trail)


def test_crlf_line_endings_verify_with_a_warning_and_the_trail_continues(trail, tmp_path):
    trail.write_bytes(trail.read_bytes().replace(b"\n", b"\r\n"))
    check = verify_trail(trail)
    assert check.ok and "CRLF line endings" in check.warnings[0], check.problem
    publish_fake_run(trail, tmp_path / "runs" / "after-crlf")
    check = verify_trail(trail)
    assert check.ok and check.lines == N_RUNS + 2


def test_an_incomplete_last_line_is_explained(trail):
    _append_raw(trail, _lines(trail)[-1].encode()[:50])
    check = verify_trail(trail)
    assert check.ok and check.lines == N_RUNS + 1
    assert f"line {N_RUNS + 2} is incomplete (50 bytes without a newline" in check.warnings[0]


@pytest.mark.parametrize("make, problem", [
    (lambda p: os.symlink("/dev/null", p), "(a link to '/dev/null') is a character device, not a file"),
    (lambda p: os.mkfifo(p), "is a named pipe (FIFO), not a file"),
    (lambda p: os.mkdir(p), "is a folder"),
    (lambda p: os.symlink("../secure/trail.jsonl", p), "is a symbolic link to '../secure/trail.jsonl', which does not exist"),
])
def test_what_is_not_a_trail_file_is_refused_for_reading_and_writing(tmp_path, make, problem):
    path = tmp_path / "runs" / "audit-trail.jsonl"
    path.parent.mkdir()
    make(path)
    with pytest.raises(InputError) as caught:
        verify_trail(path)
    assert problem in caught.value.message
    with pytest.raises(InputError) as caught:
        publish_fake_run(path, tmp_path / "runs" / "x")
    assert problem in caught.value.message
    assert not (tmp_path / "runs" / "x").exists()


def test_a_symlinked_trail_is_written_through_and_stays_a_link(tmp_path):
    secure = tmp_path / "secure" / "trail.jsonl"
    init_trail(secure, keys=TrailKeys())
    link = tmp_path / "runs" / "audit-trail.jsonl"
    link.parent.mkdir()
    link.symlink_to(Path("..") / "secure" / "trail.jsonl")
    publish_fake_run(link, tmp_path / "runs" / "x")
    assert link.is_symlink() and len(_lines(secure)) == 2
    assert (secure.parent / "trail.jsonl.lock").exists() and not (link.parent / "audit-trail.jsonl.lock").exists()
    assert json.loads(_lines(secure)[1])["entry"]["record"] == "../runs/x/record.json"
    assert verify_trail(link).ok and verify_trail(secure).ok


def test_garbage_files_are_named(tmp_path):
    path = tmp_path / "audit-trail.jsonl"
    path.write_bytes(b"\xff\xfe\x00\n")
    with pytest.raises(InputError, match="is not UTF-8 text"):
        verify_trail(path)
    path.write_text("not json\n", encoding="utf-8")
    assert verify_trail(path).problem.startswith("line 1 is not valid JSON")
    with pytest.raises(InputError, match="does not exist"):
        verify_trail(tmp_path / "nope.jsonl")
