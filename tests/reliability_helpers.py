"""Shared by the reliability tests: a small trained workspace, the CLI in-process and as a child process
that pauses at a named stage (so a test can signal it at a known point), snapshots, and the checks
every expected failure must pass.

The shared workspace and the one completed run are built once per pytest session (cached under the
session's base temp folder), because training and a full `forget` cost seconds each on 2 cores.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent



def fast_config(*, seed: int, attacks: list[str] | None) -> str:
    """The cheapest auditkit.toml that still runs every stage: a short ∇τ run on the reference backend and
    a small retain sample; ``attacks=None`` keeps the default battery."""
    battery = "" if attacks is None else f"attacks = {json.dumps(attacks)}\n"  # a JSON string list is TOML too
    return f"""\
seed = {seed}
backend = "reference"
{battery}
[method]
name = "nabla-tau"
options = {{ epochs = 2, min_retain_batches = 4 }}

[policy]
retain_sample_size = 100
exposure_attack = "loss"
"""


#: One attack only: the reliability tests check the plumbing, not the battery.
FAST_CONFIG = fast_config(seed=3, attacks=["loss"])
REQUEST_SIZE = 20
TRAIN_EPOCHS = "20"


@dataclass
class Result:
    """What one CLI invocation produced."""

    code: int
    out: str
    err: str

    def lines(self, prefix: str) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith(prefix)]


@contextlib.contextmanager
def chdir(path: Path):
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def run_cli_here(args: list[str], *, cwd: Path) -> Result:
    """Run the real CLI in-process (``run_cli``: the console script's own exit-code mapping) in ``cwd``."""
    from auditkit.cli import cli
    from auditkit.cli.app import run_cli

    out, err = io.StringIO(), io.StringIO()
    with chdir(cwd), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run_cli(cli, [str(a) for a in args])
    return Result(code, out.getvalue(), err.getvalue())


def snapshot(folder: Path) -> dict[str, str]:
    """Every entry under ``folder`` (hidden ones too): files by SHA-256, folders, links and pipes by kind
    (a named pipe is never opened: that would wait for a writer)."""
    from auditkit.fsutil import sha256_file

    entries: dict[str, str] = {}
    for path in sorted(folder.rglob("*")):
        name = str(path.relative_to(folder))
        entries[name] = ("link" if path.is_symlink() else "dir" if path.is_dir() else "fifo" if path.is_fifo()
                         else sha256_file(path))
    return entries


def assert_clean_failure(result: Result, *, code: int, problem: str, hint: str) -> None:
    """The documented exit code, one ``error:`` line matching ``problem``, one ``hint:`` line matching
    ``hint`` (regular expressions), each at most 300 characters, no traceback and nothing on stdout."""
    assert result.code == code, result.err
    errors, hints = result.lines("error: "), result.lines("hint: ")
    assert len(errors) == 1 and len(hints) == 1, result.err
    assert len(errors[0]) <= 300 and len(hints[0]) <= 300, (len(errors[0]), len(hints[0]))
    assert re.search(problem, errors[0]), errors[0]
    assert re.search(hint, hints[0]), hints[0]
    assert "Traceback" not in result.err and "╭" not in result.err, result.err
    assert result.out == ""


def digits_ids(split: str) -> np.ndarray:
    """IDs of one split of the default digits dataset (what the shared checkpoint was trained on)."""
    from auditkit_plugins.datasets.sklearn_data import DigitsDataset

    data = DigitsDataset().load()
    return data.ids[data.indices(split)]


def shared_workspace(tmp_path_factory) -> Path:
    """``model.pt`` (digits MLP, short recipe), ``request.csv`` (20 training IDs) and ``fast.toml``.

    Built once per session; tests copy it with :func:`fresh_workspace` before changing anything.
    """
    root = tmp_path_factory.getbasetemp() / "reliability-workspace"
    if (root / "model.pt").is_file():
        return root
    building = tmp_path_factory.mktemp("reliability-building")
    result = run_cli_here(["-q", "train", "--epochs", TRAIN_EPOCHS, "--out", "model.pt"], cwd=building)
    assert result.code == 0, result.err
    ids = np.random.default_rng(0).choice(digits_ids("train"), size=REQUEST_SIZE, replace=False)
    (building / "request.csv").write_text("id\n" + "\n".join(sorted(ids)) + "\n", encoding="utf-8")
    (building / "fast.toml").write_text(FAST_CONFIG, encoding="utf-8")
    building.rename(root)
    return root


def fresh_workspace(tmp_path_factory, target: Path) -> Path:
    """A private copy of the shared workspace at ``target``."""
    shutil.copytree(shared_workspace(tmp_path_factory), target)
    return target


FORGET = ["forget", "--ids", "request.csv", "--checkpoint", "model.pt", "--config", "fast.toml"]
"""The `forget` command every run here uses (add ``--out``); relative to the workspace."""


def shared_run(tmp_path_factory) -> Path:
    """A workspace holding one completed, audited `forget` run in ``runs/first`` and its trail."""
    root = tmp_path_factory.getbasetemp() / "reliability-run"
    if (root / "runs" / "first" / "record.json").is_file():
        return root
    building = fresh_workspace(tmp_path_factory, tmp_path_factory.getbasetemp() / "reliability-run-building")
    result = run_cli_here(["-q", *FORGET, "--out", "runs/first"], cwd=building)
    assert result.code in (0, 1, 4), result.err  # the audit ran: passed, failed or inconclusive
    building.rename(root)
    return root


# ---------------------------------------------------------------- a CLI child that pauses at a stage

PAUSE_ENV = "AUDITKIT_TEST_PAUSE_AT"
MARKER_ENV = "AUDITKIT_TEST_MARKER"


def _pause(marker: str) -> None:
    """Tell the parent where we are, then wait for its signal (SIGINT raises KeyboardInterrupt here)."""
    with open(marker, "w", encoding="utf-8") as handle:
        handle.write(str(os.getpid()))
    while True:
        time.sleep(0.05)


def _child() -> None:
    """Entry point of the child: install the pause hook named by ``$AUDITKIT_TEST_PAUSE_AT``, run the CLI.

    Stages: ``train`` (after training epoch 2), ``unlearn`` (after the method's first epoch),
    ``audit`` (after the first model's signals), ``publish`` (trail line appended, run folder not yet
    renamed into place), or ``fsync:NAME`` (a temporary file for NAME is fully written and about to
    be renamed over it).
    """
    import auditkit.checkpoint
    import auditkit.pipeline
    from auditkit.cli import main

    stage, marker = os.environ[PAUSE_ENV], os.environ[MARKER_ENV]

    def pausing(progress, wanted):
        def report(update):
            progress(update)
            if wanted(update):
                _pause(marker)
        return report

    if stage == "train":
        original = auditkit.checkpoint.train_model

        def train_model(*args, progress, **kwargs):
            return original(*args, progress=pausing(progress, lambda u: u.completed == 2), **kwargs)

        auditkit.checkpoint.train_model = train_model
    elif stage in ("unlearn", "audit"):
        original_forget = auditkit.pipeline.run_forget
        stages = {"unlearn": ("nabla-tau",), "audit": ("signals",)}[stage]

        def run_forget(settings, *, progress):
            return original_forget(settings, progress=pausing(progress, lambda u: u.stage in stages))

        auditkit.pipeline.run_forget = run_forget
    elif stage == "publish":
        original_publish = auditkit.pipeline._publish

        def publish(*args, **kwargs):
            _pause(marker)
            return original_publish(*args, **kwargs)

        auditkit.pipeline._publish = publish
    elif stage.startswith("fsync:"):
        name = stage.split(":", 1)[1]
        original_fsync = os.fsync

        def fsync(fd):
            original_fsync(fd)
            if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(f".{name}."):
                _pause(marker)

        os.fsync = fsync
    else:
        raise SystemExit(f"unknown pause stage {stage!r}")
    main()


def start_paused_cli(args: list[str], *, cwd: Path, stage: str, marker: Path) -> subprocess.Popen:
    """Start ``python -m auditkit ARGS`` (through :func:`_child`) that pauses at ``stage``."""
    env = {**os.environ, PAUSE_ENV: stage, MARKER_ENV: str(marker), "PYTHONPATH": str(TESTS)}
    code = "from reliability_helpers import _child; _child()"
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def signal_when_paused(processes: list[tuple[subprocess.Popen, Path, int]], *, timeout: float = 400.0
                       ) -> list[tuple[int, str, str]]:
    """Wait for each child to reach its pause, send it its signal, and collect (exit code, stdout, stderr).

    A child that exits before pausing is returned as it is (the test then fails on its exit code).
    """
    deadline = time.monotonic() + timeout
    pending = list(range(len(processes)))
    while pending and time.monotonic() < deadline:
        for i in list(pending):
            process, marker, signum = processes[i]
            if marker.exists() and marker.read_text(encoding="utf-8"):
                os.kill(process.pid, signum)
                pending.remove(i)
            elif process.poll() is not None:
                pending.remove(i)
        time.sleep(0.05)
    for i in pending:  # never reached the pause: stop it so the test fails rather than hangs
        processes[i][0].kill()
    results = []
    for process, _, _ in processes:
        out, err = process.communicate(timeout=timeout)
        results.append((process.returncode, out, err))
    assert not pending, f"{len(pending)} child(ren) never reached their pause point"
    return results
