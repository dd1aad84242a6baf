"""The trail's one writer protocol (auditkit.evidence.ledger) under real concurrency, kills and full disks.

Every process here is real: many writers forked from one warm interpreter (``run_forked``), released at
once, each publishing a small fake run through the real protocol (``publish_fake_run``: no model, so a
process costs milliseconds) and contending for the real lock. Kills use real signals at named steps of
the protocol (``ledger._reached``). Whatever happened, the trail must verify, every published run must
have exactly one line, and a line whose run is not on disk must be explained by design (stopped between
logging and publishing, its files waiting in the staging folder the line names) and then published by
the next writer. tests/test_trail_cli.py runs the same through the real CLI.
"""

from __future__ import annotations

import collections
import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess

import pytest

from auditkit.errors import InputError, RunError
from auditkit.evidence import ledger
from auditkit.evidence.ledger import recover_trail
from auditkit.evidence.signing import TrailKeys
from auditkit.evidence.trail import verify_trail
from reliability_helpers import Job, publish_fake_run, run_forked

TRAIL = "runs/audit-trail.jsonl"
CLOCK = "2030-01-01T00:00:00Z"
STAMP = CLOCK.replace(":", "-")


def _lines(workspace) -> list[dict]:
    return [json.loads(line) for line in (workspace / TRAIL).read_text(encoding="utf-8").splitlines()]


