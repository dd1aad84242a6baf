"""The audit policy: how the battery's results become pass / fail / over-forgetting verdicts."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scipy.stats import norm

from auditkit.audit.results import AttackResult, Verdict
from auditkit.errors import InputError

LOSS_RATIO_CHECK = "forget-loss-ratio"
"""Name of the verdict comparing the forget set's mean loss with the test split's."""
UTILITY_CHECK = "test-accuracy-drop"
"""Name of the verdict on the fall in test accuracy."""


@dataclass(frozen=True)
class Policy:
    """How the audit decides; the ``[policy]`` table of auditkit.toml maps onto these fields.

    Each attack's headline on the unlearned model (forget set vs test split) passes when its interval
    contains chance (0.5), or, when a retrained model is audited too, when it lies within
    ``retrained_margin`` of the retrained model's value. An AUC whose whole interval lies below chance,
    by at least ``over_forgetting_margin``, is over-forgetting. An attack's own statistic (the LR
    accuracy) has no direction, since the classifier learns either sign: below chance it passes, and
    above chance it counts as over-forgetting when the forget set's mean loss exceeds the test split's.
    Any other miss is a fail. The ``forget-loss-ratio`` check flags over-forgetting when even the low end
    of the bootstrap interval of mean forget loss / mean test loss exceeds ``max_loss_ratio``. The
    ``test-accuracy-drop`` check fails a model whose test accuracy fell more than
    ``max_test_accuracy_drop`` below the original's: a destroyed model leaks nothing, and must not pass.

    Several attacks are judged at once, so with ``confidence`` = 0.95 each of the k verdict intervals is
    widened from 95 % to 1 − 0.05/k (Bonferroni): a model retrained without the forget set then fails
    by chance in at most about 5 % of audits, instead of once per few audits.

    Attributes:
        confidence: family-wise confidence of the verdicts (1 − the tolerated chance of failing a retrain).
        retrained_margin: largest |unlearned − retrained| headline difference that still passes.
        over_forgetting_margin: how far below chance a headline must be to count as over-forgetting.
        max_loss_ratio: mean forget loss over mean test loss above which the forget set was over-forgotten.
        max_test_accuracy_drop: largest fall in test accuracy (original − unlearned, as a fraction) that passes.
        retain_sample_size: how many retain samples are audited (seeded sample; utility uses them too).
        bootstrap_rounds: bootstrap replicates behind every AUC / accuracy interval.
        exposure_attack: the attack that scores each forgotten ID.
        exposure_fpr: the FPR, on the test split, of the threshold a forgotten ID is flagged above.
    """

    confidence: float = 0.95
    retrained_margin: float = 0.05
    over_forgetting_margin: float = 0.05
    max_loss_ratio: float = 2.0
    max_test_accuracy_drop: float = 0.05
    retain_sample_size: int = 1000
    bootstrap_rounds: int = 500
    exposure_attack: str = "loss"
    exposure_fpr: float = 0.01

    def __post_init__(self) -> None:
        checks = {
            "confidence": 0.5 <= self.confidence < 1,
            "retrained_margin": 0 <= self.retrained_margin < 0.5,
            "over_forgetting_margin": 0 <= self.over_forgetting_margin < 0.5,
            "max_loss_ratio": self.max_loss_ratio > 1,
            "max_test_accuracy_drop": 0 <= self.max_test_accuracy_drop <= 1,
            "retain_sample_size": self.retain_sample_size >= 10,
            "bootstrap_rounds": self.bootstrap_rounds >= 50,
            "exposure_fpr": 0 < self.exposure_fpr < 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise InputError(f"policy {name} = {getattr(self, name)!r} is out of range",
                                 hint=f"the default is {_DEFAULTS[name]!r}; see the [policy] table in the README")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Policy:
        """Build from the ``[policy]`` table of auditkit.toml; unknown keys and wrong types are input errors."""
        unknown = sorted(set(values) - set(_DEFAULTS))
        if unknown:
            raise InputError(f"unknown policy setting {unknown[0]!r}", hint=f"valid settings: {', '.join(_DEFAULTS)}")
        converted = {}
        for name, value in values.items():
            kind = type(_DEFAULTS[name])
            if isinstance(value, bool) or not isinstance(value, (kind, int) if kind is float else kind):
                raise InputError(f"policy {name} must be a {_TYPE_NAMES[kind]}, got {value!r}",
                                 hint=f"for example {name} = {_DEFAULTS[name]!r}")
            converted[name] = kind(value)
        return cls(**converted)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def verdict_level(self, judged: int) -> float:
        """The confidence of each of ``judged`` verdict intervals (Bonferroni)."""
        return 1 - (1 - self.confidence) / judged

    def judge(
        self, result: AttackResult, retrained: AttackResult | None, *, forget_loss_higher: bool, judged: int = 1
    ) -> Verdict:
        """Decide one attack from its unlearned forget-vs-test ``result`` (and the retrained model's, if any).

        ``forget_loss_higher`` (mean forget loss above mean test loss) gives the direction of an attack's
        own statistic; ``judged`` is how many verdicts the audit gives (the Bonferroni family size). The
        attack's 95 % interval is widened around the value by the ratio of normal quantiles.
        """
        chance = result.statistic["chance"] if result.statistic else 0.5
        value = result.headline_value
        level = self.verdict_level(judged)
        stretch = norm.ppf(0.5 + level / 2) / norm.ppf(0.975)
        low = value - stretch * (value - result.headline_ci[0])
        high = value + stretch * (result.headline_ci[1] - value)
        reference = retrained.headline_value if retrained is not None else None
        interval = f"{_interval(low, high)} ({level:.1%})"
        if low <= chance <= high:
            status, reason = "pass", f"indistinguishable from chance: {interval} contains {chance:g}"
        elif reference is not None and abs(value - reference) <= self.retrained_margin:
            status, reason = "pass", f"within {self.retrained_margin:g} of the retrained model's {reference:.3f}"
        elif high < chance and result.statistic:
            status, reason = "pass", f"no better than chance: {interval} lies below {chance:g}"
        elif high < chance:
            if chance - value >= self.over_forgetting_margin:
                status = "over-forgetting"
                reason = f"the forget set looks less like members than unseen data: {interval} lies below {chance:g}"
            else:
                status = "pass"
                reason = (f"slightly below chance ({value:.3f}), within the over-forgetting margin "
                          f"{self.over_forgetting_margin:g}")
        elif result.statistic and forget_loss_higher:
            status = "over-forgetting"
            reason = (f"distinguishable ({interval} above chance {chance:g}) because the forget set's "
                      "losses are higher than unseen data's")
        else:
            status = "fail"
            reason = f"members still distinguishable: {interval} lies above chance {chance:g}"
        return Verdict(result.attack, status, value, (low, high), reference, reason, level)

    def judge_loss_ratio(self, ratio: float, ci: tuple[float, float], reference: float | None, *, level: float) -> Verdict:
        """The ``forget-loss-ratio`` check: over-forgetting when the whole interval exceeds ``max_loss_ratio``."""
        if ci[0] > self.max_loss_ratio:
            status = "over-forgetting"
            reason = (f"the forget set's mean loss is {ratio:.2f}× the test split's "
                      f"({_interval(*ci)} at {level:.1%} > {self.max_loss_ratio:g})")
        else:
            status = "pass"
            reason = f"mean forget loss / mean test loss = {ratio:.2f}, not above {self.max_loss_ratio:g}"
        return Verdict(LOSS_RATIO_CHECK, status, ratio, ci, reference, reason, level)

    def judge_utility(self, original: float, unlearned: float, retrained: float | None) -> Verdict:
        """The ``test-accuracy-drop`` check on test accuracies (fractions); the retrained model's drop is context."""
        drop = original - unlearned
        reference = original - retrained if retrained is not None else None
        if drop > self.max_test_accuracy_drop:
            status = "fail"
            reason = (f"test accuracy fell {drop:.1%} (from {original:.1%} to {unlearned:.1%}), "
                      f"more than the {self.max_test_accuracy_drop:.1%} the policy allows")
        else:
            status = "pass"
            reason = f"test accuracy {original:.1%} → {unlearned:.1%}, within {self.max_test_accuracy_drop:.1%}"
        return Verdict(UTILITY_CHECK, status, drop, (drop, drop), reference, reason, 1.0)


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Policy)}
_TYPE_NAMES = {float: "number", int: "whole number", str: "string"}


def _interval(low: float, high: float) -> str:
    return f"[{low:.3f}, {high:.3f}]"
