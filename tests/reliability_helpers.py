"""Shared by the reliability tests: a small trained workspace, the CLI in-process, many real processes
forked from one warm interpreter (concurrency) that can each pause at a named stage (so a test can signal
it at a known point), snapshots, and the checks every expected failure must pass.

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
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
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


# ---------------------------------------------------------------- a process that pauses at a named stage


def _pause(marker: str) -> None:
    """Tell the parent where we are, then wait for its signal: SIGKILL ends us here, SIGINT or SIGTERM raise
    KeyboardInterrupt here, or, inside the trail's publish protocol (which holds them), let us go on."""
    import auditkit.evidence.ledger as ledger

    with open(marker + ".tmp", "w", encoding="utf-8") as handle:
        handle.write(str(os.getpid()))
    os.replace(marker + ".tmp", marker)  # the parent never reads a half-written pid
    while not ledger._held:
        time.sleep(0.02)


def _install_pause(stage: str, marker: str) -> None:
    """Make this process stop at ``stage`` and write its pid to ``marker`` there.

    Stages: ``train`` (after training epoch 2), ``unlearn`` (after the method's first epoch),
    ``audit`` (after the first model's signals), ``ledger:STEP`` (a step of the trail's publish protocol:
    ``locked``, ``checked``, ``appended``, ``moved-aside``, ``published``, ``returned``), ``torn-append``
    (half of the new trail lines written), or ``fsync:NAME`` (a temporary file for NAME is fully written
    and about to be renamed over it).
    """
    import auditkit.evidence.ledger

    def pausing(progress, wanted):
        def report(update):
            progress(update)
            if wanted(update):
                _pause(marker)
        return report

    if stage == "train":
        import auditkit.checkpoint

        original = auditkit.checkpoint.train_model

        def train_model(*args, progress, **kwargs):
            return original(*args, progress=pausing(progress, lambda u: u.completed == 2), **kwargs)

        auditkit.checkpoint.train_model = train_model
    elif stage in ("unlearn", "audit"):
        import auditkit.pipeline

        original_forget = auditkit.pipeline.run_forget
        stages = {"unlearn": ("nabla-tau",), "audit": ("signals",)}[stage]

        def run_forget(settings, *, progress):
            return original_forget(settings, progress=pausing(progress, lambda u: u.stage in stages))

        auditkit.pipeline.run_forget = run_forget
    elif stage.startswith("ledger:"):
        wanted = stage.split(":", 1)[1]

        def reached(step: str) -> None:
            if step == wanted:
                _pause(marker)

        auditkit.evidence.ledger._reached = reached
    elif stage == "torn-append":  # half of the trail lines written, then stopped: a crash inside the write
        def write_half(fd: int, data: bytes) -> None:
            os.write(fd, data[: len(data) // 2])
            _pause(marker)
            raise SystemExit("a torn append must be killed, not resumed")

        auditkit.evidence.ledger._write_all = write_half
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


# ---------------------------------------------------------------- many real processes from one warm interpreter


@dataclass
class Job:
    """One process of :func:`run_forked`.

    ``kind`` is ``"cli"`` (the auditkit command line, ``args`` as after ``auditkit``) or ``"publish"``
    (the trail's publish protocol alone, no torch: ``args`` = ``[TRAIL, OUT, *flags]`` with flags
    ``--force`` and ``--default``, see :func:`_publisher`). ``pause`` is a stage of
    :func:`_install_pause` to stop at and ``signum`` the signal the test then sends; ``cwd`` (default:
    run_forked's) and ``env`` apply to the child only.
    """

    args: list[str]
    kind: str = "cli"
    pause: str | None = None
    signum: int | None = None
    cwd: str | None = None
    env: dict[str, str] = field(default_factory=dict)


def run_forked(jobs: list[Job], *, cwd: Path, warm: Path | None = None, clock: str | None = None,
               then: list[Job] = (), wrap: list[str] = (), timeout: float = 300.0) -> list[Result]:
    """Run every job as its own process, all released at once, forked from one interpreter that imported
    auditkit first (and, given a ``warm`` workspace, ran one ``forget --no-audit`` there): real processes
    contending for real locks, without paying the imports and the first run's loading once per process.

    ``clock`` freezes the UTC time the default run folder is named after (runs started in one second).
    A job with ``pause`` is sent ``signum`` once it stops there. ``then`` jobs run after every job has
    ended, in the same server (e.g. `verify` inside the mount namespace that ``wrap`` set up: a command
    prefix that ends by running its arguments). The results are in job order, ``then`` last, with
    ``code`` the exit status (``-N`` for a process killed by signal N).
    """
    folder = Path(tempfile.mkdtemp(prefix="auditkit-forked-"))
    try:
        spec = {"jobs": [asdict(job) for job in jobs], "then": [asdict(job) for job in then], "cwd": str(cwd),
                "warm": warm and str(warm), "clock": clock, "folder": str(folder)}
        (folder / "spec.json").write_text(json.dumps(spec), encoding="utf-8")
        code = "from reliability_helpers import _fork_server; _fork_server()"
        server = subprocess.Popen([*wrap, sys.executable, "-c", code, str(folder / "spec.json")], cwd=folder,
                                  env={**os.environ, "PYTHONPATH": str(TESTS)}, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        waiting = {i: job for i, job in enumerate(jobs) if job.pause}
        deadline = time.monotonic() + timeout
        while waiting and server.poll() is None and time.monotonic() < deadline:
            for i in list(waiting):
                marker = folder / f"{i}.paused"
                if marker.exists():
                    os.kill(int(marker.read_text(encoding="utf-8")), waiting.pop(i).signum)
            time.sleep(0.02)
        try:
            out, err = server.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            server.kill()
            raise
        assert server.returncode == 0, err
        assert not waiting, f"jobs {sorted(waiting)} never reached their pause"
        return [Result(**result) for result in json.loads(out)]
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _fork_server() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    if any(job["kind"] == "cli" for job in spec["jobs"] + spec["then"]):
        from auditkit.cli import cli
        from auditkit.cli.app import run_cli

        if spec["warm"]:
            warm = Path(spec["warm"])
            with chdir(warm), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                assert run_cli(cli, [*FORGET, "--no-audit", "--out", "warm/run", "--trail", "warm/trail.jsonl"]) == 0
    import auditkit.evidence.ledger as ledger

    if spec["clock"]:
        ledger.utc_now = lambda: spec["clock"]
    results = _fork_batch(spec, spec["jobs"], 0)
    results += _fork_batch(spec, spec["then"], len(spec["jobs"]))
    print(json.dumps(results))


def _fork_batch(spec: dict, jobs: list[dict], first: int) -> list[dict]:
    folder = Path(spec["folder"])
    gate_read, gate_write = os.pipe()
    children = []
    for i, job in enumerate(jobs, start=first):
        pid = os.fork()
        if pid == 0:  # the child: wait at the gate, run one job, never return into the server
            code = 70
            try:
                os.close(gate_write)
                os.read(gate_read, 1)
                os.environ.update(job["env"])
                os.chdir(job["cwd"] or spec["cwd"])
                if job["pause"]:
                    _install_pause(job["pause"], str(folder / f"{i}.paused"))
                with open(folder / f"{i}.out", "w") as out, open(folder / f"{i}.err", "w") as err:
                    sys.stdout, sys.stderr = out, err
                    try:
                        if job["kind"] == "cli":  # the console script itself: its SIGTERM handler, run_cli
                            from auditkit.cli import main

                            sys.argv = ["auditkit", *job["args"]]
                            try:
                                main()
                            except SystemExit as done:
                                code = done.code
                        else:
                            signal.signal(signal.SIGTERM, _interrupt)
                            code = _publisher(job["args"])
                    except BaseException:  # a bug in the job: show it (os._exit would swallow it)
                        traceback.print_exc()
                        code = 71
                    out.flush()
                    err.flush()
            finally:
                os._exit(code)
        children.append(pid)
    os.write(gate_write, b"x" * len(children))  # release them all at once
    os.close(gate_write)
    os.close(gate_read)
    results = []
    for i, pid in enumerate(children, start=first):
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        results.append({"code": code, "out": _read(folder / f"{i}.out"), "err": _read(folder / f"{i}.err")})
    return results


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # as auditkit.cli._terminate, without importing the CLI into a publish job


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8") if path.exists() else ""


def publish_fake_run(trail: Path, out: Path, *, force: bool = False, default: bool = False):
    """Publish one small fake run through the real protocol (no model, no torch) and return the
    :class:`~auditkit.evidence.ledger.Published`. The run folder gets a model.pt, a report.html and a
    record.json like a real run's (smaller), so `auditkit verify` checks it as it checks a real one."""
    from auditkit.evidence.ledger import RunLedger
    from auditkit.evidence.record import RunRecord, utc_now
    from auditkit.fsutil import sha256_file

    ledger = RunLedger(trail=Path(trail), out=Path(out), force=force, out_is_default=default)
    ledger.check()
    with ledger.staging() as tmp:
        (tmp / "model.pt").write_bytes(os.urandom(64))
        (tmp / "report.html").write_text(f"<p>run {os.getpid()}</p>", encoding="utf-8")
        record = RunRecord(kind="forget", summary={"kind": "forget", "passed": None, "request_sha256": "0" * 64,
                                                   "method": "fake"},
                           request={}, dataset={}, checkpoints={}, method=None, history=[], audit=None,
                           provenance={"finished_utc": utc_now(), "pid": os.getpid()},
                           outputs={name: sha256_file(tmp / name) for name in ("model.pt", "report.html")})
        return ledger.publish(tmp, record)


def _publisher(args: list[str]) -> int:
    """A `publish` job: ``TRAIL OUT [--force] [--default]`` through :func:`publish_fake_run`, with the
    CLI's exit codes; prints ``{"out", "line"}`` on stdout."""
    from auditkit.errors import AuditkitError
    from auditkit.fsutil import written

    trail, out, *flags = args
    try:
        published = publish_fake_run(Path(trail), Path(out), force="--force" in flags, default="--default" in flags)
    except AuditkitError as exc:
        print(f"error: {exc.message}\nhint: {exc.hint}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"error: interrupted; written: {list(written())}", file=sys.stderr)
        return 130
    print(json.dumps({"out": str(published.out), "line": published.line.number}))
    return 0
