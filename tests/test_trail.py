"""The hash-chained audit trail: every single-line edit, deletion, insertion and reorder is named."""

from __future__ import annotations

import json

import pytest

from auditkit.errors import InputError
from auditkit.evidence.trail import GENESIS_SHA256, append_to_trail, canonical_json, verify_trail
from auditkit.fsutil import sha256_bytes, sha256_file

N_LINES = 5


def _write_run(folder, index: int) -> dict:
    """A run folder with a minimal record, and the trail entry that points at it."""
    run = folder / f"run-{index}"
    run.mkdir()
    summary = {"kind": "forget", "passed": index % 2 == 0, "request_sha256": f"{index:064x}"}
    (run / "record.json").write_text(json.dumps({"summary": summary}), encoding="utf-8")
    return {**summary, "record": f"run-{index}/record.json", "record_sha256": sha256_file(run / "record.json")}


@pytest.fixture
def trail(tmp_path):
    path = tmp_path / "audit-trail.jsonl"
    for i in range(N_LINES):
        append_to_trail(path, _write_run(tmp_path, i))
    return path


def _lines(path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def _save(path, lines: list[str]) -> None:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def test_appended_trail_verifies_and_chains(trail):
    check = verify_trail(trail)
    assert check.ok and check.lines == N_LINES and not check.warnings
    lines = _lines(trail)
    assert json.loads(lines[0])["prev_sha256"] == GENESIS_SHA256
    for before, after in zip(lines, lines[1:]):
        assert json.loads(after)["prev_sha256"] == sha256_bytes(before.encode())
    assert check.head_sha256 == sha256_bytes(lines[-1].encode())
    assert not list(trail.parent.glob(".audit-trail.jsonl.*.tmp"))  # no temp file left behind


def _edit(lines, k):
    obj = json.loads(lines[k])
    obj["entry"]["passed"] = not obj["entry"]["passed"]  # the edit a forger wants, kept canonical
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
@pytest.mark.parametrize("k", range(N_LINES))
def test_every_single_line_tampering_names_its_line(trail, tamper, k):
    lines = _lines(trail)
    moved = tamper(lines, k)
    _save(trail, lines)
    check = verify_trail(trail)
    expected = (moved if moved is not None else k) + 1
    assert not check.ok
    assert check.bad_line == expected, check.problem
    assert check.problem.startswith(f"line {expected}")


def test_removing_the_last_line_is_caught_through_its_run_folder(trail):
    _save(trail, _lines(trail)[:-1])
    check = verify_trail(trail)
    assert check.bad_line == N_LINES and "run-4/record.json is not in the trail" in check.problem


def test_a_changed_record_is_named_by_its_line(trail):
    record = trail.parent / "run-2" / "record.json"
    record.write_text(record.read_text(encoding="utf-8").replace("true", "false"), encoding="utf-8")
    check = verify_trail(trail)
    assert check.bad_line == 3 and "no longer matches" in check.problem


def test_without_records_the_chain_alone_still_catches_middle_edits(trail):
    for run in trail.parent.glob("run-*"):
        (run / "record.json").unlink()
    lines = _lines(trail)
    _edit(lines, 1)
    _save(trail, lines)
    check = verify_trail(trail)
    assert check.bad_line == 2
    assert any("not on disk" in w for w in check.warnings)


def test_hmac_chain_catches_a_rewritten_last_line_and_a_wrong_key(tmp_path):
    path = tmp_path / "audit-trail.jsonl"
    for i in range(3):
        append_to_trail(path, {"n": i}, key=b"secret")
    assert verify_trail(path, key=b"secret").ok
    unkeyed = verify_trail(path)
    assert unkeyed.ok and unkeyed.keyed and "AUDITKIT_TRAIL_KEY" in unkeyed.warnings[0]
    assert verify_trail(path, key=b"other").bad_line == 1

    lines = _lines(path)
    obj = json.loads(lines[-1])
    obj["entry"]["n"] = 99
    lines[-1] = canonical_json(obj)  # a forger without the key can keep the chain but not the HMAC
    _save(path, lines)
    assert verify_trail(path).ok  # the limitation the key exists for
    check = verify_trail(path, key=b"secret")
    assert check.bad_line == 3 and "wrong HMAC" in check.problem


@pytest.mark.parametrize("content, problem", [
    ("not json\n", "line 1 is not valid JSON"),
    ('{"index": 0}\n', "line 1 does not have the fields"),
    ("\n", "line 1 is not valid JSON"),
])
def test_garbage_lines_are_named(tmp_path, content, problem):
    path = tmp_path / "audit-trail.jsonl"
    path.write_text(content, encoding="utf-8")
    assert verify_trail(path).problem.startswith(problem)


def test_missing_and_binary_trails_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        verify_trail(tmp_path / "nope.jsonl")
    path = tmp_path / "bin.jsonl"
    path.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(InputError, match="not UTF-8"):
        verify_trail(path)
