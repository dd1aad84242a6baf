"""The battery end to end on real data (scikit-learn digits): outcomes, power, the policy's decisions, and
reference models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from auditkit.audit.battery import DEFAULT_ATTACKS, check_battery, run_audit
from auditkit.audit.policy import LOSS_RATIO_CHECK, UTILITY_CHECK, Policy
from auditkit.audit.results import AttackResult, AuditResult
from auditkit.audit.shadows import CACHE_ENV, ShadowTrainer, cache_dir
from auditkit.audit.stats import RatioEstimate, bonferroni_level
from auditkit.errors import InputError
from auditkit.fsutil import sha256_file
from auditkit.progress import Progress
from auditkit.registry import Registry
from auditkit.training import TrainRecipe, train_model
from auditkit_plugins.datasets.sklearn_data import DigitsDataset
from auditkit_plugins.models.mlp import MlpModel

REGISTRY = Registry.default()
# A small training split trained to zero loss leaves a measurable membership signal on digits.
RECIPE = TrainRecipe(epochs=60, batch_size=32, lr=5e-3)


class Digits:
    def __init__(self) -> None:
        self.data = DigitsDataset(train_fraction=0.1, validation_fraction=0.2).load()
        train = self.data.indices("train")
        self.forget = np.sort(np.random.default_rng(0).choice(train, 60, replace=False))
        self.retain = np.setdiff1d(train, self.forget)
        self.original = self.fit(train, seed=0)
        self.retrained = self.fit(self.retain, seed=1)

    def build(self, widths=(64,)):
        return MlpModel(widths=widths).build(input_shape=self.data.input_shape, num_classes=self.data.num_classes)

    def fit(self, positions, *, seed):
        torch.manual_seed(seed)
        features, labels = self.data.subset(positions)
        return train_model(self.build(), features, labels, recipe=RECIPE, seed=seed)

    def audit(self, models, attacks=DEFAULT_ATTACKS, policy=Policy(), forget=None, **kwargs):
        forget = self.forget if forget is None else forget
        retain = np.setdiff1d(self.data.indices("train"), forget)
        return run_audit(data=self.data, forget=forget, retain=retain,
                         validation=self.data.indices("validation"), test=self.data.indices("test"),
                         models=models, attacks=[REGISTRY.create("attacks", a) if isinstance(a, str) else a
                                                 for a in attacks],
                         policy=policy, seed=0, backend="reference", **kwargs)


@pytest.fixture(scope="module")
def digits():
    # Tiny models train several times faster on one thread than on two contended ones.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield Digits()
    finally:
        torch.set_num_threads(threads)


class ForgetsTooMuch(nn.Module):
    """Stands in for a method that over-forgot: confidently wrong on exactly the forget set, unchanged elsewhere."""

    def __init__(self, model: nn.Module, forget_features: torch.Tensor) -> None:
        super().__init__()
        self.model, self.forget_features = model, forget_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        forgotten = (x.flatten(1)[:, None, :] == self.forget_features.flatten(1)[None]).all(-1).any(1)
        return torch.where(forgotten[:, None], -logits, logits)


def test_the_original_model_audited_against_itself_fails(digits):
    result = digits.audit({"original": digits.original, "unlearned": digits.original}, attacks=["lr-loss", "loss"])
    assert result.outcome == "failed" and result.passed is False
    status = {v.attack: v.status for v in result.verdicts}
    # The loss attack sees the leak, and so does the two-sided loss ratio (forget loss far below test loss).
    assert status["loss"] == "fail" and status[LOSS_RATIO_CHECK] == "fail"
    ratio = next(v for v in result.verdicts if v.attack == LOSS_RATIO_CHECK)
    assert ratio.ci[1] < 0.5 and "far below (under-forgetting)" in ratio.reason
    # The paper's MIA sees the leak too, but 60 forgotten samples leave its interval wide.
    lr = next(v for v in result.verdicts if v.attack == "lr-loss")
    assert lr.value > 0.55 and lr.ci[0] < lr.value < lr.ci[1]
    loss = next(r for r in result.attacks if (r.attack, r.model, r.population) == ("loss", "unlearned", "forget"))
    assert loss.headline == "auc" and loss.headline_ci[0] > 0.5 and loss.headline_se == loss.metrics.auc_se
    assert "2 of 4 checks fail" in result.outcome_reason and result.conclusive_hint is None


def test_retrained_model_passes_and_the_record_is_complete(digits):
    models = {"original": digits.original, "unlearned": digits.retrained}
    result = digits.audit(models)
    assert result.outcome == "passed" and result.passed, [v.reason for v in result.verdicts if v.status != "pass"]
    assert [v.attack for v in result.verdicts] == [*DEFAULT_ATTACKS, LOSS_RATIO_CHECK, UTILITY_CHECK]
    assert result.verdict_level == pytest.approx(bonferroni_level(0.95, len(DEFAULT_ATTACKS) + 1))
    lr = next(r for r in result.attacks if (r.attack, r.model, r.population) == ("lr-loss", "unlearned", "forget"))
    assert lr.headline == "lr_accuracy" and lr.statistic["chance"] == 0.5 and lr.statistic["spread"] > 0
    assert len(lr.parameters["draw_accuracies"]) == 5 and lr.reference_models == []
    # Every attack on every model, for the forget set and for the retain sample.
    keys = {(r.attack, r.model, r.population) for r in result.attacks}
    assert keys == {(a, m, p) for a in DEFAULT_ATTACKS for m in models for p in ("forget", "retain")}
    # The power: judged on the original, the AUC attacks detect its leak and resolve the margin.
    power = {p.attack: p for p in result.power}
    assert power["loss"].conclusive and power["loss"].minimum_detectable < 0.5 + Policy().detectable_margin
    assert power["loss"].original_ci[0] > 0.5 and "could have failed" in result.outcome_reason
    # Per-sample verdicts: every forgotten ID once, most exposed first, with its loss before and after.
    assert sorted(e.id for e in result.exposures) == sorted(digits.data.ids[digits.forget])
    scores = [e.score for e in result.exposures]
    assert scores == sorted(scores, reverse=True)
    assert all(e.score == -e.loss for e in result.exposures)
    assert sorted(e.original_loss for e in result.exposures) == sorted(result.losses["original"]["forget"])
    assert {u.model for u in result.utility} == set(models)
    assert result.utility[0].retain_accuracy == 1.0 and 0.85 < result.utility[1].test_accuracy < 1.0
    assert len(result.losses["unlearned"]["forget"]) == 60 and {"auc", "epsilon_lower_bound"} <= set(result.methods)
    again = AuditResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert again.to_dict() == json.loads(json.dumps(result.to_dict()))


def test_a_retrained_model_passes_in_at_least_9_of_10_seeds(digits):
    """The audit's false-failure rate on the gold standard: ten forget sets, ten models retrained without them."""
    outcomes = []
    train = digits.data.indices("train")
    for seed in range(10):
        forget = np.sort(np.random.default_rng(100 + seed).choice(train, 60, replace=False))
        retrained = digits.fit(np.setdiff1d(train, forget), seed=seed + 1)
        result = digits.audit({"original": digits.original, "unlearned": retrained}, forget=forget)
        outcomes.append((result.outcome, [v.attack for v in result.verdicts if v.status != "pass"]))
    assert sum(outcome == "passed" for outcome, _ in outcomes) >= 9, outcomes


