"""The audit policy: how the battery's results become verdicts, and the verdicts an outcome.

An audit ends ``passed``, ``failed`` or ``inconclusive`` (:meth:`Policy.decide`). A leak found is
conclusive evidence, so any failing check fails the audit. A pass needs more than checks that pass:
at least one attack must have been able to fail it, i.e. it detects leakage on the *original* model's
forget set (before unlearning there was something to find) and its minimum detectable effect at this
request size is within the policy's ``detectable_margin`` of chance. Otherwise the audit had no power
and says so: inconclusive, with why and what would make it conclusive.

A per-example attack (u-lira: a result with ``per_example``) is judged by its flags instead: it fails the
audit when it flags any forgotten ID on the unlearned model, and it could have failed it when it flags
the original model's forgotten IDs, at any request size. Its flags come from Benjamini–Hochberg at
``min(fdr, 1 − level)``, ``level`` the Bonferroni share of ``confidence`` that every check gets, so a
model that never saw the IDs is flagged with probability at most 1 − level and the audit's family-wise
error stays within 1 − ``confidence``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from scipy.stats import norm

from auditkit.audit.results import FLAGGED_SHARE, HEADLINE_LABELS, AttackResult, PowerRow, Verdict
from auditkit.audit.stats import RatioEstimate, bonferroni_level, members_needed, t_interval
from auditkit.errors import InputError

LOSS_RATIO_CHECK = "forget-loss-ratio"
"""Name of the verdict comparing the forget set's mean loss with the test split's."""
UTILITY_CHECK = "test-accuracy-drop"
"""Name of the verdict on the fall in test accuracy."""
FAILING = ("fail", "over-forgetting")
"""Verdict statuses that fail an audit."""
REFERENCE_ATTACKS = "lira-offline, rmia, u-lira"
"""The built-in attacks with reference models, named in hints."""
PER_EXAMPLE_HINT = ("u-lira (--attacks loss,u-lira) decides each forgotten ID on its own, at any request size, "
                    "even one ID, at the cost of K shadow trainings and K/2 unlearning runs")
"""Named in the hints of an audit that a population attack cannot decide."""


def headline_interval(result: AttackResult, level: float) -> tuple[float, float]:
    """The interval of ``result``'s headline at two-sided confidence ``level``.

    ``value ± t(df)·se`` when the result carries a standard error (the AUC's DeLong SE, the LR attack's
    corrected resampled SE); otherwise (a third-party statistic with only a 95 % interval) that interval
    widened about the value by the ratio of normal quantiles. AUC intervals are clipped to [0, 1].
    """
    value = result.headline_value
    if result.headline_se is not None:
        low, high = t_interval(value, result.headline_se, result.headline_df, level)
    else:
        stretch = norm.ppf(0.5 + level / 2) / norm.ppf(0.975)
        low = value - stretch * (value - result.headline_ci[0])
        high = value + stretch * (result.headline_ci[1] - value)
    if result.headline == "auc":
        low, high = max(low, 0.0), min(high, 1.0)
    return float(low), float(high)


def headline_label(name: str) -> str:
    """How a headline is named in messages: ``AUC``, ``LR accuracy``, or an attack's own statistic name."""
    return HEADLINE_LABELS.get(name, name)


def chance_of(result: AttackResult) -> float:
    """The headline's value at chance (0.5 for an AUC, the statistic's own ``chance`` otherwise)."""
    return float(result.statistic["chance"]) if result.statistic else 0.5


