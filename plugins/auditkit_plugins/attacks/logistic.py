"""The ∇τ paper's membership attack: logistic regression on one per-sample value, cross-validated."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from auditkit.audit.metrics import cv_mean_interval, lr_mia_accuracies
from auditkit.errors import InputError
from auditkit.interfaces import Attack, AttackInput, AttackOutput, Statistic

_HELD_OUT_FRACTION = 0.1  # StratifiedShuffleSplit's default test size, used by lr_mia_accuracies


class _LogisticAttack(Attack):
    """Headline: the mean cross-validated accuracy of :func:`auditkit.audit.metrics.lr_mia_accuracies`.

    Its 95 % interval is Nadeau & Bengio's corrected resampled t-interval over the split accuracies
    (the splits overlap, so their plain standard error is too small). Per-sample scores are the decision function of one logistic
    regression fit on all rows with balanced class weights, so its learned sign makes higher = member.
    """

    SIGNAL: ClassVar[str]
    OPTIONS = {"n_splits": 10}

    def score(self, data: AttackInput) -> AttackOutput:
        values = np.asarray(getattr(data.target, self.SIGNAL), dtype=np.float64)
        members = np.asarray(data.members, dtype=bool)
        n_splits = int(self.options["n_splits"])
        n = min(int(members.sum()), int((~members).sum()))
        if n < n_splits:
            raise InputError(
                f"{self.PLUGIN_NAME} needs at least {n_splits} members and non-members, got {n}",
                hint="forget more samples, or lower the attack's n_splits option",
            )
        accuracies = lr_mia_accuracies(values[members], values[~members], seed=data.seed, n_splits=n_splits)
        mean = float(accuracies.mean())
        low, high = cv_mean_interval(accuracies, test_fraction=_HELD_OUT_FRACTION)
        with threadpool_limits(limits=1):  # see lr_mia_accuracies
            model = LogisticRegression(class_weight="balanced").fit(values[:, None], members)
        scores = model.decision_function(values[:, None]).astype(np.float64)
        return AttackOutput(scores=scores, statistic=Statistic("lr_accuracy", mean, low, high, 0.5))


class LogisticLossAttack(_LogisticAttack):
    PLUGIN_NAME = "lr-loss"
    DESCRIPTION = "the ∇τ paper's MIA: cross-validated logistic regression on the loss"
    SIGNAL = "loss"


class LogisticEntropyAttack(_LogisticAttack):
    PLUGIN_NAME = "lr-entropy"
    DESCRIPTION = "the ∇τ paper's MIA on the prediction entropy"
    SIGNAL = "entropy"
