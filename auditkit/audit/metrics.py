"""Membership-inference metrics, computed in one place (checked against scikit-learn in the tests)."""

from __future__ import annotations

import numpy as np
from scipy.stats import beta
from scipy.stats import t as t_dist
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.model_selection import StratifiedShuffleSplit, cross_val_score
from threadpoolctl import threadpool_limits

from auditkit.audit.results import AttackMetrics


def lr_mia_accuracies(
    member_values: np.ndarray, nonmember_values: np.ndarray, *, seed: int, n_splits: int = 10
) -> np.ndarray:
    """The ∇τ paper's (and the NeurIPS 2023 unlearning kit's) membership attack.

    Logistic regression on one per-sample value (loss or entropy), members vs non-members, balanced by
    a seeded subsample of the larger set down to the smaller one's size, scored by 10-split
    stratified-shuffle cross-validation (10 % held out per split). Returns the ``[n_splits]``
    held-out accuracies; their mean is the paper's "MIA" (0.5 = indistinguishable).

    Args:
        member_values: ``[M]`` values of the member set (e.g. forget losses).
        nonmember_values: ``[U]`` values of the non-member set (e.g. test losses).
    """
    members = np.asarray(member_values, dtype=np.float64).ravel()
    nonmembers = np.asarray(nonmember_values, dtype=np.float64).ravel()
    n = min(len(members), len(nonmembers))
    if n < n_splits:
        raise ValueError(f"the LR attack needs at least {n_splits} samples per class, got {n}")
    rng = np.random.default_rng(seed)
    members = members[rng.permutation(len(members))[:n]]
    nonmembers = nonmembers[rng.permutation(len(nonmembers))[:n]]
    values = np.concatenate([members, nonmembers])[:, None]
    labels = np.concatenate([np.ones(n, dtype=np.int64), np.zeros(n, dtype=np.int64)])
    cv = StratifiedShuffleSplit(n_splits=n_splits, random_state=seed)
    # A one-feature fit gains nothing from BLAS threads, and on busy cores they made it 5× slower.
    with threadpool_limits(limits=1):
        return cross_val_score(LogisticRegression(), values, labels, cv=cv, scoring="accuracy")


DELTA = 1e-5
"""The δ at which :func:`epsilon_lower_bound` states ε."""


def _check_scores(scores: np.ndarray, members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).ravel()
    members = np.asarray(members, dtype=bool).ravel()
    if len(scores) != len(members):
        raise ValueError(f"{len(scores)} scores but {len(members)} membership labels")
    if members.all() or not members.any():
        raise ValueError("membership metrics need at least one member and one non-member")
    if not np.isfinite(scores).all():
        raise ValueError("membership scores must be finite")
    return scores, members


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, target: float) -> float:
    """Highest TPR among ROC points whose FPR is at most ``target`` (direction: higher = more leakage)."""
    return float(tpr[fpr <= target + 1e-12].max())


def epsilon_lower_bound(
    fpr: np.ndarray, tpr: np.ndarray, *, n_members: int, n_nonmembers: int, delta: float = DELTA,
    confidence: float = 0.95,
) -> float:
    """An empirical lower bound on ε for (ε, δ)-DP from an ROC curve, at ``confidence`` (Jagielski et al. 2020).

    Any (ε, δ)-DP mechanism satisfies ``TPR ≤ e^ε·FPR + δ`` and ``1 − FPR ≤ e^ε·(1 − TPR) + δ``. Point
    estimates of TPR/FPR would overstate ε, so each threshold uses a Clopper–Pearson lower bound on the
    rate in the numerator and an upper bound on the one in the denominator; the result is the largest
    ε over thresholds, 0 when nothing beats chance.
    """
    alpha = 1 - confidence
    tp = np.rint(tpr * n_members)
    fp = np.rint(fpr * n_nonmembers)

    def lower(k, n):
        return np.where(k > 0, beta.ppf(alpha / 2, k, n - k + 1), 0.0)

    def upper(k, n):
        return np.where(k < n, beta.ppf(1 - alpha / 2, k + 1, n - k), 1.0)

    tpr_low, fpr_high = lower(tp, n_members), upper(fp, n_nonmembers)
    tnr_low, fnr_high = lower(n_nonmembers - fp, n_nonmembers), upper(n_members - tp, n_members)
    with np.errstate(divide="ignore", invalid="ignore"):
        bounds = np.concatenate([np.log((tpr_low - delta) / fpr_high), np.log((tnr_low - delta) / fnr_high)])
    bounds = bounds[np.isfinite(bounds)]
    return float(max(bounds.max(initial=0.0), 0.0))


