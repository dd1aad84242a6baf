"""The audit's result objects: plain dataclasses that serialise to JSON and that the report renders.

Bump :data:`SCHEMA_VERSION` whenever a field changes meaning or disappears.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

SCHEMA_VERSION = 2

OUTCOMES = ("passed", "failed", "inconclusive")
"""An audit's possible outcomes (see :meth:`auditkit.audit.policy.Policy.decide`)."""


@dataclass
class AttackMetrics:
    """Threshold-free and fixed-FPR metrics of one attack's per-sample scores (members vs non-members).

    ``auc`` (higher = more leakage, 0.5 = chance) with DeLong's standard error ``auc_se``, its
    Welch–Satterthwaite ``auc_df`` and the 95 % interval ``auc_ci``. ``balanced_accuracy``: at the best
    threshold, chosen on the same rows (optimistic, descriptive only). ``tpr_at_1pct_fpr`` /
    ``tpr_at_01pct_fpr``: TPR at the threshold only that share of non-members exceed, with exact 95 %
    Clopper–Pearson intervals. ``advantage``: max |TPR − FPR|. ``epsilon_lower_bound``: empirical ε at
    δ = 1e-5, threshold chosen on one seeded half and bounded on the other (see the audit's ``methods``).
    ``roc_fpr``/``roc_tpr``: a down-sampled ROC curve for plotting.
    """

    auc: float
    auc_ci: tuple[float, float]
    auc_se: float
    auc_df: float
    balanced_accuracy: float
    tpr_at_1pct_fpr: float
    tpr_at_1pct_fpr_ci: tuple[float, float]
    tpr_at_01pct_fpr: float
    tpr_at_01pct_fpr_ci: tuple[float, float]
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
    ``"lr_accuracy"``), with its value, 95 % interval, standard error and degrees of freedom (intervals
    at other levels are ``value ± t(df)·se``). ``abstained`` is None or why the attack could not decide
    (then the headline is None): e.g. one member, or scores that are all equal. ``metrics`` is None when
    the per-sample scores cannot be ranked. ``minimum_detectable`` is the smallest headline a verdict at
    the audit's confidence detects with 80 % power at these sizes (None: nothing is detectable).
    ``reference_models`` lists the SHA-256 of each reference model the attack used (its first K of the
    battery's, then its unlearned shadows'), ``parameters`` every parameter it tuned or resolved (e.g. RMIA's
    ``a``). ``per_example``: a per-example attack's (u-lira's) decision on each member ID, a list of
    ``{"id", "score", "p_value", "flagged"}``; None for population attacks.
    """

    attack: str
    model: str
    population: str
    metrics: AttackMetrics | None
    headline: str
    headline_value: float | None
    headline_ci: tuple[float, float] | None
    headline_se: float | None = None
    headline_df: float | None = None
    statistic: dict[str, Any] | None = None
    abstained: str | None = None
    minimum_detectable: float | None = None
    reference_models: list[str] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)
    per_example: list[dict[str, Any]] | None = None


@dataclass
class Verdict:
    """The policy's decision on one check of the unlearned model.

    ``status``: ``"pass"``, ``"fail"`` (still leaks membership, or the forget loss is far *below* the
    test loss), ``"over-forgetting"`` (the forget set now looks *less* like members than unseen data,
    itself a signal) or ``"abstained"`` (the check cannot decide at this size; ``value`` is then None).
    ``ci`` is the interval the policy judged, at confidence ``ci_level`` (Bonferroni over the checks).
    ``retrained_value`` is the retrained model's value of the same check, when one was audited.
    """

    attack: str
    status: str
    value: float | None
    ci: tuple[float, float] | None
    retrained_value: float | None
    reason: str
    ci_level: float = 0.95


@dataclass
class PowerRow:
    """Could this attack have failed the audit? Judged on the original model, before any unlearning.

    ``minimum_detectable``: the smallest headline (AUC or the attack's statistic) it detects with 80 %
    power at the verdict confidence and this request's sizes. ``detects_original``: its interval on the
    original model's forget-vs-test lies above chance in the member direction. ``resolves_margin``:
    ``minimum_detectable`` is within the policy's ``detectable_margin`` of chance. ``conclusive`` = both,
    i.e. a pass of this attack is evidence; ``abstained`` says why it gives no evidence at all.
    """

    attack: str
    headline: str
    chance: float
    minimum_detectable: float | None
    original_value: float | None
    original_ci: tuple[float, float] | None
    detects_original: bool
    resolves_margin: bool
    conclusive: bool
    abstained: str | None = None


@dataclass
class SampleExposure:
    """One forgotten ID under the policy's exposure attack on the unlearned model.

    ``loss`` (and ``original_loss``) are its cross-entropy under the unlearned (original) model;
    ``score`` the attack's membership score; ``exceeds_1pct_fpr`` whether the score is above the
    threshold that only the policy's ``exposure_fpr`` (1 %) of test samples exceed.
    """

    id: str
    score: float
    loss: float
    original_loss: float
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
    """Everything the audit found.

    ``outcome`` is ``"passed"``, ``"failed"`` or ``"inconclusive"`` (see :data:`OUTCOMES`), with
    ``outcome_reason`` (why) and ``conclusive_hint`` (what would make an inconclusive audit conclusive,
    else None); ``passed`` is True / False / None for passed / failed / inconclusive. ``power`` says per
    judged attack whether it could have failed the audit; ``verdict_level`` is the confidence of each
    verdict interval; ``methods`` says how each statistic was computed.
    """

    outcome: str
    outcome_reason: str
    conclusive_hint: str | None
    passed: bool | None
    policy: dict[str, Any]
    verdict_level: float
    attacks: list[AttackResult]
    verdicts: list[Verdict]
    power: list[PowerRow]
    utility: list[UtilityRow]
    exposure_attack: str
    exposures: list[SampleExposure]
    losses: dict[str, dict[str, list[float]]]
    methods: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AuditResult:
        values = dict(data)
        values["attacks"] = [
            AttackResult(**{**a, "metrics": AttackMetrics(**a["metrics"]) if a["metrics"] is not None else None})
            for a in data["attacks"]
        ]
        values["verdicts"] = [Verdict(**v) for v in data["verdicts"]]
        values["power"] = [PowerRow(**p) for p in data["power"]]
        values["utility"] = [UtilityRow(**u) for u in data["utility"]]
        values["exposures"] = [SampleExposure(**e) for e in data["exposures"]]
        return cls(**values)


FLAGGED_SHARE = "flagged_share"
"""The headline of a per-example attack (the share of forgotten IDs it flags), as u-lira names it."""

HEADLINE_LABELS = {"auc": "AUC", "lr_accuracy": "LR accuracy", FLAGGED_SHARE: "flagged share"}
"""How headlines are named for people; an attack's own statistic keeps its name."""


def power_summary(audit: dict[str, Any]) -> str:
    """One sentence on what the battery could detect at this request's size, from a recorded audit (a dict)."""
    by_headline: dict[str, float | None] = {}
    for row in audit["power"]:
        if not row["abstained"]:
            by_headline.setdefault(row["headline"], row["minimum_detectable"])
    parts = [("any single exposed ID (u-lira)" if name == FLAGGED_SHARE else
              f"{HEADLINE_LABELS.get(name, name)} ≥ {value:.3f}") if value is not None
             else f"no {HEADLINE_LABELS.get(name, name)} at all" for name, value in by_headline.items()]
    detectors = [row["attack"] for row in audit["power"] if row["detects_original"]]
    losses = audit["losses"]["original"]
    detected = (f"; on the original model {', '.join(detectors)} detect{'s' if len(detectors) == 1 else ''} the leak"
                if detectors else "; no attack detects a leak on the original model")
    return (f"the battery detects {', '.join(parts) or 'nothing (every attack abstains)'} with "
            f"{len(losses['forget']):,} forgotten vs {len(losses['test']):,} test samples "
            f"(80 % power, {audit['verdict_level']:.1%} intervals){detected}")
