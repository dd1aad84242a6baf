"""Imports are lazy: `--help` and `verify` never load torch, `train` never loads the audit (scikit-learn's
models), the report (matplotlib, jinja2) or torch._dynamo, and `import auditkit` loads nothing heavy
(bench/startup.py times them)."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "sklearn.linear_model", "auditkit.audit.battery", "matplotlib", "jinja2", "torch._dynamo")

CHILD = """
import contextlib, io, json, sys
from auditkit.cli import cli
from auditkit.cli.app import run_cli
loaded = {}
for args in json.loads(sys.argv[1]):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = run_cli(cli, args)
    loaded[" ".join(args)] = [code, sorted(m for m in %r if m in sys.modules)]
print(json.dumps(loaded))
""" % (HEAVY,)


def _loaded(*commands: list[str], cwd) -> dict[str, list]:
    result = subprocess.run([sys.executable, "-c", CHILD, json.dumps(list(commands))], cwd=cwd, capture_output=True,
                            text=True, timeout=300, check=True)
    return json.loads(result.stdout)


def test_help_and_verify_load_no_torch(tmp_path):
    (tmp_path / "trail.jsonl").write_text("")
    loaded = _loaded(["--help"], ["forget", "--help"], ["adopt", "--help"], ["verify", "trail.jsonl"], cwd=tmp_path)
    assert all(modules == [] for _, modules in loaded.values()), loaded
    script = "import sys, auditkit; print(sorted(m for m in %r if m in sys.modules))" % (HEAVY,)
    assert subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                          timeout=120).stdout.strip() == "[]"


def test_train_loads_only_what_it_uses(tmp_path):
    loaded = _loaded(["-q", "train", "--epochs", "1", "--out", "model.pt"], cwd=tmp_path)
    (code, modules), = loaded.values()
    assert code == 0 and modules == ["torch"], loaded  # digits needs sklearn.datasets (and scipy) only
