"""The heavy work shared by real worker processes (gloo on CPU): map_units over two ranks, `--workers 2`
and `torchrun` giving the same LiRA/RMIA audit as one process, rank 0 alone writing, a killed worker ending
the run cleanly, and ∇τ under DistributedDataParallel.

Every run is a real launch through torch's elastic agent on small digits data, with few reference models.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from auditkit import distributed
from auditkit.cli import cli
from auditkit.cli.app import run_cli
from auditkit.errors import InputError
from auditkit.fsutil import sha256_file
from reliability_helpers import fast_config

AUDIT_CONFIG = fast_config(seed=3, attacks=["loss", "lira-offline", "rmia"])
REFERENCES = ["--attack-option", "lira-offline.references=4", "--attack-option", "rmia.references=3"]


def _unit(k: int) -> dict:
    """A unit of work seeded by its index, as reference models are; draws from the global RNG on purpose."""
    torch.manual_seed(1000 + k)
    return {"k": k, "pid": os.getpid(), "weights": torch.randn(5, dtype=torch.float64)}


def _failing_unit(k: int) -> int:
    if k in (3, 4):
        raise InputError(f"unit {k} failed", hint="fix unit {k}")
    return k


def _two_ranks(count: int) -> dict:
    """What one rank of a 2-worker launch sees (rank 0's comes back to the test)."""
    distributed.join(device=torch.device("cpu"))
    torch.manual_seed(7)
    results = distributed.map_units(_unit, count)
    after = torch.rand(1).item()  # the caller's RNG does not depend on which units ran in this process
    try:
        distributed.map_units(_failing_unit, 6)
        error = None
    except InputError as exc:
        error = (exc.message, exc.hint)
    writer_pid = distributed.on_writer(os.getpid)
    sums = distributed.all_sum([distributed.rank() + 1.0, 0.5])
    shares = [distributed.shard(torch.arange(5)).tolist()]
    layout = distributed.describe()
    distributed.leave(clean=True)
    return {"results": results, "after": after, "error": error, "writer_pid": writer_pid, "sums": sums,
            "shares": shares, "layout": layout, "pid": os.getpid()}


def test_map_units_over_two_gloo_processes_equals_sequential():
    seen = distributed.launch(_two_ranks, (7,), workers=2)
    torch.manual_seed(7)
    alone = [_unit(k) for k in range(7)]
    torch.manual_seed(7)
    assert [r["k"] for r in seen["results"]] == list(range(7))  # index order
    for mine, reference in zip(seen["results"], alone):
        assert torch.equal(mine["weights"], reference["weights"])
    by = {r["k"]: r["pid"] for r in seen["results"]}
    assert {by[k] for k in (0, 2, 4, 6)} == {seen["pid"]} and seen["pid"] not in {by[k] for k in (1, 3, 5)}
    assert seen["after"] == torch.rand(1).item()
    assert seen["error"] == ("unit 3 failed", "fix unit {k}")  # the lowest index's error, on every rank
    assert seen["writer_pid"] == seen["pid"] and seen["sums"] == [3.0, 1.0]
    assert seen["shares"] == [[0, 2, 4]]
    assert seen["layout"] == {"world_size": 2, "local_world_size": 2, "nodes": 1, "backend": "gloo"}
    # Without a launch the same helpers run everything in this process.
    assert not distributed.launched() and distributed.world_size() == 1 and distributed.is_writer()
    assert [u["k"] for u in distributed.map_units(_unit, 3)] == [0, 1, 2]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A small trained digits checkpoint, a request for 20 training IDs and a config auditing with LiRA/RMIA."""
    root = tmp_path_factory.mktemp("distributed")
    assert run_cli(cli, ["-q", "train", "--epochs", "20", "--out", str(root / "runs" / "digits-mlp.pt")]) == 0
    from auditkit_plugins.datasets.sklearn_data import DigitsDataset

    data = DigitsDataset().load()
    ids = np.random.default_rng(0).choice(data.ids[data.indices("train")], size=20, replace=False)
    (root / "request.csv").write_text("id\n" + "\n".join(sorted(ids)) + "\n", encoding="utf-8")
    (root / "auditkit.toml").write_text(AUDIT_CONFIG, encoding="utf-8")
    return root


def _run(root: Path, *args: str, cache: str | None, launcher: tuple[str, ...] = ("-m",)) -> subprocess.CompletedProcess:
    """``python [launcher] -m auditkit ARGS`` in ``root``; ``cache``: a fresh reference-model cache (None: the
    default one, where the fused op is built)."""
    env = dict(os.environ, **({"AUDITKIT_CACHE_DIR": str(root / cache)} if cache else {}))
    return subprocess.run([sys.executable, *launcher, "auditkit", *args], cwd=root, env=env, capture_output=True,
                          text=True, timeout=300)


def _audit(root: Path, out: str, *, workers: int, cache: str, launcher: tuple[str, ...] = ("-m",)) -> dict:
    args = ([] if len(launcher) > 1 else ["--workers", str(workers)]) + [
        "--json", "audit", "--checkpoint", "runs/digits-mlp.pt", "--ids", "request.csv", *REFERENCES, "--out", out]
    done = _run(root, *args, cache=cache, launcher=launcher)
    assert done.returncode in (0, 1, 4), done.stderr
    # torchrun prints its own traceback when rank 0 exits 1 (the audit failed the policy), none of auditkit's.
    assert "site-packages/auditkit" not in done.stderr and "auditkit/pipeline.py" not in done.stderr
    assert len(launcher) > 1 or "Traceback" not in done.stderr
    return json.loads(done.stdout)


def _entries(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def _trail_lines(root: Path) -> int:
    trail = root / "runs" / "audit-trail.jsonl"
    return len(trail.read_text(encoding="utf-8").splitlines()) if trail.exists() else 0


def test_two_workers_and_torchrun_give_the_one_process_audit_and_only_rank_0_writes(workspace):
    one = _audit(workspace, "runs/one", workers=1, cache="cache-1")
    before, lines = _entries(workspace / "runs"), _trail_lines(workspace)
    two = _audit(workspace, "runs/two", workers=2, cache="cache-2")
    # Exactly one run folder and one trail line, and no staging or probe folder left beside them.
    assert _entries(workspace / "runs") - before == {"two"} and _trail_lines(workspace) == lines + 1
    assert two["exit_code"] == one["exit_code"]
    records = {name: json.loads((workspace / "runs" / name / "record.json").read_text(encoding="utf-8"))
               for name in ("one", "two")}
    assert records["two"]["audit"] == records["one"]["audit"]  # scores, intervals, reference-model hashes
    lira = next(a for a in records["two"]["audit"]["attacks"] if a["attack"] == "lira-offline")
    assert len(lira["reference_models"]) == 4
    assert records["one"]["provenance"]["processes"]["world_size"] == 1
    assert records["two"]["provenance"]["processes"] == {"world_size": 2, "local_world_size": 2, "nodes": 1,
                                                         "backend": "gloo"}
    # Both ranks trained their share into the one cache, each model once.
    assert len(list((workspace / "cache-2" / "reference-models").glob("*.pt"))) == 4

    # The same command under torchrun (`python -m auditkit` on every rank), unchanged.
    torchrun = ("-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m")
    _audit(workspace, "runs/torchrun", workers=2, cache="cache-3", launcher=torchrun)
    record = json.loads((workspace / "runs" / "torchrun" / "record.json").read_text(encoding="utf-8"))
    assert record["audit"] == records["one"]["audit"] and record["provenance"]["processes"]["world_size"] == 2
    assert _trail_lines(workspace) == lines + 2


def _workers_of(parent: int) -> list[int]:
    """PIDs of the spawned workers of ``parent``, in start order (local rank order)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (proc / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and b"spawn_main" in command:
            found.append(int(proc.name))
    return sorted(found)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the workers through /proc")
def test_killing_a_worker_mid_run_exits_3_with_one_error_and_writes_nothing(workspace):
    runs = workspace / "runs"
    before = {p.name: sha256_file(p) for p in runs.rglob("*") if p.is_file()}
    env = dict(os.environ, AUDITKIT_CACHE_DIR=str(workspace / "cache-killed"))
    command = [sys.executable, "-m", "auditkit", "--workers", "2", "audit", "--checkpoint", "runs/digits-mlp.pt",
               "--ids", "request.csv", "--attack-option", "lira-offline.references=8", "--out", "runs/killed"]
    process = subprocess.Popen(command, cwd=workspace, env=env, stderr=subprocess.PIPE, text=True)
    stderr = ""
    while "reference-models:" not in stderr:  # the cost announcement: the workers are training now
        line = process.stderr.readline()
        assert line, f"the run ended before training: {stderr}"
        stderr += line
    workers = _workers_of(process.pid)
    assert len(workers) == 2
    os.kill(workers[1], signal.SIGKILL)
    started = time.monotonic()
    stderr += process.stderr.read()
    assert process.wait(timeout=120) == 3
    assert time.monotonic() - started < 20  # the other worker is stopped, not left to time out
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    hints = [line for line in stderr.splitlines() if line.startswith("hint:")]
    assert len(errors) == 1 and len(hints) == 1, stderr
    assert "of 2 was killed by SIGKILL" in errors[0] and "nothing was written" in errors[0]
    assert "Traceback" not in stderr and "--workers" in hints[0]
    assert {p.name: sha256_file(p) for p in runs.rglob("*") if p.is_file()} == before
    assert not [p for p in runs.iterdir() if "killed" in p.name]


def test_nabla_tau_under_ddp_on_two_ranks_records_them(workspace):
    done = _run(workspace, "--workers", "2", "--json", "forget", "--ids", "request.csv", "--attacks", "loss",
                "--backend", "cpu", "--out", "runs/ddp", cache=None)
    assert done.returncode in (0, 1, 4), done.stderr
    record = json.loads((workspace / "runs" / "ddp" / "record.json").read_text(encoding="utf-8"))
    settings = record["method"]["settings"]
    assert settings["world_size"] == 2 and record["provenance"]["processes"]["world_size"] == 2
    assert record["method"]["backend"] == "cpu"  # the fused op's autograd ran inside DDP
    assert len(record["history"]) == settings["epochs"] == 2
    assert all(np.isfinite(entry["retain_loss"]) and np.isfinite(entry["tau"]) for entry in record["history"])
    assert record["checkpoints"]["unlearned"]["sha256"] == sha256_file(workspace / "runs" / "ddp" / "model.pt")


def test_two_workers_give_the_one_process_u_lira_per_example_scores(workspace):
    """U-LiRA's shadows (retrained and unlearned ones) split over two ranks: the same per-ID scores, p-values
    and flags, the same shadow hashes, as one process."""
    args = ["--json", "audit", "--checkpoint", "runs/digits-mlp.pt", "--ids", "request.csv", "--attacks", "loss,u-lira",
            "--attack-option", "u-lira.shadows=4", "--method", "nabla-tau"]
    records = {}
    for workers in (1, 2):
        out = f"runs/ulira-{workers}"
        done = _run(workspace, "--workers", str(workers), *args, "--out", out, cache=f"ulira-cache-{workers}")
        assert done.returncode in (0, 1, 4) and "Traceback" not in done.stderr, done.stderr
        records[workers] = json.loads((workspace / out / "record.json").read_text(encoding="utf-8"))

    def ulira(record: dict) -> list[dict]:
        return [a for a in record["audit"]["attacks"] if a["attack"] == "u-lira"]

    one, two = ulira(records[1]), ulira(records[2])
    assert one and [len(a["per_example"]) for a in one] == [20] * len(one)
    assert two == one  # per-example scores, p-values, flags, shadow hashes
    assert records[2]["audit"] == records[1]["audit"]
    assert records[2]["provenance"]["processes"]["world_size"] == 2
