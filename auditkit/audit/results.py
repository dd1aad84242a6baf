"""The audit's result objects: plain dataclasses that serialise to JSON and that the report renders.

Bump :data:`SCHEMA_VERSION` whenever a field changes meaning or disappears.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

SCHEMA_VERSION = 1


@dataclass
class AttackMetrics:
    """Threshold-free and fixed-FPR metrics of one attack's scores (members vs non-members).

    ``auc`` and ``balanced_accuracy``: higher = more leakage, 0.5 = chance; ``*_ci`` are bootstrap 95 %
    intervals. ``tpr_at_1pct_fpr`` / ``tpr_at_01pct_fpr``: higher = more leakage. ``advantage``:
    max |TPR − FPR|. ``epsilon_lower_bound``: empirical ε at δ = 1e-5. ``roc_fpr``/``roc_tpr``: a
    down-sampled ROC curve for plotting.
    """

    auc: float
    auc_ci: tuple[float, float]
    balanced_accuracy: float
    balanced_accuracy_ci: tuple[float, float]
    tpr_at_1pct_fpr: float
    tpr_at_01pct_fpr: float
    advantage: float
    epsilon_lower_bound: float
    n_members: int
    n_nonmembers: int
    roc_fpr: list[float] = field(default_factory=list)
    roc_tpr: list[float] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class AttackResult:
    """One attack on one model and one member population (``"forget"`` or ``"retain"``) vs the test split.

    ``headline`` names the number the policy judges (``"auc"`` or the attack's own statistic such as
    ``"lr_accuracy"``), with its value and interval.
    """

    attack: str
    model: str
    population: str
    metrics: AttackMetrics
    headline: str
    headline_value: float
    headline_ci: tuple[float, float]
    statistic: dict[str, Any] | None = None


@dataclass
class Verdict:
    """The policy's decision for one attack on the unlearned model's forget set.

    ``status``: ``"pass"``, ``"fail"`` (still leaks membership) or ``"over-forgetting"`` (the forget set
    now looks *less* like members than unseen data, itself a signal). ``ci`` is the interval the policy
    judged, at confidence ``ci_level`` (wider than the attack's 95 % when the policy corrects for
    judging several attacks at once).
    """

    attack: str
    status: str
    value: float
    ci: tuple[float, float]
    reference_value: float | None
    reason: str
    ci_level: float = 0.95


@dataclass
class SampleExposure:
    """One forgotten ID's membership score under one attack on the unlearned model."""

    id: str
    score: float
    exceeds_1pct_fpr: bool


@dataclass
class UtilityRow:
    """Top-1 accuracy of one model on the retain, forget and test sets."""

    model: str
    retain_accuracy: float
    forget_accuracy: float
    test_accuracy: float


@dataclass
class AuditResult:
    """Everything the audit found; ``passed`` is the overall verdict under ``policy``."""

    passed: bool
    policy: dict[str, Any]
    attacks: list[AttackResult]
    verdicts: list[Verdict]
    utility: list[UtilityRow]
    exposure_attack: str
    exposures: list[SampleExposure]
    losses: dict[str, dict[str, list[float]]]
    warnings: list[str] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AuditResult:
        values = dict(data)
        values["attacks"] = [
            AttackResult(**{**a, "metrics": AttackMetrics(**a["metrics"])}) for a in data["attacks"]
        ]
        values["verdicts"] = [Verdict(**v) for v in data["verdicts"]]
        values["utility"] = [UtilityRow(**u) for u in data["utility"]]
        values["exposures"] = [SampleExposure(**e) for e in data["exposures"]]
        return cls(**values)
