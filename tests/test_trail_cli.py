"""Issue 11's table, row by row, through the real CLI: concurrent runs, a symlinked trail, two trails in
one folder, --force through a symlinked --out, keys (HMAC and Ed25519), a dangling --out, full disks,
hostile trail lines and files; plus anchoring and trails written before the format changed.

Runs are in-process (``run_cli_here``) unless the row is about processes: the concurrent runs are real
processes forked from one warm interpreter (``run_forked``); SIGTERM inside the publish protocol is in
tests/test_interrupt.py, kills at every step in tests/test_ledger.py.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import stat

import pytest

from auditkit.evidence import ledger
from reliability_helpers import (
    FORGET,
    TESTS,
    Job,
    assert_clean_failure,
    fresh_workspace,
    publish_fake_run,
    run_cli_here,
    run_forked,
    shared_run,
    snapshot,
)

F = [*FORGET, "--no-audit"]
TRAIL = "runs/audit-trail.jsonl"
CLOCK = "2030-01-01T00:00:00Z"
STAMP = CLOCK.replace(":", "-")
KEY_ENV, SIGNING_ENV = "AUDITKIT_TRAIL_KEY", "AUDITKIT_TRAIL_SIGNING_KEY"


@pytest.fixture
def ws(tmp_path_factory, tmp_path):
    """A private copy of the session's finished run: runs/first and its trail (genesis + one run)."""
    shutil.copytree(shared_run(tmp_path_factory), tmp_path / "ws")
    return tmp_path / "ws"


def _run_lines(workspace, trail: str = TRAIL) -> list[dict]:
    lines = [json.loads(text) for text in (workspace / trail).read_text(encoding="utf-8").splitlines()]
    return [line for line in lines if line["entry"]["event"] == "run"]


def _verify(workspace, *args):
    return run_cli_here(["verify", *args], cwd=workspace)


def _intact(workspace, *args) -> str:
    result = _verify(workspace, *args)
    assert result.code == 0 and "warning" not in result.err, result.err
    return " ".join(result.err.split())


# ---------------------------------------------------------------- severe: concurrent runs


@pytest.fixture(scope="module")
def concurrent(tmp_path_factory):
    """8 real `forget` processes at once: 3 with one --out, 3 with their own, 2 without --out in one second."""
    base = tmp_path_factory.mktemp("concurrent")
    workspace = fresh_workspace(tmp_path_factory, base / "ws")
    fresh_workspace(tmp_path_factory, base / "warm")
    jobs = ([Job([*F, "-q", "--out", "runs/same"]) for _ in range(3)]
            + [Job([*F, "-q", "--out", f"runs/own-{i}"]) for i in range(3)] + [Job([*F, "-q"]) for _ in range(2)])
    return workspace, run_forked(jobs, cwd=workspace, warm=base / "warm", clock=CLOCK)


def test_concurrent_runs_with_one_out_log_only_the_winner(concurrent):
    # The loser used to exit 2 after its line was appended: the trail said TAMPERED, and every later
    # forget refused with exit 3.
    workspace, results = concurrent
    same = results[:3]
    assert sorted(r.code for r in same) == [0, 2, 2], [r.err for r in same]
    for loser in (r for r in same if r.code):
        assert_clean_failure(loser, code=2, problem=r"appeared while the run was working|already exists|"
                                                    r"holds the run recorded on line|is taken by the run logged on line",
                             hint="choose another --out")
    assert [r.code for r in results[3:]] == [0] * 5, [r.err for r in results[3:]]
    named = [line["entry"]["record"] for line in _run_lines(workspace)]
    assert sorted(named) == sorted(["same/record.json", *(f"own-{i}/record.json" for i in range(3)),
                                    f"{STAMP}/record.json", f"{STAMP}-2/record.json"])
    _intact(workspace, TRAIL)
    later = run_cli_here([*F, "-q", "--out", "runs/later"], cwd=workspace)
    assert later.code == 0, later.err
    _intact(workspace, TRAIL)