def test_over_forgetting_is_flagged(digits):
    # The forget set's loss far above unseen data's is itself a membership signal.
    model = ForgetsTooMuch(digits.retrained, digits.data.subset(digits.forget)[0])
    result = digits.audit({"original": digits.original, "unlearned": model}, attacks=["loss", "lr-loss"])
    status = {v.attack: v.status for v in result.verdicts}
    assert result.outcome == "failed"
    assert status == {"loss": "over-forgetting", "lr-loss": "over-forgetting", LOSS_RATIO_CHECK: "over-forgetting",
                      UTILITY_CHECK: "pass"}
    assert "far above" in next(v.reason for v in result.verdicts if v.attack == LOSS_RATIO_CHECK)


class Destroyed(nn.Module):
    """Stands in for a method that wrecked the model: the same uninformative logits for every input."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(x), self.num_classes)


def test_a_destroyed_model_fails_the_utility_check(digits):
    # It leaks nothing, so every privacy verdict passes; only the utility check stands between it and a pass.
    model = Destroyed(digits.data.num_classes)
    result = digits.audit({"original": digits.original, "unlearned": model}, attacks=["loss", "lr-loss"])
    status = {v.attack: v.status for v in result.verdicts}
    assert result.outcome == "failed"
    # Its logits are all equal: the loss attack cannot rank anything and abstains.
    assert status[UTILITY_CHECK] == "fail" and status["loss"] == "abstained"
    utility = next(v for v in result.verdicts if v.attack == UTILITY_CHECK)
    assert utility.value > 0.8 and "test accuracy fell" in utility.reason


def test_reference_attacks_train_once_then_come_from_the_cache(digits, tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    def build():
        return digits.build(widths=(32,))

    trainer = ShadowTrainer(build=build, recipe=TrainRecipe(epochs=15, batch_size=32, lr=3e-3), model_key="mlp 32")
    attacks = [REGISTRY.create("attacks", "loss"), REGISTRY.create("attacks", "lira-offline", references=3),
               REGISTRY.create("attacks", "rmia", references=2)]
    reports: list[Progress] = []
    models = {"original": digits.original, "unlearned": digits.original}
    first = digits.audit(models, attacks=attacks, reference_trainer=trainer, progress=reports.append)
    stages = [r.stage for r in reports]
    announce = stages.index("reference-models")
    assert "3 reference models needed: 3 to train" in reports[announce].message
    assert announce < stages.index("reference model 1/3")
    cached = sorted(cache_dir().glob("*.pt"))
    assert len(cached) == 3 and cache_dir().parent == tmp_path
    # The largest count is trained once, not once per attack (each training reports its own stage).
    assert len({r.stage for r in reports if r.stage.startswith("reference model ")}) == 3
    by_attack = {r.attack: r for r in first.attacks if (r.model, r.population) == ("unlearned", "forget")}
    assert by_attack["lira-offline"].metrics.auc > 0.5 and by_attack["rmia"].metrics.auc > 0.5
    assert {r.population for r in first.attacks if r.attack == "lira-offline"} == {"forget", "retain"}
    # Each attack used exactly the reference models it asked for (RMIA the first 2 of LiRA's 3), and the
    # record names them by the SHA-256 of their weights, as cached.
    lira, rmia = by_attack["lira-offline"].reference_models, by_attack["rmia"].reference_models
    assert len(lira) == 3 and rmia == lira[:2] and by_attack["loss"].reference_models == []
    assert set(lira) == {sha256_file(path) for path in cached}
    assert 0 <= by_attack["rmia"].parameters["a"] <= 1 and "tuned" in by_attack["rmia"].parameters["a_source"]

    reports.clear()
    second = digits.audit(models, attacks=attacks, reference_trainer=trainer, progress=reports.append)
    assert "0 to train" in reports[0].message and not any(r.stage.startswith("reference model ") for r in reports)
    assert second.to_dict() == first.to_dict()

    # A damaged cache entry is retrained and rewritten, never trusted.
    damaged = cached[0]
    damaged.write_bytes(b"not a checkpoint")
    third = digits.audit(models, attacks=attacks, reference_trainer=trainer)
    assert third.to_dict() == first.to_dict() and damaged.read_bytes()[:2] == b"PK"


def test_the_power_is_stated_before_any_unlearned_model_exists(digits):
    # The first phase needs only the original model; its diagnosis reaches the progress callback.
    from auditkit.audit.battery import prepare_audit

    reports: list[Progress] = []
    plan = prepare_audit(data=digits.data, forget=digits.forget[:12], retain=digits.retain,
                         validation=digits.data.indices("validation"), test=digits.data.indices("test"),
                         original=digits.original, attacks=[REGISTRY.create("attacks", a) for a in DEFAULT_ATTACKS],
                         policy=Policy(), seed=0, backend="reference", progress=reports.append)
    announced = next(r.message for r in reports if r.stage == "power" and r.message)
    # 12 forgotten samples: the LR attacks run, but a verdict at 99.4 % only detects AUC ≳ 0.84.
    assert not plan.can_pass and announced == f"the audit will be inconclusive (unless a check fails): {plan.diagnosis}"
    assert all(p.minimum_detectable > 0.8 and not p.conclusive for p in plan.power)
    assert {r.model for r in plan.results} == {"original"}


def judged(value, se, *, headline="auc", statistic=None, df=None, abstained=None):
    low, high = (None, None) if abstained else (value - 1.96 * se, value + 1.96 * se)
    return AttackResult("x", "unlearned", "forget", None, headline, value, (low, high), se, df, statistic,
                        abstained=abstained)


def test_policy_decisions_are_two_sided():
    policy, level = Policy(), 0.95
    assert policy.judge(judged(0.53, 0.03), None, forget_loss_higher=False, level=level).status == "pass"
    assert policy.judge(judged(0.70, 0.04), None, forget_loss_higher=False, level=level).status == "fail"
    within = policy.judge(judged(0.70, 0.04), judged(0.67, 0.04), forget_loss_higher=False, level=level)
    assert within.status == "pass" and within.retrained_value == 0.67
    assert policy.judge(judged(0.70, 0.04), judged(0.60, 0.05), forget_loss_higher=False, level=level).status == "fail"
    assert policy.judge(judged(0.30, 0.04), None, forget_loss_higher=True, level=level).status == "over-forgetting"
    assert policy.judge(judged(0.475, 0.005), None, forget_loss_higher=True, level=level).status == "pass"
    # The LR accuracy has no direction: below chance it passes; above chance the loss gives the direction.
    lr = {"name": "lr_accuracy", "value": 0.7, "chance": 0.5}
    assert policy.judge(judged(0.7, 0.04, statistic=lr), None, forget_loss_higher=True,
                        level=level).status == "over-forgetting"
    assert policy.judge(judged(0.7, 0.04, statistic=lr), None, forget_loss_higher=False, level=level).status == "fail"
    assert policy.judge(judged(0.35, 0.05, statistic=lr), None, forget_loss_higher=False, level=level).status == "pass"
    # An abstaining attack decides nothing.
    silent = policy.judge(judged(None, 0, abstained="one member"), None, forget_loss_higher=False, level=level)
    assert silent.status == "abstained" and silent.value is None and "one member" in silent.reason
    # The loss ratio fails far above (over-forgetting) and far below (under-forgetting), with the direction.
    pivots = np.random.default_rng(0).normal(0, 0.2, 4000)
    far_above = policy.judge_loss_ratio(RatioEstimate(5.0, pivots), None, level=level)
    far_below = policy.judge_loss_ratio(RatioEstimate(0.02, pivots), None, level=level)
    assert far_above.status == "over-forgetting" and "far above" in far_above.reason
    assert far_below.status == "fail" and "far below (under-forgetting)" in far_below.reason
    assert policy.judge_loss_ratio(RatioEstimate(1.1, pivots), None, level=level).status == "pass"
    assert policy.judge_loss_ratio(None, None, level=level).status == "abstained"


def test_judging_several_attacks_widens_each_interval():
    policy = Policy()
    alone = policy.judge(judged(0.54, 0.0175), None, forget_loss_higher=False, level=0.95)
    among_eight = policy.judge(judged(0.54, 0.0175, df=26), None, forget_loss_higher=False,
                               level=policy.verdict_level(8))
    assert alone.status == "fail" and alone.ci == pytest.approx((0.54 - 0.0343, 0.54 + 0.0343), abs=1e-4)
    # Bonferroni over 8: 99.375 % intervals, and a t quantile at 26 df: 2.975 instead of 1.96.
    assert among_eight.ci_level == pytest.approx(0.99375)
    assert among_eight.ci[0] == pytest.approx(0.54 - 0.0175 * 2.97521, abs=1e-5)
    assert among_eight.status == "pass"


def test_policy_loads_from_a_toml_table_and_rejects_bad_settings():
    policy = Policy.from_dict({"retrained_margin": 0.1, "detectable_margin": 0.3, "max_loss_ratio": 3})
    assert policy.retrained_margin == 0.1 and policy.max_loss_ratio == 3.0 and policy.to_dict()["detectable_margin"] == 0.3
    with pytest.raises(InputError, match="unknown policy setting 'margin'") as error:
        Policy.from_dict({"margin": 0.1})
    assert "retrained_margin" in error.value.hint
    with pytest.raises(InputError, match="must be a number"):
        Policy.from_dict({"retrained_margin": "0.1"})
    with pytest.raises(InputError, match="out of range"):
        Policy.from_dict({"exposure_fpr": 1.5})


def test_bad_batteries_fail_before_any_work(digits):
    attacks = [REGISTRY.create("attacks", "lr-loss")]
    with pytest.raises(InputError, match="exposure attack 'loss' is not in the battery"):
        check_battery(attacks, Policy(), has_reference_trainer=False)
    with pytest.raises(InputError, match="need reference models"):
        check_battery([REGISTRY.create("attacks", "loss"), REGISTRY.create("attacks", "rmia")], Policy(),
                      has_reference_trainer=False)
    with pytest.raises(InputError, match="'original' and 'unlearned'"):
        digits.audit({"unlearned": digits.original})
