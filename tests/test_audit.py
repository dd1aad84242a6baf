"""The battery end to end on real data (scikit-learn digits), the policy's decisions, and reference models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from auditkit.audit.battery import DEFAULT_ATTACKS, check_battery, run_audit
from auditkit.audit.policy import LOSS_RATIO_CHECK, UTILITY_CHECK, Policy
from auditkit.audit.reference_models import CACHE_ENV, ReferenceTrainer, cache_dir
from auditkit.audit.results import AttackMetrics, AttackResult, AuditResult
from auditkit.errors import InputError
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

    def audit(self, models, attacks=DEFAULT_ATTACKS, policy=Policy(), **kwargs):
        return run_audit(data=self.data, forget=self.forget, retain=self.retain,
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


def test_original_model_is_flagged(digits):
    result = digits.audit({"original": digits.original, "unlearned": digits.original}, attacks=["lr-loss", "loss"])
    assert not result.passed
    status = {v.attack: v.status for v in result.verdicts}
    assert status["loss"] == "fail" and status[LOSS_RATIO_CHECK] == "pass"
    # The paper's MIA sees the leak too (about 0.6), but 60 forgotten samples leave its interval wide.
    lr = next(v for v in result.verdicts if v.attack == "lr-loss")
    assert lr.value > 0.55 and lr.ci[0] < lr.value < lr.ci[1]
    loss = next(r for r in result.attacks if (r.attack, r.model, r.population) == ("loss", "unlearned", "forget"))
    assert loss.headline == "auc" and loss.headline_ci[0] > 0.5


def test_retrained_model_passes_and_the_record_is_complete(digits):
    models = {"original": digits.original, "unlearned": digits.retrained}
    result = digits.audit(models)
    assert result.passed, [v.reason for v in result.verdicts if v.status != "pass"]
    assert [v.attack for v in result.verdicts] == [*DEFAULT_ATTACKS, LOSS_RATIO_CHECK, UTILITY_CHECK]
    lr = next(r for r in result.attacks if (r.attack, r.model, r.population) == ("lr-loss", "unlearned", "forget"))
    assert lr.headline == "lr_accuracy" and lr.statistic["chance"] == 0.5
    # Every attack on every model, for the forget set and for the retain sample.
    keys = {(r.attack, r.model, r.population) for r in result.attacks}
    assert keys == {(a, m, p) for a in DEFAULT_ATTACKS for m in models for p in ("forget", "retain")}
    # Per-sample verdicts: every forgotten ID once, most exposed first.
    assert sorted(e.id for e in result.exposures) == sorted(digits.data.ids[digits.forget])
    scores = [e.score for e in result.exposures]
    assert scores == sorted(scores, reverse=True)
    assert {u.model for u in result.utility} == set(models)
    assert result.utility[0].retain_accuracy == 1.0 and 0.85 < result.utility[1].test_accuracy < 1.0
    assert len(result.losses["unlearned"]["forget"]) == 60
    again = AuditResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert again.to_dict() == json.loads(json.dumps(result.to_dict()))


def test_over_forgetting_is_flagged(digits):
    # The forget set's loss far above unseen data's is itself a membership signal.
    model = ForgetsTooMuch(digits.retrained, digits.data.subset(digits.forget)[0])
    result = digits.audit({"original": digits.original, "unlearned": model}, attacks=["loss", "lr-loss"])
    status = {v.attack: v.status for v in result.verdicts}
    assert not result.passed
    assert status == {"loss": "over-forgetting", "lr-loss": "over-forgetting", LOSS_RATIO_CHECK: "over-forgetting",
                      UTILITY_CHECK: "pass"}


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
    assert not result.passed
    assert status[UTILITY_CHECK] == "fail" and status["loss"] == "pass"
    utility = next(v for v in result.verdicts if v.attack == UTILITY_CHECK)
    assert utility.value > 0.8 and "test accuracy fell" in utility.reason


def test_reference_attacks_train_once_then_come_from_the_cache(digits, tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    builds = []

    def build():
        builds.append(1)
        return digits.build(widths=(32,))

    trainer = ReferenceTrainer(build=build, recipe=TrainRecipe(epochs=15, batch_size=32, lr=3e-3), model_key="mlp 32")
    attacks = [REGISTRY.create("attacks", "loss"), REGISTRY.create("attacks", "lira-offline", references=3),
               REGISTRY.create("attacks", "rmia", references=3)]
    reports: list[Progress] = []
    models = {"original": digits.original, "unlearned": digits.original}
    first = digits.audit(models, attacks=attacks, reference_trainer=trainer, progress=reports.append)
    stages = [r.stage for r in reports]
    announce = stages.index("reference-models")
    assert "3 reference models needed: 3 to train" in reports[announce].message
    assert announce < stages.index("reference model 1/3")
    assert len(list(cache_dir().glob("*.pt"))) == 3 and cache_dir().parent == tmp_path
    assert len(builds) == 3
    by_attack = {r.attack: r for r in first.attacks if (r.model, r.population) == ("unlearned", "forget")}
    assert by_attack["lira-offline"].metrics.auc > 0.5 and by_attack["rmia"].metrics.auc > 0.5
    assert {r.population for r in first.attacks if r.attack == "lira-offline"} == {"forget", "retain"}

    reports.clear()
    second = digits.audit(models, attacks=attacks, reference_trainer=trainer, progress=reports.append)
    assert "0 to train" in reports[0].message and not any(r.stage.startswith("reference model ") for r in reports)
    assert len(builds) == 6  # loaded into freshly built models, not retrained
    assert second.to_dict() == first.to_dict()

    # A damaged cache entry is retrained and rewritten, never trusted.
    damaged = sorted(cache_dir().glob("*.pt"))[0]
    damaged.write_bytes(b"not a checkpoint")
    third = digits.audit(models, attacks=attacks, reference_trainer=trainer)
    assert third.to_dict() == first.to_dict() and damaged.read_bytes()[:2] == b"PK"


def judged(value, ci, *, headline="auc", statistic=None):
    metrics = AttackMetrics(0.5, (0.4, 0.6), 0.5, (0.5, 0.6), 0.0, 0.0, 0.0, 0.0, 10, 10)
    return AttackResult("x", "unlearned", "forget", metrics, headline, value, ci, statistic)


def test_policy_decisions_are_two_sided():
    policy = Policy()
    assert policy.judge(judged(0.53, (0.47, 0.59)), None, forget_loss_higher=False).status == "pass"
    assert policy.judge(judged(0.70, (0.62, 0.78)), None, forget_loss_higher=False).status == "fail"
    within = policy.judge(judged(0.70, (0.62, 0.78)), judged(0.67, (0.6, 0.74)), forget_loss_higher=False)
    assert within.status == "pass" and within.reference_value == 0.67
    assert policy.judge(judged(0.70, (0.62, 0.78)), judged(0.60, (0.5, 0.7)), forget_loss_higher=False).status == "fail"
    assert policy.judge(judged(0.30, (0.22, 0.38)), None, forget_loss_higher=True).status == "over-forgetting"
    assert policy.judge(judged(0.47, (0.46, 0.49)), None, forget_loss_higher=True).status == "pass"
    # The LR accuracy has no direction: below chance it passes; above chance the loss gives the direction.
    lr = {"name": "lr_accuracy", "value": 0.7, "ci_low": 0.62, "ci_high": 0.78, "chance": 0.5}
    assert policy.judge(judged(0.7, (0.62, 0.78), statistic=lr), None, forget_loss_higher=True).status == "over-forgetting"
    assert policy.judge(judged(0.7, (0.62, 0.78), statistic=lr), None, forget_loss_higher=False).status == "fail"
    assert policy.judge(judged(0.35, (0.25, 0.45), statistic=lr), None, forget_loss_higher=False).status == "pass"
    assert policy.judge_loss_ratio(5.0, (2.5, 9.0), None, level=0.95).status == "over-forgetting"
    assert policy.judge_loss_ratio(5.0, (1.5, 9.0), None, level=0.95).status == "pass"


def test_judging_several_attacks_widens_each_interval():
    policy = Policy()
    alone = policy.judge(judged(0.54, (0.505, 0.575)), None, forget_loss_higher=False)
    among_eight = policy.judge(judged(0.54, (0.505, 0.575)), None, forget_loss_higher=False, judged=8)
    assert alone.status == "fail" and alone.ci == (0.505, 0.575) and alone.ci_level == 0.95
    # Bonferroni over 8: 99.375 % intervals, z = 2.734 instead of 1.960.
    assert among_eight.ci_level == pytest.approx(0.99375)
    assert among_eight.ci[0] == pytest.approx(0.54 - 0.035 * 2.7344 / 1.96, abs=1e-3)
    assert among_eight.status == "pass"


def test_policy_loads_from_a_toml_table_and_rejects_bad_settings():
    policy = Policy.from_dict({"retrained_margin": 0.1, "bootstrap_rounds": 500, "max_loss_ratio": 3})
    assert policy.retrained_margin == 0.1 and policy.max_loss_ratio == 3.0 and policy.to_dict()["bootstrap_rounds"] == 500
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
