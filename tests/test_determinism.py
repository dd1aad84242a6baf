"""Determinism on CPU: the same command and seed give the same unlearned model and the same record.

The first run is the session's shared one, made in-process after whatever else the session ran; the
second is a fresh ``python -m auditkit`` process in another folder with another hash seed. Their
records must agree on everything but the UTC times, the host and the report's hash (the report shows
the times). A different seed must give a different model, or the comparison would prove nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from auditkit.fsutil import sha256_file
from reliability_helpers import FORGET, fresh_workspace, run_cli_here, shared_run

RUN_DEPENDENT = ("started_utc", "finished_utc", "host")


def _comparable(record: dict) -> dict:
    record = json.loads(json.dumps(record))
    for key in RUN_DEPENDENT:
        record["provenance"].pop(key)
    record["outputs"].pop("report.html")
    record.pop("trail")  # which trail (a random ID) and line logged the run
    return record


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    first = shared_run(tmp_path_factory)
    second = fresh_workspace(tmp_path_factory, tmp_path_factory.mktemp("determinism") / "elsewhere")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    done = subprocess.run([sys.executable, "-m", "auditkit", "-q", *FORGET, "--out", "runs/first"], cwd=second,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode in (0, 1, 4), done.stderr
    return first, second


def test_same_command_and_seed_give_the_same_model_bytes(two_runs):
    first, second = (root / "runs" / "first" for root in two_runs)
    assert sha256_file(first / "model.pt") == sha256_file(second / "model.pt")


def test_same_command_and_seed_give_the_same_record_apart_from_times_and_host(two_runs):
    first, second = (json.loads((root / "runs" / "first" / "record.json").read_text(encoding="utf-8"))
                     for root in two_runs)
    assert _comparable(first) == _comparable(second)
    assert first["audit"]["attacks"] and first["history"]  # the comparison covered the audit and the history


def test_another_seed_gives_another_model(two_runs, tmp_path_factory):
    root = fresh_workspace(tmp_path_factory, tmp_path_factory.mktemp("determinism-seed") / "ws")
    result = run_cli_here(["-q", *FORGET, "--out", "runs/seed4", "--seed", "4", "--no-audit"], cwd=root)
    assert result.code == 0, result.err
    assert sha256_file(root / "runs" / "seed4" / "model.pt") != sha256_file(two_runs[0] / "runs" / "first" / "model.pt")
