"""The ∇τ paper's membership attack: logistic regression on one per-sample value, cross-validated."""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from auditkit.audit.metrics import HELD_OUT_FRACTION, lr_mia_draws
from auditkit.audit.stats import corrected_resampled_mean, minimum_detectable_accuracy
from auditkit.interfaces import Attack, AttackInput, AttackOutput, Statistic


class _LogisticAttack(Attack):
    """Headline: the mean cross-validated accuracy of :func:`auditkit.audit.metrics.lr_mia_draws`.

    The paper's attack is one seeded subsample draw; with few members one draw moves by 0.05 or more
    from seed to seed, so the headline averages ``draws`` draws (draw 0 is the paper's) and reports
    their spread. Its interval is Nadeau & Bengio's corrected resampled t over all ``draws × n_splits``
    split accuracies (:func:`auditkit.audit.stats.corrected_resampled_mean`, with the binomial floor).
    Per-sample scores are the signal oriented by the sign of the draws' fits on all their (balanced)
    rows: the ranking of the logistic model's decision function, without the rounding of
    ``coef·x + intercept`` that makes tiny losses tie.
    """

    SIGNAL: ClassVar[str]
    OPTIONS = {"n_splits": 10, "draws": 5}

    def _sizes(self) -> tuple[int, int]:
        return int(self.options["n_splits"]), int(self.options["draws"])

    def score(self, data: AttackInput) -> AttackOutput:
        values = np.asarray(getattr(data.target, self.SIGNAL), dtype=np.float64)
        members = np.asarray(data.members, dtype=bool)
        n_splits, draws = self._sizes()
        n = min(int(members.sum()), int((~members).sum()))
        parameters = {"signal": self.SIGNAL, "n_splits": n_splits, "draws": draws, "per_class": n}
        if n < n_splits:
            return AttackOutput(scores=None, parameters=parameters, abstained=(
                f"its {n_splits}-split cross-validation needs at least {n_splits} members and "
                f"{n_splits} non-members, and there are {n} (lower the attack's n_splits option, or forget more)"))
        result = lr_mia_draws(values[members], values[~members], seed=data.seed, n_splits=n_splits, draws=draws)
        held_out = math.ceil(HELD_OUT_FRACTION * 2 * n)
        summary = corrected_resampled_mean(result.accuracies.ravel(), test_fraction=HELD_OUT_FRACTION,
                                           held_out=held_out)
        per_draw = result.accuracies.mean(1)
        spread = float(per_draw.std(ddof=1)) if draws > 1 else 0.0
        # The direction the draws' balanced fits agree on (their mean coefficient's sign).
        direction = float(np.sign(result.coefficients.mean()))
        low, high = summary.interval(0.95)
        parameters.update(draw_accuracies=per_draw.tolist(),
                          direction="lower value = member" if direction < 0 else "higher value = member")
        return AttackOutput(
            scores=direction * values,
            statistic=Statistic("lr_accuracy", summary.mean, low, high, 0.5, se=summary.se, df=summary.df,
                                spread=spread),
            parameters=parameters,
        )

    def minimum_detectable_statistic(self, *, n_members: int, n_nonmembers: int, level: float) -> float | None:
        n_splits, draws = self._sizes()
        n = min(n_members, n_nonmembers)
        if n < n_splits:
            return None
        return minimum_detectable_accuracy(n, level=level, splits=n_splits * draws, test_fraction=HELD_OUT_FRACTION)


class LogisticLossAttack(_LogisticAttack):
    PLUGIN_NAME = "lr-loss"
    DESCRIPTION = "the ∇τ paper's MIA: cross-validated logistic regression on the loss"
    SIGNAL = "loss"


class LogisticEntropyAttack(_LogisticAttack):
    PLUGIN_NAME = "lr-entropy"
    DESCRIPTION = "the ∇τ paper's MIA on the prediction entropy"
    SIGNAL = "entropy"
