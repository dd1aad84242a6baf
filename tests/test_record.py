"""RunRecord: JSON round trip, strict JSON, validation errors, and output-hash verification."""

from __future__ import annotations

import json

import numpy as np
import pytest

from auditkit.audit.results import (
    AttackMetrics,
    AttackResult,
    AuditResult,
    PowerRow,
    SampleExposure,
    UtilityRow,
    Verdict,
)
from auditkit.errors import InputError
from auditkit.evidence.record import (
    RECORD_SCHEMA_VERSION,
    RunRecord,
    collect_provenance,
    to_json_value,
    verify_record_files,
)


def _metrics(rng: np.random.Generator, auc: float) -> AttackMetrics:
    fpr = np.sort(np.concatenate([[0.0, 1.0], rng.uniform(0, 1, 30)]))
    tpr = np.clip(fpr ** (1 - 2 * (auc - 0.5)), 0, 1)
    return AttackMetrics(auc=auc, auc_ci=(auc - 0.04, auc + 0.04), auc_se=0.02, auc_df=179.0,
                         balanced_accuracy=auc - 0.02, tpr_at_1pct_fpr=0.02, tpr_at_1pct_fpr_ci=(0.005, 0.05),
                         tpr_at_01pct_fpr=0.0, tpr_at_01pct_fpr_ci=(0.0, 0.02), advantage=2 * (auc - 0.5),
                         epsilon_lower_bound=0.1, n_members=180, n_nonmembers=630,
                         roc_fpr=fpr.tolist(), roc_tpr=tpr.tolist())


OUTCOME_REASONS = {
    "passed": "9 of 9 checks pass, and the audit could have failed: loss detects the original model's leak",
    "failed": "3 of 9 checks fail: loss (fail)",
    "inconclusive": "9 of 9 checks pass, but no attack detects membership leakage on the original model",
}


def sample_audit(*, hostile: str = "digits-0007", outcome: str = "passed", seed: int = 0) -> AuditResult:
    """A hand-made audit result shaped like the battery's (hostile strings go into IDs and names)."""
    rng = np.random.default_rng(seed)
    attacks, verdicts, power = [], [], []
    for name, before, after in (("lr-loss", 0.62, 0.51), ("loss", 0.66, 0.52), (hostile, 0.58, 0.50)):
        for model, auc in (("original", before), ("unlearned", after), ("retrained", 0.5)):
            for population in ("forget", "retain"):
                value = auc if population == "forget" else before
                attacks.append(AttackResult(attack=name, model=model, population=population,
                                            metrics=_metrics(rng, value), headline="auc", headline_value=value,
                                            headline_ci=(value - 0.04, value + 0.04), headline_se=0.02,
                                            headline_df=179.0, minimum_detectable=0.61,
                                            parameters={"seen": hostile}))
        verdicts.append(Verdict(attack=name, status="fail" if outcome == "failed" else "pass", value=after,
                                ci=(after - 0.04, after + 0.04), retrained_value=0.5,
                                reason="interval above 0.5" if outcome == "failed" else "interval contains 0.5"))
        detects = outcome != "inconclusive"
        power.append(PowerRow(attack=name, headline="auc", chance=0.5, minimum_detectable=0.61, original_value=before,
                              original_ci=(before - 0.05, before + 0.05), detects_original=detects,
                              resolves_margin=True, conclusive=detects))
    return AuditResult(
        outcome=outcome, outcome_reason=OUTCOME_REASONS[outcome],
        conclusive_hint="attacks with reference models can see more" if outcome == "inconclusive" else None,
        passed={"passed": True, "failed": False}.get(outcome),
        policy={"margin": 0.03, "confidence": 0.95, "detectable_margin": 0.25, "exposure_fpr": 0.01},
        verdict_level=0.99375, attacks=attacks, verdicts=verdicts, power=power,
        utility=[UtilityRow("original", 1.0, 1.0, 0.95), UtilityRow("unlearned", 0.99, 0.95, 0.945),
                 UtilityRow("retrained", 0.995, 0.94, 0.94)],
        exposure_attack="lr-loss",
        exposures=[SampleExposure(id=hostile if i == 0 else f"digits-{i:04d}", score=1 - i / 200, loss=0.1 + i / 100,
                                  original_loss=0.001 * i, exceeds_1pct_fpr=i < 3) for i in range(60)],
        losses={m: {"forget": rng.exponential(s, 180).tolist(), "test": rng.exponential(0.3, 630).tolist()}
                for m, s in (("original", 0.05), ("unlearned", 0.3), ("retrained", 0.3))},
        methods={"auc": f"DeLong, {hostile}"},
        warnings=["TPR at 0.1 % FPR is not resolvable with 630 non-members"],
    )


