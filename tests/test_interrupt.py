"""Interruption and divergence: Ctrl-C during unlearning, SIGKILL during training, unlearning, the audit
and the writes, SIGTERM inside and after the trail's publish protocol, and a run whose loss turns NaN.

Each scenario runs the real CLI in its own process that pauses at a named point (see
``reliability_helpers._install_pause``) and is then sent a real signal by this process, so the point of
the interruption is known instead of depending on timing. All processes run at once, forked from one
warm interpreter (``run_forked``) to keep the module short. Each starts from a workspace holding a
finished run (``runs/first``) and its audit trail, and writes a second run into ``runs/second`` (or
re-trains ``model.pt`` with ``--force``).

The write-phase points are the first file staged (``model.pt``), the moment everything is staged and
record.json written under the trail's lock (``ledger:checked``), the gap between the trail line and the
rename of the run folder (``ledger:appended``; SIGTERM there, with ``--force`` over an unlogged folder,
at ``ledger:moved-aside``), and after publishing (``ledger:returned``). Every step of the protocol is
killed in tests/test_ledger.py, where a process costs milliseconds.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import signal

import pytest

from reliability_helpers import (
    FORGET,
    Job,
    assert_clean_failure,
    fresh_workspace,
    run_cli_here,
    run_forked,
    shared_run,
    snapshot,
)

# Another seed: the replacement differs from model.pt, so a completed rename would show in its hash.
TRAIN = ["train", "--epochs", "20", "--seed", "7", "--out", "model.pt", "--force"]
FORGET_SECOND = [*FORGET, "--out", "runs/second"]
WRITE = [*FORGET_SECOND, "--no-audit"]  # the write-phase kills need no battery before them

SCENARIOS = {
    "sigint-unlearning": (FORGET_SECOND, "unlearn", signal.SIGINT),
    "kill-training": (TRAIN, "train", signal.SIGKILL),
    "kill-writing-checkpoint": (TRAIN, "fsync:model.pt", signal.SIGKILL),
    "kill-unlearning": (FORGET_SECOND, "unlearn", signal.SIGKILL),
    "kill-audit": (FORGET_SECOND, "audit", signal.SIGKILL),
    "kill-writing-model": (WRITE, "fsync:model.pt", signal.SIGKILL),
    "kill-before-logging": (WRITE, "ledger:checked", signal.SIGKILL),
    "kill-before-publish": (WRITE, "ledger:appended", signal.SIGKILL),
    # runs/second already holds an unlogged folder (see interrupted()), which --force replaces
    "sigterm-while-replacing": ([*WRITE, "--force"], "ledger:moved-aside", signal.SIGTERM),
    "sigterm-after-publish": (WRITE, "ledger:returned", signal.SIGTERM),
}
KILLED = [name for name, (_, _, signum) in SCENARIOS.items() if signum == signal.SIGKILL]
PUBLISHED = ["sigterm-while-replacing", "sigterm-after-publish"]
OUTPUT_NAMES = {"model.pt", "record.json", "report.html", "audit-trail.jsonl"}
TRAIL = "runs/audit-trail.jsonl"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """name → (workspace, snapshot before, exit code, stdout, stderr), all scenarios run concurrently."""
    source = shared_run(tmp_path_factory)
    base = tmp_path_factory.mktemp("interrupt")
    jobs, workspaces = [], {}
    for name, (args, stage, signum) in SCENARIOS.items():
        workspace = base / name
        shutil.copytree(source, workspace)
        if name == "sigterm-while-replacing":
            (workspace / "runs" / "second").mkdir()
            (workspace / "runs" / "second" / "notes.txt").write_text("an unlogged folder\n", encoding="utf-8")
        workspaces[name] = (workspace, snapshot(workspace))
        jobs.append(Job(args, pause=stage, signum=signum, cwd=str(workspace)))
    shutil.copytree(source, base / "warm")
    results = run_forked(jobs, cwd=base, warm=base / "warm")
    return {name: (*workspaces[name], result.code, result.out, result.err) for name, result in zip(SCENARIOS, results)}


def _trail_lines(workspace) -> list[str]:
    return (workspace / TRAIL).read_text(encoding="utf-8").splitlines()


def test_sigint_during_unlearning_exits_130_and_writes_nothing(interrupted):
    workspace, before, code, out, err = interrupted["sigint-unlearning"]
    assert code == 130, err
    assert err.strip().splitlines()[-1] == "error: interrupted; nothing was written"
    assert "Traceback" not in err and out == ""
    assert snapshot(workspace) == before  # not even a temporary file or a lock is left


@pytest.mark.parametrize("name", KILLED)
def test_sigkill_leaves_the_inputs_intact_and_no_visible_partial_output(interrupted, name):
    workspace, before, code, _, err = interrupted[name]
    assert code == -signal.SIGKILL, err
    after = snapshot(workspace)
    changed = {path for path in before if after.get(path) != before[path]}
    if name == "kill-before-publish":
        assert changed == {TRAIL}  # the line goes in before the run folder appears (see the next test)
    else:
        assert not changed, changed  # the original checkpoint, the request, the first run and the trail
    assert not (workspace / "runs" / "second").exists()
    for path in set(after) - set(before):
        parts = path.split("/")
        hidden = [part for part in parts if part.startswith(".") and part.endswith(".tmp")]
        # Temporary files and staging folders are hidden and named *.tmp, so nobody takes them for
        # output; the trail's lock file is empty and holds nothing.
        assert hidden or (path == f"{TRAIL}.lock" and after[path] == EMPTY_SHA256), path
        assert hidden or parts[-1] not in OUTPUT_NAMES, path


def test_a_kill_before_publishing_leaves_a_logged_run_that_verify_explains_and_recover_publishes(interrupted):
    workspace = interrupted["kill-before-publish"][0]
    lines = _trail_lines(workspace)
    assert len(lines) == 3 and all(json.loads(line)["index"] == i for i, line in enumerate(lines))
    entry = json.loads(lines[2])["entry"]
    assert entry["record"] == "second/record.json" and not (workspace / "runs" / "second").exists()
    result = run_cli_here(["verify", TRAIL], cwd=workspace)
    message = " ".join(result.err.split())
    assert result.code == 0 and "line 3: its run (second/record.json) was stopped after it was logged" in message
    assert f"wait in {entry['staging']}" in message

    recovered = run_cli_here(["trail", "recover", TRAIL], cwd=workspace)
    assert recovered.code == 0 and "published the run logged on line 3" in " ".join(recovered.err.split())
    assert hashlib.sha256((workspace / "runs" / "second" / "record.json").read_bytes()).hexdigest() == \
        entry["record_sha256"]
    after = run_cli_here(["verify", TRAIL], cwd=workspace)
    assert after.code == 0 and "warning" not in after.err, after.err
    assert not list((workspace / "runs").glob(".second.*"))  # the staging folder became runs/second


@pytest.mark.parametrize("name", PUBLISHED)
def test_sigterm_inside_or_after_publishing_names_the_published_run(interrupted, name):
    # SIGTERM is held while the protocol runs (it used to exit 130 "nothing was written" between the trail
    # line and the rename, and leave a --force'd folder in a hidden .second.*.old): the run completes.
    workspace, _, code, out, err = interrupted[name]
    assert code == 130 and out == "", err
    assert err.strip().splitlines()[-2:] == [
        f"error: interrupted after writing run runs/second (line 3 of audit trail {TRAIL})",
        "hint: what is named above is complete; nothing else was written"], err
    assert "Traceback" not in err
    entry = json.loads(_trail_lines(workspace)[2])["entry"]
    second = workspace / "runs" / "second"
    assert hashlib.sha256((second / "record.json").read_bytes()).hexdigest() == entry["record_sha256"]
    assert not (second / "notes.txt").exists()  # the unlogged folder --force replaced
    assert not [p.name for p in (workspace / "runs").iterdir() if p.name.startswith(".")]
    result = run_cli_here(["verify", TRAIL], cwd=workspace)
    assert result.code == 0 and "warning" not in result.err, result.err


@pytest.mark.parametrize("name", KILLED)
def test_the_trail_still_verifies_after_a_kill(interrupted, name):
    # A killed run leaves a hidden staging folder holding a record no trail line names; that must not
    # read as lines removed from the trail, or every later `forget` would refuse to append.
    workspace = interrupted[name][0]
    result = run_cli_here(["verify", TRAIL], cwd=workspace)
    assert result.code == 0, result.err


def test_a_run_after_a_kill_succeeds_and_chains_on(interrupted):
    workspace = interrupted["kill-before-logging"][0]
    result = run_cli_here(["-q", *FORGET, "--out", "runs/second", "--no-audit"], cwd=workspace)
    assert result.code == 0, result.err
    assert len(_trail_lines(workspace)) == 3 and (workspace / "runs" / "second" / "record.json").is_file()
    assert run_cli_here(["verify", TRAIL], cwd=workspace).code == 0


@pytest.mark.parametrize("options", [
    # fast.toml: one step per epoch (as for any request smaller than a batch), so only the epoch-end
    # evaluation can see the NaN
    pytest.param(["--option", "lr=1e30"], id="one-step-per-epoch"),
    pytest.param(["--option", "lr=1e30", "--option", "epochs=auto", "--option", "min_retain_batches=128"],
                 id="default-schedule"),
])
def test_divergence_stops_with_a_clear_error_and_writes_nothing(tmp_path_factory, tmp_path, options, recwarn):
    workspace = fresh_workspace(tmp_path_factory, tmp_path / "ws")
    before = snapshot(workspace)
    result = run_cli_here([*FORGET_SECOND, *options], cwd=workspace)
    # A Python warning would reach the user's terminal too, above the error: NaN must pass quietly.
    assert not [str(w.message) for w in recwarn], [f"{w.filename}:{w.lineno}: {w.message}" for w in recwarn]
    assert_clean_failure(result, code=3, problem=r"became nan in forget epoch 1; no weights were returned",
                         hint=r"lower the learning rate \(lr=1e\+30\)")
    assert snapshot(workspace) == before