def bootstrap_auc_accuracy(
    scores: np.ndarray, members: np.ndarray, *, seed: int, rounds: int = 200
) -> tuple[np.ndarray, np.ndarray]:
    """``[rounds]`` bootstrap replicates of the AUC and of the best-threshold balanced accuracy.

    Members and non-members are resampled separately (their counts are fixed by the audit design), with
    a seeded generator, so the same inputs always give the same intervals.
    """
    scores, members = _check_scores(scores, members)
    rng = np.random.default_rng(seed)
    # One sort for all replicates: a replicate only changes how often each distinct score occurs, so
    # it is a [rounds, distinct scores] histogram per class, from which AUC and ROC are cumulative sums.
    distinct, position = np.unique(scores, return_inverse=True)
    histograms = []
    for group in (members, ~members):
        n = int(group.sum())
        draws = rng.integers(0, n, (rounds, n))
        counts = np.bincount((np.arange(rounds)[:, None] * n + draws).ravel(), minlength=rounds * n)
        order = np.argsort(position[group], kind="stable")
        where, starts = np.unique(position[group][order], return_index=True)
        histogram = np.zeros((rounds, len(distinct)))
        histogram[:, where] = np.add.reduceat(counts.reshape(rounds, n)[:, order], starts, axis=1)
        histograms.append(histogram)
    pos, neg = histograms
    n_pos, n_neg = pos.sum(1, keepdims=True), neg.sum(1, keepdims=True)
    # Mann–Whitney with ties counted half, i.e. exactly roc_auc_score on every replicate.
    neg_below = np.cumsum(neg, axis=1) - neg
    auc = ((pos * (neg_below + 0.5 * neg)).sum(1, keepdims=True) / (n_pos * n_neg)).ravel()
    # Threshold at each distinct value t ("member iff score ≥ t"), plus "nobody is a member" (0.5).
    tpr = np.cumsum(pos[:, ::-1], axis=1) / n_pos
    fpr = np.cumsum(neg[:, ::-1], axis=1) / n_neg
    balanced = np.maximum(((tpr + 1 - fpr) / 2).max(1), 0.5)
    return auc, balanced


def percentile_interval(replicates: np.ndarray, *, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` percentile interval of bootstrap ``replicates``."""
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(replicates, [tail, 100 - tail])
    return float(low), float(high)


def attack_metrics(
    scores: np.ndarray,
    members: np.ndarray,
    *,
    seed: int,
    bootstrap_rounds: int = 200,
    roc_points: int = 60,
) -> AttackMetrics:
    """Every membership metric of one attack's ``[N]`` scores (higher = member) against the ``[N]`` bool mask.

    AUC and the ROC come from :func:`sklearn.metrics.roc_auc_score` / :func:`sklearn.metrics.roc_curve`;
    the balanced accuracy includes the "all non-member" threshold, so it is never below 0.5. A warning is
    added for each fixed FPR (1 %, 0.1 %) that fewer than 1/FPR non-members cannot resolve: the TPR
    reported there is then the TPR at zero false positives.
    """
    scores, members = _check_scores(scores, members)
    n_members, n_nonmembers = int(members.sum()), int((~members).sum())
    fpr, tpr, _ = roc_curve(members, scores, drop_intermediate=False)
    auc_replicates, accuracy_replicates = bootstrap_auc_accuracy(
        scores, members, seed=seed, rounds=bootstrap_rounds
    )
    grid = roc_grid(n_nonmembers, points=roc_points)
    warnings = [
        f"only {n_nonmembers} non-members: TPR at {label} FPR is the TPR at zero false positives "
        f"(resolving {label} needs at least {int(round(1 / target))})"
        for target, label in ((0.01, "1 %"), (0.001, "0.1 %"))
        if n_nonmembers * target < 1
    ]
    return AttackMetrics(
        auc=float(roc_auc_score(members, scores)),
        auc_ci=percentile_interval(auc_replicates),
        balanced_accuracy=float(((tpr + 1 - fpr) / 2).max()),
        balanced_accuracy_ci=percentile_interval(accuracy_replicates),
        tpr_at_1pct_fpr=tpr_at_fpr(fpr, tpr, 0.01),
        tpr_at_01pct_fpr=tpr_at_fpr(fpr, tpr, 0.001),
        advantage=float(np.abs(tpr - fpr).max()),
        epsilon_lower_bound=epsilon_lower_bound(fpr, tpr, n_members=n_members, n_nonmembers=n_nonmembers),
        n_members=n_members,
        n_nonmembers=n_nonmembers,
        roc_fpr=grid.tolist(),
        roc_tpr=tpr[np.searchsorted(fpr, grid + 1e-12, side="right") - 1].tolist(),
        warnings=warnings,
    )


def roc_grid(n_nonmembers: int, *, points: int = 60) -> np.ndarray:
    """FPR values at which to sample an ROC for plotting: 0, log-spaced from 1/n to 1 (for log-log plots)."""
    low = np.log10(1 / max(n_nonmembers, 1))
    return np.unique(np.concatenate([[0.0], np.logspace(low, 0, points - 1)]))


def cv_mean_interval(values: np.ndarray, *, test_fraction: float, level: float = 0.95) -> tuple[float, float]:
    """Interval for the mean of ``[J]`` scores from J random train/test splits (Nadeau & Bengio 2003).

    The splits share samples, so the naive ``s²/J`` understates the variance; the corrected resampled
    t-interval uses ``(1/J + n_test/n_train)·s²`` with J − 1 degrees of freedom. On null data (members
    and non-members from one distribution, 20–200 members) it covers chance in about 90–92 % of draws
    at level 0.95 (see the audit notes), where an interval over the pooled held-out predictions covers
    far less.
    """
    values = np.asarray(values, dtype=np.float64)
    spread = np.sqrt((1 / len(values) + test_fraction / (1 - test_fraction)) * values.var(ddof=1))
    half = t_dist.ppf(0.5 + level / 2, len(values) - 1) * spread
    return float(values.mean() - half), float(values.mean() + half)