def _run_lines(workspace) -> list[dict]:
    return [line for line in _lines(workspace) if line["entry"]["event"] == "run"]


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _assert_consistent(workspace, *, warnings_ok: bool = False) -> None:
    """The trail verifies; every run folder has exactly one line, and every line's run is on disk."""
    check = verify_trail(workspace / TRAIL)
    assert check.ok, check.problem
    assert warnings_ok or not check.warnings, check.warnings
    named = collections.Counter(os.path.realpath(workspace / "runs" / line["entry"]["record"])
                                for line in _run_lines(workspace))
    folders = [p for p in (workspace / "runs").iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert all(named[os.path.realpath(folder / "record.json")] == 1 for folder in folders), named
    if not warnings_ok:
        assert len(named) == len(folders) and max(named.values(), default=1) == 1


def test_concurrent_writers_one_line_per_published_run_repeated(tmp_path):
    """8 writers with one --out, 8 with one --out and --force, 8 with their own, 8 on the default name in
    the same UTC second: three rounds into one trail, every round released at once."""
    (tmp_path / "runs").mkdir()
    for round_ in range(3):
        jobs = ([Job([TRAIL, f"runs/same-{round_}"], kind="publish") for _ in range(8)]
                + [Job([TRAIL, f"runs/forced-{round_}", "--force"], kind="publish") for _ in range(8)]
                + [Job([TRAIL, f"runs/own-{round_}-{i}"], kind="publish") for i in range(8)]
                + [Job([TRAIL, f"runs/{STAMP}", "--default"], kind="publish") for _ in range(8)])
        results = run_forked(jobs, cwd=tmp_path, clock=CLOCK)
        same, forced, own, default = (results[i:i + 8] for i in range(0, 32, 8))
        assert sorted(r.code for r in same) == [0] + [2] * 7, [r.err for r in same]
        # decided under the lock ("appeared while the run was working"), or, for a writer that started
        # after the winner had logged its run, in its check before the run
        assert all(("appeared while the run was working" in r.err and "nothing was logged" in r.err)
                   or "holds the run recorded on line" in r.err or "is taken by the run logged on line" in r.err
                   for r in same if r.code), [r.err for r in same]
        assert sorted(r.code for r in forced) == [0] + [2] * 7, [r.err for r in forced]
        assert all("holds the run recorded on line" in r.err or "is taken by the run logged on line" in r.err
                   for r in forced if r.code), [r.err for r in forced]
        assert [r.code for r in own] == [0] * 8, [r.err for r in own]
        assert [r.code for r in default] == [0] * 8, [r.err for r in default]
        names = [f"runs/{STAMP}" if k == 0 else f"runs/{STAMP}-{k + 1}" for k in range(8 * round_, 8 * round_ + 8)]
        assert {json.loads(r.out)["out"] for r in default} == set(names)
        assert len(_run_lines(tmp_path)) == 18 * (round_ + 1)
        _assert_consistent(tmp_path)
    assert not [p.name for p in (tmp_path / "runs").iterdir() if p.name.startswith(".")]  # no staging left


# ---------------------------------------------------------------- kills and signals at each step

# step -> (the writer replaces an unlogged folder with --force, what the trail holds once it is killed)
STEPS = {
    "locked": (False, "nothing"),
    "checked": (False, "nothing"),
    "appended": (False, "pending"),
    "moved-aside": (True, "pending"),
    "published": (True, "published"),
    "returned": (False, "published"),
}


def _workspace(base, name: str, *, replace: bool):
    """A trail with one published run, and (``replace``) an unlogged folder at the next writer's --out."""
    workspace = base / name
    (workspace / "runs").mkdir(parents=True)
    publish_fake_run(workspace / TRAIL, workspace / "runs" / "first")
    if replace:
        (workspace / "runs" / "second").mkdir()
        (workspace / "runs" / "second" / "notes.txt").write_text("unlogged\n", encoding="utf-8")
    return workspace


@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
    """Writers of runs/second killed (SIGKILL) or signalled (SIGTERM, SIGINT) at every step, all at once."""
    base = tmp_path_factory.mktemp("ledger-steps")
    cases = [(step, signal.SIGKILL) for step in STEPS] + [(step, signal.SIGTERM) for step in STEPS]
    cases += [("locked", signal.SIGINT), ("torn-append", signal.SIGKILL)]
    jobs, workspaces = [], {}
    for step, signum in cases:
        replace = STEPS.get(step, (False,))[0]
        workspace = _workspace(base, f"{step}-{signum.name}", replace=replace)
        workspaces[step, signum] = workspace
        jobs.append(Job([TRAIL, "runs/second", *(["--force"] if replace else [])], kind="publish",
                        pause=step if step == "torn-append" else f"ledger:{step}", signum=signum,
                        cwd=str(workspace)))
    results = run_forked(jobs, cwd=base)
    return {case: (workspaces[case], result) for case, result in zip(workspaces, results)}


@pytest.mark.parametrize("step", STEPS)
def test_a_kill_at_each_step_leaves_a_trail_that_verifies_and_the_next_writer_completes(stopped, step):
    workspace, result = stopped[step, signal.SIGKILL]
    assert result.code == -signal.SIGKILL, result.err
    replace, state = STEPS[step]
    second = workspace / "runs" / "second"
    check = verify_trail(workspace / TRAIL)
    assert check.ok, check.problem
    lines = _run_lines(workspace)
    if state == "nothing":
        assert len(lines) == 1 and not second.exists() and not check.warnings
    elif state == "pending":  # logged, not yet in place: explained, and its files wait complete
        assert len(lines) == 2 and not (second / "record.json").exists()
        assert check.pending == [3], check.warnings
        assert "was stopped after it was logged and before it was published" in check.warnings[0]
    else:
        assert len(lines) == 2 and _sha(second / "record.json") == lines[1]["entry"]["record_sha256"]

    # The next writer repairs first, under the lock: the stopped run is published, a folder --force
    # moved aside is removed, and it then logs its own run.
    publish_fake_run(workspace / TRAIL, workspace / "runs" / "third")
    _assert_consistent(workspace)
    hidden = [p.name for p in (workspace / "runs").iterdir() if p.name.startswith(".")]
    # A writer killed before logging leaves its staging folder (hidden, *.tmp, safe to delete); one killed
    # after it leaves nothing once the next writer has run: not its staging, not a folder it moved aside.
    assert len(hidden) == (state == "nothing") and all(n.startswith(".second.") and n.endswith(".tmp") for n in hidden)
    if state != "nothing":
        assert not (second / "notes.txt").exists()


@pytest.mark.parametrize("step", [step for step in STEPS if step not in ("locked", "returned")])
def test_sigterm_inside_the_protocol_is_held_until_the_run_is_published(stopped, step):
    workspace, result = stopped[step, signal.SIGTERM]
    assert result.code == 130, result.err
    assert "interrupted; written: ['run runs/second (line 3 of audit trail runs/audit-trail.jsonl)']" in result.err
    _assert_consistent(workspace)
    assert not [p.name for p in (workspace / "runs").iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("case", [("locked", signal.SIGTERM), ("locked", signal.SIGINT), ("returned", signal.SIGTERM)])
def test_a_signal_outside_the_protocol_says_what_was_written(stopped, case):
    workspace, result = stopped[case]
    assert result.code == 130, result.err
    published = case[0] == "returned"
    assert ("written: ['run runs/second" if published else "written: []") in result.err
    assert (workspace / "runs" / "second").exists() == published
    _assert_consistent(workspace)
    assert not [p.name for p in (workspace / "runs").iterdir() if p.name.startswith(".")]


def test_an_append_torn_by_a_kill_is_explained_and_cut_by_the_next_writer(stopped):
    workspace, result = stopped["torn-append", signal.SIGKILL]
    assert result.code == -signal.SIGKILL
    assert not (workspace / TRAIL).read_bytes().endswith(b"\n")
    check = verify_trail(workspace / TRAIL)
    assert check.ok and check.lines == 2, check.problem
    assert "line 3 is incomplete" in check.warnings[0] and "never published" in check.warnings[0]
    assert not (workspace / "runs" / "second").exists()
    notes = recover_trail(workspace / TRAIL, keys=TrailKeys())
    assert notes and notes[0].startswith("removed an incomplete line 3")
    publish_fake_run(workspace / TRAIL, workspace / "runs" / "second")
    _assert_consistent(workspace)


# ---------------------------------------------------------------- full disks, read-only and forbidden places


def _nearly_full_disk(fd: int, data: bytes) -> None:
    os.write(fd, data[:7])  # what a disk with seven bytes left takes, before it refuses the rest
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_under_the_trail_cuts_the_append_back_and_logs_nothing(tmp_path, monkeypatch):
    publish_fake_run(tmp_path / TRAIL, tmp_path / "runs" / "first")
    before = (tmp_path / TRAIL).read_bytes()
    monkeypatch.setattr(ledger, "_write_all", _nearly_full_disk)
    with pytest.raises(RunError) as caught:
        publish_fake_run(tmp_path / TRAIL, tmp_path / "runs" / "second")
    assert caught.value.message == (f"cannot append to audit trail '{tmp_path / TRAIL}'; nothing was logged "
                                    "(No space left on device)")
    assert "free space on the filesystem holding" in caught.value.hint
    assert (tmp_path / TRAIL).read_bytes() == before
    assert not (tmp_path / "runs" / "second").exists()
    assert not [p for p in (tmp_path / "runs").iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("code, hint", [(errno.EACCES, "check the permissions of"),
                                        (errno.EROFS, "is on a read-only filesystem")])
def test_the_trail_refused_at_write_time_is_a_clear_error(tmp_path, monkeypatch, code, hint):
    publish_fake_run(tmp_path / TRAIL, tmp_path / "runs" / "first")
    real_open = os.open

    def refusing(path, flags, *args, **kwargs):
        if str(path).endswith("audit-trail.jsonl") and flags & os.O_APPEND:
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing)
    with pytest.raises(RunError) as caught:
        publish_fake_run(tmp_path / TRAIL, tmp_path / "runs" / "second")
    assert caught.value.message.startswith("cannot open audit trail") and os.strerror(code) in caught.value.message
    assert hint in caught.value.hint
    assert not (tmp_path / "runs" / "second").exists()


def test_an_unreadable_trail_is_an_input_error(tmp_path, monkeypatch):
    publish_fake_run(tmp_path / TRAIL, tmp_path / "runs" / "first")
    real_open = os.open

    def refusing(path, flags, *args, **kwargs):
        if str(path).endswith("audit-trail.jsonl") and not flags & (os.O_WRONLY | os.O_RDWR):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing)
    with pytest.raises(InputError, match=r"cannot read audit trail .* \(Permission denied\)"):
        verify_trail(tmp_path / TRAIL)


def _can_mount() -> bool:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                           capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _can_mount(), reason="needs root and unshare to mount a private tmpfs")
def test_a_real_full_and_read_only_tmpfs(tmp_path):
    """In a private mount namespace: a 256 KiB tmpfs, filled up, under the trail of one writer and the
    --out of another; then remounted read-only under a third. Each fails with one error and a hint,
    and the trail on the full disk still verifies."""
    disk = tmp_path / "disk"
    disk.mkdir()
    (tmp_path / "runs").mkdir()
    setup = (f'mount -t tmpfs -o size=256k tmpfs {disk} && mkdir {disk}/ro {disk}/runs && '
             f'mount -t tmpfs -o size=64k tmpfs {disk}/ro && '
             f'(dd if=/dev/zero of={disk}/fill bs=4k 2>/dev/null || true) && '
             f'mount -o remount,ro {disk}/ro && exec "$@"')
    jobs = [Job([f"{disk}/trail.jsonl", "runs/a"], kind="publish"),
            Job([TRAIL, f"{disk}/runs/b"], kind="publish"),
            Job([f"{disk}/ro/trail.jsonl", "runs/c"], kind="publish")]
    then = [Job([TRAIL, "runs/after"], kind="publish")]
    trail_full, out_full, read_only, after = run_forked(jobs, cwd=tmp_path, then=then,
                                                        wrap=["unshare", "-m", "sh", "-c", setup, "sh"])
    assert trail_full.code == 3 and "No space left on device" in trail_full.err, trail_full.err
    assert "free space on the filesystem holding" in trail_full.err
    assert out_full.code == 3 and "No space left on device" in out_full.err, out_full.err
    assert read_only.code == 2 and "Read-only file system" in read_only.err, read_only.err
    assert "Traceback" not in trail_full.err + out_full.err + read_only.err
    assert after.code == 0, after.err
    assert not (tmp_path / "runs" / "a").exists()
    _assert_consistent(tmp_path)  # runs/after only: the writer that failed on the full disk logged nothing