@dataclass(frozen=True)
class Policy:
    """How the audit decides; the ``[policy]`` table of auditkit.toml maps onto these fields.

    Each attack's headline on the unlearned model (forget set vs test split) passes when its interval
    contains chance (0.5), or, when a retrained model is audited too, when it lies within
    ``retrained_margin`` of the retrained model's value. An AUC whose whole interval lies below chance,
    by at least ``over_forgetting_margin``, is over-forgetting. An attack's own statistic (the LR
    accuracy) has no direction, since the classifier learns either sign: below chance it passes, and
    above chance it counts as over-forgetting when the forget set's mean loss exceeds the test split's.
    Any other miss is a fail. The ``forget-loss-ratio`` check (mean forget loss / mean test loss) is
    over-forgetting when its whole interval lies above ``max_loss_ratio``, and fails (under-forgetting:
    the forgotten samples still fit far better than unseen data) when it lies below ``min_loss_ratio``.
    The ``test-accuracy-drop`` check fails a model whose test accuracy fell more than
    ``max_test_accuracy_drop`` below the original's: a destroyed model leaks nothing, and must not pass.

    Several checks are judged at once, so with ``confidence`` = 0.95 each of the k verdict intervals is
    widened from 95 % to 1 − 0.05/k (Bonferroni): a model retrained without the forget set then fails
    by chance in at most about 5 % of audits, instead of once per few audits.

    Attributes:
        confidence: family-wise confidence of the verdicts (1 − the tolerated chance of failing a retrain).
        retrained_margin: largest |unlearned − retrained| headline difference that still passes.
        over_forgetting_margin: how far below chance a headline must be to count as over-forgetting.
        max_loss_ratio: mean forget loss over mean test loss above which the forget set was over-forgotten.
        min_loss_ratio: mean forget loss over mean test loss below which it was not forgotten.
        max_test_accuracy_drop: largest fall in test accuracy (original − unlearned, as a fraction) that passes.
        detectable_margin: a pass needs an attack that detects, with 80 % power, a leak this far above
            chance (AUC 0.5 + margin, or the attack's statistic) at the request's size.
        retain_sample_size: how many retain samples are audited (seeded sample; utility uses them too).
        exposure_attack: the attack that scores each forgotten ID.
        exposure_fpr: the FPR, on the test split, of the threshold a forgotten ID is flagged above.
    """

    confidence: float = 0.95
    retrained_margin: float = 0.05
    over_forgetting_margin: float = 0.05
    max_loss_ratio: float = 2.0
    min_loss_ratio: float = 0.5
    max_test_accuracy_drop: float = 0.05
    detectable_margin: float = 0.25
    retain_sample_size: int = 1000
    exposure_attack: str = "loss"
    exposure_fpr: float = 0.01

    def __post_init__(self) -> None:
        checks = {
            "confidence": 0.5 <= self.confidence < 1,
            "retrained_margin": 0 <= self.retrained_margin < 0.5,
            "over_forgetting_margin": 0 <= self.over_forgetting_margin < 0.5,
            "max_loss_ratio": self.max_loss_ratio > 1,
            "min_loss_ratio": 0 < self.min_loss_ratio < 1,
            "max_test_accuracy_drop": 0 <= self.max_test_accuracy_drop <= 1,
            "detectable_margin": 0 < self.detectable_margin < 0.5,
            "retain_sample_size": self.retain_sample_size >= 10,
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
        return bonferroni_level(self.confidence, judged)

    def judge(
        self, result: AttackResult, retrained: AttackResult | None, *, forget_loss_higher: bool, level: float
    ) -> Verdict:
        """Decide one attack from its unlearned forget-vs-test ``result`` (and the retrained model's, if any).

        ``forget_loss_higher`` (mean forget loss above mean test loss) gives the direction of an attack's
        own statistic; ``level`` is each verdict's confidence (Bonferroni over the audit's checks).
        """
        reference = retrained.headline_value if retrained is not None and not retrained.abstained else None
        if result.abstained:
            return Verdict(result.attack, "abstained", None, None, reference, f"abstained: {result.abstained}", level)
        if result.per_example is not None:
            return _judge_per_example(result, reference, level)
        chance = chance_of(result)
        value = result.headline_value
        low, high = headline_interval(result, level)
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

    def judge_loss_ratio(self, estimate: RatioEstimate | None, reference: float | None, *, level: float) -> Verdict:
        """The two-sided ``forget-loss-ratio`` check; ``estimate`` is None when the forget set has one sample."""
        if estimate is None:
            return Verdict(LOSS_RATIO_CHECK, "abstained", None, None, reference,
                           "abstained: a ratio of mean losses needs at least 2 forgotten samples for an interval",
                           level)
        ratio = estimate.ratio
        low, high = estimate.interval(level)
        interval = f"{_interval(low, high)} at {level:.1%}"
        if low > self.max_loss_ratio:
            status = "over-forgetting"
            reason = (f"far above: the forget set's mean loss is {ratio:.2f}× the test split's "
                      f"({interval} > {self.max_loss_ratio:g})")
        elif high < self.min_loss_ratio:
            status = "fail"
            reason = (f"far below (under-forgetting): the forget set's mean loss is {ratio:.3g}× the test split's "
                      f"({interval} < {self.min_loss_ratio:g}): the model still fits the forgotten samples "
                      "far better than unseen data")
        else:
            status = "pass"
            reason = (f"mean forget loss / mean test loss = {ratio:.2f} ({interval}), not outside "
                      f"[{self.min_loss_ratio:g}, {self.max_loss_ratio:g}]")
        return Verdict(LOSS_RATIO_CHECK, status, ratio, (low, high), reference, reason, level)

    def power(self, original: AttackResult, *, level: float, forget_loss_higher: bool) -> PowerRow:
        """Could this attack have failed the audit? From its result on the original model's forget set.

        ``forget_loss_higher`` is the original model's direction (an LR accuracy above chance counts as
        detected leakage only when the forget set's losses are the lower ones).
        """
        chance = chance_of(original)
        if original.abstained:
            return PowerRow(original.attack, original.headline, chance, original.minimum_detectable, None, None,
                            False, False, False, original.abstained)
        if original.per_example is not None:
            # One flag fails the verdict at any request size, so no margin is needed: the attack could have
            # failed the audit exactly when it flags the original model's forgotten IDs.
            detects = any(row["flagged"] for row in original.per_example)
            return PowerRow(original.attack, original.headline, chance, original.minimum_detectable,
                            original.headline_value, original.headline_ci, detects, True, detects)
        low, high = headline_interval(original, level)
        detects = low > chance and (original.statistic is None or not forget_loss_higher)
        detectable = original.minimum_detectable
        resolves = detectable is not None and detectable - chance <= self.detectable_margin + 1e-12
        return PowerRow(original.attack, original.headline, chance, detectable, original.headline_value,
                        (low, high), detects, resolves, detects and resolves)

    def diagnose(self, power: Sequence[PowerRow], *, n_forget: int, n_test: int, level: float) -> tuple[str, str | None]:
        """Why the battery can or cannot pass this request, and (when it cannot) what would make it conclusive."""
        conclusive = [p for p in power if p.conclusive]
        population = [p for p in conclusive if p.headline != FLAGGED_SHARE]
        if conclusive and not population:
            best = conclusive[0]
            flagged = round(best.original_value * n_forget)
            return (f"{best.attack} flags {flagged:,} of {n_forget:,} forgotten ID{'s' if n_forget != 1 else ''} on the "
                    f"original model (Benjamini–Hochberg, each check at {level:.1%}), so an ID still exposed after "
                    "unlearning would be flagged too"), None
        if conclusive:
            best = min(population, key=lambda p: p.minimum_detectable - p.chance)
            label = headline_label(best.headline)
            return (f"{best.attack} detects the original model's leak ({label} {best.original_value:.3f}, "
                    f"{_interval(*best.original_ci)} at {level:.1%}) and would detect {label} ≥ "
                    f"{best.minimum_detectable:.3f} with 80 % power at {n_forget:,} forgotten vs {n_test:,} test "
                    "samples"), None
        target = 0.5 + self.detectable_margin
        needed = members_needed(n_test, target=target, level=level)
        more = (f"about {needed:,} forgotten samples (at {n_test:,} test samples) would let the AUC attacks "
                f"detect AUC {target:g} with 80 % power" if needed is not None
                else f"more test samples: {n_test:,} cannot resolve AUC {target:g} at any request size")
        judged = [p for p in power if not p.abstained]
        if not judged:
            listed = "; ".join(f"{p.attack}: {p.abstained}" for p in power)
            return (f"every attack abstains with {n_forget:,} forgotten sample{'s' if n_forget != 1 else ''} ({listed})",
                    f"{more}; or {PER_EXAMPLE_HINT}")
        detecting = [p for p in judged if p.detects_original]
        if not detecting:
            strongest = max(judged, key=lambda p: p.original_value - p.chance)
            return (f"no attack detects membership leakage on the original model (strongest: {strongest.attack} "
                    f"{headline_label(strongest.headline)} {strongest.original_value:.3f}, {_interval(*strongest.original_ci)} at "
                    f"{level:.1%}): with nothing to find before unlearning, a pass would mean nothing",
                    f"attacks with reference models ({REFERENCE_ATTACKS}) can see leakage the population attacks "
                    "miss (u-lira per forgotten ID); if they do not either, the original model never measurably "
                    "memorised these samples")
        best = min(detecting, key=lambda p: (p.minimum_detectable is None, (p.minimum_detectable or 1) - p.chance))
        label = headline_label(best.headline)
        smallest = "no leak at all" if best.minimum_detectable is None else f"{label} ≥ {best.minimum_detectable:.3f}"
        return (f"the original model leaks ({best.attack} {label} {best.original_value:.3f}), but "
                f"{n_forget:,} forgotten samples are too few to rule out a smaller leak: at 80 % power the battery "
                f"detects {smallest}, beyond the policy's detectable_margin {self.detectable_margin:g}",
                f"{more}; or {PER_EXAMPLE_HINT}; or a policy with a larger detectable_margin (accepting that "
                "smaller leaks go unseen)")

    def decide(self, verdicts: Sequence[Verdict], power: Sequence[PowerRow], *, n_forget: int, n_test: int,
               level: float) -> tuple[str, str, str | None]:
        """The outcome (``passed`` / ``failed`` / ``inconclusive``), why, and what would make it conclusive."""
        failing = [v for v in verdicts if v.status in FAILING]
        if failing:
            listed = "; ".join(f"{v.attack} ({v.status})" for v in failing)
            return "failed", f"{len(failing)} of {len(verdicts)} checks fail: {listed}", None
        abstaining = sum(v.status == "abstained" for v in verdicts)
        checks = f"{len(verdicts) - abstaining} of {len(verdicts)} checks pass" + (
            f" and {abstaining} abstain" if abstaining else "")
        verdict = {v.attack: v for v in verdicts}

        def judged(row: PowerRow) -> PowerRow:
            # An attack that abstained on the unlearned model gives no evidence, whatever its power.
            unlearned = verdict.get(row.attack)
            if row.abstained or unlearned is None or unlearned.status == "pass":
                return row
            return dataclasses.replace(row, conclusive=False, abstained=f"on the unlearned model, {unlearned.reason}")

        why, hint = self.diagnose([judged(p) for p in power], n_forget=n_forget, n_test=n_test, level=level)
        if hint is None:
            return "passed", f"{checks}, and the audit could have failed: {why}", None
        return "inconclusive", f"{checks}, but {why}", hint

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


def _judge_per_example(result: AttackResult, reference: float | None, level: float) -> Verdict:
    """A per-example attack's verdict: fail when it flags any forgotten ID, pass otherwise."""
    rows = result.per_example
    flagged = [row for row in rows if row["flagged"]]
    rate = result.parameters.get("bh_rate")
    at = f"Benjamini–Hochberg at {rate:.3g}" if rate is not None else "its false-discovery control"
    share = (float(result.headline_value), float(result.headline_value))
    if flagged:
        worst = min(flagged, key=lambda row: row["p_value"])
        return Verdict(result.attack, "fail", result.headline_value, share, reference,
                       f"{len(flagged):,} of {len(rows):,} forgotten IDs still look seen ({at}; smallest p-value "
                       f"{worst['p_value']:.2g})", level)
    smallest = min((row["p_value"] for row in rows), default=1.0)
    return Verdict(result.attack, "pass", result.headline_value, share, reference,
                   f"none of {len(rows):,} forgotten IDs is flagged ({at}; smallest p-value {smallest:.2g})", level)


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Policy)}
_TYPE_NAMES = {float: "number", int: "whole number", str: "string"}


def _interval(low: float, high: float) -> str:
    return f"[{low:.3f}, {high:.3f}]"