def test_runs_started_in_the_same_second_without_out_each_get_a_folder(concurrent):
    # Two of four such runs used to exit 2, yet all four were logged, three naming one folder.
    workspace, results = concurrent
    for name in (STAMP, f"{STAMP}-2"):
        assert (workspace / "runs" / name / "record.json").is_file()
    assert not [p.name for p in (workspace / "runs").iterdir() if p.name.startswith(".")]


# ---------------------------------------------------------------- links and several trails


def test_a_symlinked_trail_is_written_through_its_link_never_replaced(ws):
    (ws / "secure").mkdir()
    link = ws / "runs" / "linked.jsonl"
    link.symlink_to("../secure/trail.jsonl")
    before = snapshot(ws)
    dangling = run_cli_here([*F, "--out", "runs/x", "--trail", "runs/linked.jsonl"], cwd=ws)
    assert_clean_failure(dangling, code=2, problem=r"is a symbolic link to '\.\./secure/trail\.jsonl', which does "
                                                   "not exist", hint=r"auditkit trail init")
    assert snapshot(ws) == before
    assert run_cli_here(["trail", "init", "secure/trail.jsonl"], cwd=ws).code == 0
    result = run_cli_here([*F, "--out", "runs/x", "--trail", "runs/linked.jsonl"], cwd=ws)
    assert result.code == 0, result.err
    assert link.is_symlink() and [line["entry"]["record"] for line in _run_lines(ws, "secure/trail.jsonl")] == \
        ["../runs/x/record.json"]
    _intact(ws, "runs/linked.jsonl")
    _intact(ws, "secure/trail.jsonl")
    _intact(ws, TRAIL)  # runs/x claims the other trail: not a line removed from this one


def test_two_trails_in_one_folder_no_longer_accuse_each_other(ws):
    result = run_cli_here([*F, "-q", "--trail", "runs/other.jsonl", "--out", "runs/third"], cwd=ws)
    assert result.code == 0, result.err
    _intact(ws, TRAIL)  # used to be TAMPERED: "lines were removed from its end"
    _intact(ws, "runs/other.jsonl")
    again = run_cli_here([*F, "-q", "--out", "runs/fourth"], cwd=ws)  # used to be blocked with exit 3
    assert again.code == 0, again.err
    _intact(ws, TRAIL)


def test_force_over_a_symlinked_out_records_the_asked_path_and_verifies(ws):
    (ws / "elsewhere").mkdir()
    (ws / "runs" / "link").symlink_to("../elsewhere")
    result = run_cli_here([*F, "-q", "--out", "runs/link", "--force"], cwd=ws)
    assert result.code == 0, result.err
    assert (ws / "runs" / "link").is_symlink() and (ws / "elsewhere" / "record.json").is_file()
    assert _run_lines(ws)[-1]["entry"]["record"] == "link/record.json"
    _intact(ws, TRAIL)  # used to be TAMPERED: the line named the target, the run sat at the link
    again = run_cli_here([*F, "--out", "runs/link", "--force"], cwd=ws)
    assert_clean_failure(again, code=2, problem=r"holds the run recorded on line 3 of the audit trail",
                         hint="choose another --out")


def test_a_dangling_symlink_as_out_is_refused_before_any_work(ws):
    (ws / "runs" / "dang").symlink_to("/nonexistent")
    before = snapshot(ws)
    result = run_cli_here([*F, "--out", "runs/dang"], cwd=ws)  # used to be a NotADirectoryError traceback
    assert_clean_failure(result, code=2, problem=r"--out 'runs/dang' is a symbolic link to '/nonexistent', which "
                                                 "does not exist", hint="remove the link")
    assert snapshot(ws) == before


# ---------------------------------------------------------------- keys


