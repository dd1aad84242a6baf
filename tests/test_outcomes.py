"""The three outcomes end to end through the CLI: failed (exit 1), passed, inconclusive (exit 4), abstentions,
and the battery's first phase running before any unlearning."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_wine

from auditkit.audit.battery import DEFAULT_ATTACKS
from auditkit.cli import cli
from auditkit.cli.app import run_cli
from auditkit.evidence.record import RunRecord
from reliability_helpers import fast_config
from test_cli import invoke

EXAMPLE_REQUEST = Path(__file__).resolve().parents[1] / "examples" / "request.csv"
SPY_PLUGINS = '''
from pathlib import Path

import numpy as np
from auditkit.errors import RunError
from auditkit.interfaces import Attack, AttackOutput, UnlearningMethod


class ShortAttack(Attack):
    PLUGIN_NAME = "short"
    DESCRIPTION = "returns one score too few"

    def score(self, data):
        return AttackOutput(scores=-np.asarray(data.target.loss[:-1], dtype=np.float64))


class SpyMethod(UnlearningMethod):
    """Leaves a mark when called, then stops the run, so a test can tell whether unlearning ever began."""

    PLUGIN_NAME = "spy"
    DESCRIPTION = "records that it was called"

    def unlearn(self, task, *, progress=None):
        Path("unlearn-was-called").write_text("yes")
        raise RunError("spy method stops here", hint="this is a test")
'''


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The quick start's demo model (``auditkit train`` with its defaults), a spy plugin file and a 1-ID request."""
    root = tmp_path_factory.mktemp("outcomes")
    assert run_cli(cli, ["-q", "train", "--out", str(root / "demo.pt")]) == 0
    (root / "spy.py").write_text(SPY_PLUGINS, encoding="utf-8")
    first_id = EXAMPLE_REQUEST.read_text(encoding="utf-8").split()[1]
    (root / "one.csv").write_text(f"id\n{first_id}\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def wine(tmp_path_factory):
    """scikit-learn's wine table as a CSV with its own split column, a model trained on it, and 20 training IDs:
    it generalises so well that no attack in the battery tells its training rows from its test rows."""
    root = tmp_path_factory.mktemp("wine")
    bunch = load_wine()
    rng = np.random.default_rng(0)
    splits = rng.choice(["train", "validation", "test"], size=len(bunch.target), p=[0.6, 0.2, 0.2])
    with open(root / "wine.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "label", "split", *bunch.feature_names])
        writer.writerows([f"wine-{i:03d}", y, s, *x] for i, (x, y, s) in enumerate(zip(bunch.data, bunch.target, splits)))
    train_ids = [f"wine-{i:03d}" for i in np.flatnonzero(splits == "train")]
    (root / "request.csv").write_text("id\n" + "\n".join(sorted(rng.choice(train_ids, 20, replace=False))) + "\n",
                                      encoding="utf-8")
    assert run_cli(cli, ["-q", "train", "--dataset", "csv", "--dataset-option", f"path={root / 'wine.csv'}",
                         "--out", str(root / "wine.pt")]) == 0
    (root / "fast.toml").write_text(fast_config(seed=0, attacks=None), encoding="utf-8")
    (root / "spy.py").write_text(SPY_PLUGINS, encoding="utf-8")
    return root


def test_the_untouched_demo_model_audited_against_itself_fails(demo, capsys, tmp_path):
    code, out, err = invoke(capsys, "--json", "audit", "--checkpoint", str(demo / "demo.pt"), "--original",
                            str(demo / "demo.pt"), "--ids", str(EXAMPLE_REQUEST), "--out", str(tmp_path / "self"))
    summary = json.loads(out)
    record = RunRecord.load(tmp_path / "self" / "record.json")
    assert code == summary["exit_code"] == 1 and summary["outcome"] == record.audit["outcome"] == "failed"
    assert summary["passed"] is False and record.summary["outcome"] == "failed"
    verdict_line = [line for line in err.splitlines() if line.startswith("audit ")][-1]
    assert verdict_line.startswith("audit FAILED: ") and "loss (fail)" in verdict_line
    assert "power: the battery detects" in err and "AUC ≥ 0.71" in err


def test_a_model_without_measurable_leakage_audited_against_itself_is_inconclusive(wine, capsys, tmp_path):
    code, out, err = invoke(capsys, "--json", "audit", "--checkpoint", str(wine / "wine.pt"), "--original",
                            str(wine / "wine.pt"), "--ids", str(wine / "request.csv"), "--out", str(tmp_path / "self"))
    summary = json.loads(out)
    record = RunRecord.load(tmp_path / "self" / "record.json")
    assert code == summary["exit_code"] == 4 and summary["outcome"] == "inconclusive" and summary["passed"] is None
    audit = record.audit
    assert all(v["status"] in ("pass", "abstained") for v in audit["verdicts"])  # a pass that could not have failed
    assert not any(p["detects_original"] for p in audit["power"])
    assert "no attack detects membership leakage on the original model" in summary["outcome_reason"]
    assert "reference models" in audit["conclusive_hint"] and audit["conclusive_hint"] in summary["outcome_reason"]
    verdict_line = [line for line in err.splitlines() if line.startswith("audit ")][-1]
    assert verdict_line.startswith("audit INCONCLUSIVE: ") and "to make it conclusive:" in verdict_line
    html = (tmp_path / "self" / "report.html").read_text(encoding="utf-8")
    assert '<div class="verdict">INCONCLUSIVE</div>' in html and "What would make it conclusive" in html


def test_a_one_id_request_makes_every_population_attack_abstain(demo, capsys, tmp_path):
    code, out, _ = invoke(capsys, "--json", "audit", "--checkpoint", str(demo / "demo.pt"), "--original",
                          str(demo / "demo.pt"), "--ids", str(demo / "one.csv"), "--out", str(tmp_path / "one"))
    summary = json.loads(out)
    audit = RunRecord.load(tmp_path / "one" / "record.json").audit
    assert code == 4 and summary["outcome"] == "inconclusive"
    assert "every attack abstains with 1 forgotten sample" in summary["outcome_reason"]
    for name in DEFAULT_ATTACKS:  # each abstention is named, with its reason
        assert f"{name}: " in summary["outcome_reason"]
    status = {v["attack"]: v["status"] for v in audit["verdicts"]}
    assert all(status[name] == "abstained" for name in (*DEFAULT_ATTACKS, "forget-loss-ratio"))
    loss = next(a for a in audit["attacks"] if (a["attack"], a["model"], a["population"]) == ("loss", "unlearned", "forget"))
    assert loss["headline_value"] is None and "at least 2 members" in loss["abstained"] and loss["metrics"] is None
    assert len(audit["exposures"]) == 1  # the ID is still scored against the test split's 1 %-FPR threshold


def test_a_broken_attack_plugin_fails_before_any_unlearning(demo, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = invoke(capsys, "forget", "--checkpoint", str(demo / "demo.pt"), "--ids", str(EXAMPLE_REQUEST),
                          "--plugins", str(demo / "spy.py"), "--method", "spy", "--attacks", "loss,short",
                          "--out", "runs/broken")
    assert code == 3 and "error: attack 'short' returned scores of shape [1285] for 1286 target rows" in err
    assert not Path("unlearn-was-called").exists()  # the method was never called
    assert not Path("runs/broken").exists()


def test_an_inconclusive_request_is_announced_before_unlearning_and_still_forgotten(wine, capsys, tmp_path,
                                                                                      monkeypatch):
    monkeypatch.chdir(tmp_path)
    forget = ["forget", "--checkpoint", str(wine / "wine.pt"), "--ids", str(wine / "request.csv"), "--config",
              str(wine / "fast.toml")]
    # A method that stops the run: whatever was printed came before unlearning began.
    code, _, err = invoke(capsys, *forget, "--plugins", str(wine / "spy.py"), "--method", "spy", "--out", "runs/spy")
    assert code == 3 and Path("unlearn-was-called").exists()
    assert "power: the audit will be inconclusive (unless a check fails): no attack detects" in err
    # With a real method the deletion goes ahead: the unlearned model is written, the outcome is inconclusive.
    code, out, err = invoke(capsys, "--json", *forget, "--out", "runs/real")
    assert code == 4 and json.loads(out)["outcome"] == "inconclusive" and Path("runs/real/model.pt").is_file()