def sample_record(*, hostile: str = "digits-0007", outcome: str | None = "passed", seed: int = 0) -> RunRecord:
    """A complete forget-run record around :func:`sample_audit` (``outcome=None``: not audited)."""
    audit = None if outcome is None else sample_audit(hostile=hostile, outcome=outcome, seed=seed).to_dict()
    history = [{"epoch": e, "tau": 0.3, "alpha": 0.25 * (1 - e / 10), "lr": 1e-3, "forget_loss": 0.03 * e,
                "retain_loss": 0.02, "forget_below_tau": 1 - e / 10, "test_accuracy": 0.95,
                "mia": 0.62 - 0.012 * e} for e in range(1, 11)]
    summary = {"kind": "forget", "outcome": outcome, "passed": {"passed": True, "failed": False}.get(outcome),
               "outcome_reason": audit["outcome_reason"] if audit else None, "request_sha256": "a" * 64,
               "request_count": 180, "original_sha256": "b" * 64, "unlearned_sha256": "c" * 64,
               "method": "nabla-tau", "dataset": "digits"}
    provenance = collect_provenance(
        seed=0, backend="reference", config_sha256=None, started="2026-01-01T00:00:00Z",
        finished="2026-01-01T00:01:00Z", inputs={"checkpoint": "b" * 64, "request": "a" * 64},
        plugins=[{"kind": "methods", "name": "nabla-tau", "source": hostile, "version": "0.1.0"}])
    return RunRecord(
        kind="forget", summary=summary,
        request={"sha256": "a" * 64, "count": 180, "file": f"requests/{hostile}.csv", "ids": None},
        dataset={"name": "digits", "options": {"split_seed": 0}, "sizes": {"train": 898, "validation": 270, "test": 629}},
        checkpoints={"original": {"path": "runs/digits-mlp.pt", "sha256": "b" * 64},
                     "unlearned": {"path": "model.pt", "sha256": "c" * 64}},
        method={"name": "nabla-tau", "options": {}, "settings": {"tau_refresh": 5, "alpha0": 0.25}, "backend": "reference"},
        history=history, audit=audit, provenance=provenance,
    )


def test_round_trip_is_exact_and_strict_json(tmp_path):
    record = sample_record()
    path = tmp_path / "record.json"
    record.write(path)
    text = path.read_text(encoding="utf-8")
    loaded = RunRecord.load(path)
    assert loaded.to_json() == text
    assert json.loads(text)["schema_version"] == RECORD_SCHEMA_VERSION
    AuditResult.from_dict(loaded.audit)  # the audit block still parses as the battery's schema


def test_non_finite_and_numpy_values_become_strict_json():
    value = to_json_value({"a": float("nan"), "b": np.float32(0.5), "c": (1, np.int64(2)), "d": np.arange(2)})
    assert value == {"a": None, "b": 0.5, "c": [1, 2], "d": [0, 1]}
    json.dumps(value, allow_nan=False)


def test_provenance_names_versions_and_sorts_plugins():
    prov = sample_record().provenance
    for key in ("auditkit", "python", "torch", "numpy", "scikit_learn", "op_backend", "seed", "host"):
        assert prov[key] not in (None, ""), key
    assert prov["inputs"] == {"checkpoint": "b" * 64, "request": "a" * 64}


@pytest.mark.parametrize(
    "content, message",
    [("[1, 2]", "not a JSON object"), ("{", "not valid JSON"),
     ('{"schema_version": 99}', "schema_version 99"), ('{"schema_version": 2, "kind": "forget"}', "lacks the fields"),
     ('{"schema_version": 1, "kind": "forget"}', "schema_version 1")],
)
def test_bad_records_are_input_errors(tmp_path, content, message):
    path = tmp_path / "record.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match=message):
        RunRecord.load(path)


def test_missing_record_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        RunRecord.load(tmp_path / "nope.json")


def test_verify_record_files_reports_a_changed_or_missing_output(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"weights")
    (tmp_path / "report.html").write_text("<html></html>", encoding="utf-8")
    record = sample_record()
    from auditkit.fsutil import sha256_file

    record.outputs = {name: sha256_file(tmp_path / name) for name in ("model.pt", "report.html")}
    record.write(tmp_path / "record.json")
    assert verify_record_files(tmp_path / "record.json").ok

    (tmp_path / "model.pt").write_bytes(b"weights, swapped")
    check = verify_record_files(tmp_path / "record.json")
    assert not check.ok and check.problems[0].startswith("model.pt has SHA-256")
    (tmp_path / "report.html").unlink()
    assert any("report.html is missing" in p for p in verify_record_files(tmp_path / "record.json").problems)