def test_keys_on_an_existing_trail_are_a_recorded_event_and_a_keyed_trail_refuses_unkeyed_runs(ws, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "s3cret")
    refused = run_cli_here([*F, "--out", "runs/second"], cwd=ws)
    assert_clean_failure(refused, code=2, problem=r"is not keyed, but AUDITKIT_TRAIL_KEY is set",
                         hint=r"auditkit trail keys runs/audit-trail\.jsonl --hmac")
    event = run_cli_here(["trail", "keys", TRAIL, "--hmac"], cwd=ws)
    assert event.code == 0 and "from line 4 on it demands HMAC" in " ".join(event.err.split()), event.err
    assert "HMAC checked" in _intact(ws, TRAIL)  # used to be reported as broken
    assert run_cli_here([*F, "-q", "--out", "runs/second"], cwd=ws).code == 0

    monkeypatch.delenv(KEY_ENV)
    before = snapshot(ws)
    unkeyed = run_cli_here([*F, "--out", "runs/third"], cwd=ws)  # used to exit 0 and break the trail for good
    assert_clean_failure(unkeyed, code=2, problem=r"is keyed \(HMAC since line 3\), but AUDITKIT_TRAIL_KEY is not set",
                         hint="set AUDITKIT_TRAIL_KEY")
    assert snapshot(ws) == before
    monkeypatch.setenv(KEY_ENV, "s3cret")
    _intact(ws, TRAIL)


def test_an_auditor_verifies_a_signed_trail_with_the_public_key_alone(ws, monkeypatch):
    made = run_cli_here(["trail", "keygen", "operator.pem"], cwd=ws)
    assert made.code == 0 and len(made.out.strip()) == 64, made.err
    assert stat.S_IMODE((ws / "operator.pem").stat().st_mode) == 0o600
    assert run_cli_here(["trail", "keys", TRAIL, "--sign", "operator.pem"], cwd=ws).code == 0
    unsigned = run_cli_here([*F, "--out", "runs/second"], cwd=ws)
    assert_clean_failure(unsigned, code=2, problem="but AUDITKIT_TRAIL_SIGNING_KEY is not set",
                         hint="set AUDITKIT_TRAIL_SIGNING_KEY")
    monkeypatch.setenv(SIGNING_ENV, "operator.pem")
    assert run_cli_here([*F, "-q", "--out", "runs/second"], cwd=ws).code == 0
    monkeypatch.delenv(SIGNING_ENV)
    (ws / "operator.pem").unlink()  # the auditor has only the public key
    assert "(checked against --public-key)" in _intact(ws, TRAIL, "--public-key", "operator.pub.pem")
    head = _verify(ws, TRAIL, "--head", "--public-key", "operator.pub.pem")
    fields = dict(line.split(" ", 1) for line in head.out.splitlines())
    assert set(fields) == {"head_sha256", "line", "trail_id", "signature", "public_key"} and fields["line"] == "4"
    assert fields["public_key"] == made.out.strip()

    assert run_cli_here(["trail", "keygen", "other.pem"], cwd=ws).code == 0
    other = _verify(ws, "--json", TRAIL, "--public-key", "other.pub.pem")
    assert other.code == 1 and "TAMPERED: the trail is not signed with Ed25519 key" in other.err
    assert json.loads(other.out)["ok"] is False


# ---------------------------------------------------------------- full disks


def test_a_full_disk_under_out_is_one_error_and_leaves_nothing(ws, monkeypatch):
    before = snapshot(ws)
    real_fsync = os.fsync

    def full(fd: int) -> None:
        if "/.second." in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full)
    result = run_cli_here([*F, "--out", "runs/second"], cwd=ws)  # used to be an [Errno 28] traceback
    assert_clean_failure(result, code=3, problem=r"cannot write the run into '.*/runs/\.second\.\w+\.tmp'; nothing "
                                                 r"was published \(No space left on device\)",
                         hint=r"free space on the filesystem holding '.*/runs'")
    assert snapshot(ws) == before


def test_a_full_disk_under_the_trail_is_one_error_and_logs_nothing(ws, monkeypatch):
    before = snapshot(ws)

    def nearly_full(fd: int, data: bytes) -> None:
        os.write(fd, data[:10])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ledger, "_write_all", nearly_full)
    result = run_cli_here([*F, "--out", "runs/second"], cwd=ws)
    assert_clean_failure(result, code=3, problem=r"cannot append to audit trail 'runs/audit-trail\.jsonl'; nothing "
                                                 r"was logged \(No space left on device\)",
                         hint="free space on the filesystem holding")
    assert snapshot(ws) == before  # the partial write was cut back; the staged run was removed


# ---------------------------------------------------------------- hostile lines and files


def _nan_in_last_line(text: str) -> str:
    lines = text.splitlines()
    lines[-1] = re.sub(r'"passed":(true|false|null)', '"passed":NaN', lines[-1])  # a valid line but for the NaN
    return "".join(f"{line}\n" for line in lines)


@pytest.mark.parametrize("hostile, problem", [
    (_nan_in_last_line, "line 2 holds NaN, which strict JSON does not allow"),
    (lambda text: text + "[" * 200_000 + "]" * 200_000 + "\n", "line 3 is nested too deeply to be a trail line"),
])
def test_a_hostile_line_is_named_by_verify_and_refused_by_forget(ws, hostile, problem):
    trail = ws / TRAIL
    trail.write_text(hostile(trail.read_text(encoding="utf-8")), encoding="utf-8")
    verified = _verify(ws, TRAIL)  # both used to crash verify and forget with a traceback
    assert verified.code == 1 and f"TAMPERED: {problem}" in " ".join(verified.err.split()), verified.err
    assert "Traceback" not in verified.err
    refused = run_cli_here([*F, "--out", "runs/second"], cwd=ws)
    assert_clean_failure(refused, code=3, problem=rf"audit trail 'runs/audit-trail\.jsonl' is broken: {problem}",
                         hint="auditkit verify")


def test_a_crlf_trail_is_called_what_it_is(ws):
    trail = ws / TRAIL
    trail.write_bytes(trail.read_bytes().replace(b"\n", b"\r\n"))
    result = _verify(ws, TRAIL)  # used to be "edited by hand"
    assert result.code == 0 and "CRLF line endings" in " ".join(result.err.split()), result.err


@pytest.mark.parametrize("make, kind", [
    (lambda p: p.symlink_to("/dev/null"), r"\(a link to '/dev/null'\) is a character device"),
    (os.mkfifo, r"is a named pipe \(FIFO\)"),
])
def test_a_trail_that_is_dev_null_or_a_fifo_is_named(ws, make, kind):
    make(ws / "runs" / "special.jsonl")
    before = snapshot(ws)
    result = _verify(ws, "runs/special.jsonl")  # /dev/null used to "not exist"; a FIFO would block
    assert_clean_failure(result, code=2, problem=rf"audit trail 'runs/special\.jsonl' {kind}, not a file",
                         hint="point --trail at an audit-trail.jsonl")
    refused = run_cli_here([*F, "--out", "runs/second", "--trail", "runs/special.jsonl"], cwd=ws)
    assert_clean_failure(refused, code=2, problem=kind, hint="point --trail at")
    assert snapshot(ws) == before


# ---------------------------------------------------------------- anchoring and old trails


def test_a_published_head_proves_the_trail_only_grew(ws):
    head = dict(line.split(" ", 1) for line in _verify(ws, TRAIL, "--head").out.splitlines())["head_sha256"]
    publish_fake_run(ws / TRAIL, ws / "runs" / "later")
    assert "the trail only grew since (1 line(s) added)" in _intact(ws, TRAIL, "--expect-head", head)
    missing = _verify(ws, TRAIL, "--expect-head", "ab" * 32)
    assert missing.code == 1 and "does not contain the head" in missing.err
    assert_clean_failure(_verify(ws, TRAIL, "--expect-head", "cafe"), code=2, problem="is not a SHA-256",
                         hint="auditkit verify TRAIL --head")


def test_a_trail_written_before_the_format_change_verifies_and_continues(tmp_path_factory, tmp_path, monkeypatch):
    v1 = TESTS / "data" / "trail-v1"
    assert "6 line(s), 6 run(s)" in _intact(tmp_path, str(v1 / "runs" / "audit-trail.jsonl"))
    monkeypatch.setenv(KEY_ENV, "v1-fixture-key")
    assert "HMAC checked" in _intact(tmp_path, str(v1 / "keyed" / "audit-trail.jsonl"))
    monkeypatch.delenv(KEY_ENV)
    workspace = fresh_workspace(tmp_path_factory, tmp_path / "ws")
    shutil.copytree(v1 / "runs", workspace / "runs")
    result = run_cli_here([*F, "-q", "--out", "runs/new"], cwd=workspace)
    assert result.code == 0, result.err
    assert "8 line(s), 7 run(s), trail ID" in _intact(workspace, TRAIL)
