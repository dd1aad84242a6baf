"""Membership-inference metrics, computed in one place (checked against scikit-learn in the tests).

The statistics that decide verdicts (DeLong's AUC variance, exact rate bounds, power) live in
:mod:`auditkit.audit.stats`; this module turns one attack's scores into an :class:`AttackMetrics`, and
implements the ∇τ paper's logistic-regression attack.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedShuffleSplit

from auditkit.audit.results import AttackMetrics
from auditkit.audit.stats import auc_from_placements, clopper_pearson, sorted_placements

HELD_OUT_FRACTION = 0.1
"""StratifiedShuffleSplit's default test size: the share of rows each split of the LR attack holds out."""


def _softplus(v: np.ndarray) -> np.ndarray:
    """``log(1 + e^v)`` without overflow (5× faster than ``np.logaddexp(0, v)``)."""
    return np.maximum(v, 0.0) + np.log1p(np.exp(-np.abs(v)))


def logistic_regression_1d(
    values: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray,
    *,
    C: float = 1.0,
    start: tuple[np.ndarray, np.ndarray] | None = None,
    max_iter: int = 100,
) -> tuple[np.ndarray, np.ndarray]:
    """B independent one-feature logistic regressions, solved exactly by damped Newton steps.

    Each row b minimises scikit-learn's ``LogisticRegression(C=C)`` objective (L2 on the coefficient,
    not on the intercept): ``C·Σ_i w_bi·log(1 + exp(−s_i·(coef·x_bi + intercept))) + coef²/2`` with
    ``s_i = ±1`` from ``labels``. A 2×2 Newton system per row, halving steps that would raise the
    objective, until the Newton decrement reaches float64 precision. scikit-learn's default
    lbfgs stops once the gradient of its averaged objective is below 1e-4, which on very small values
    (well-fit losses, ~1e-5) is already true at coef = 0: it then predicts one class for every row
    and the attack is blind. This solver reaches the optimum those values define (the tests compare it
    with ``LogisticRegression(tol=1e-12)``).

    Args:
        values: ``[B, N]`` float64 feature of each row of each problem.
        labels: ``[B, N]`` (or ``[N]``) bool / 0-1 class of each row.
        weights: ``[B, N]`` non-negative sample weights (0 leaves a row out of that problem).
        start: optional ``(coef [B], intercept [B])`` to start from (e.g. the fit on all rows).

    Returns:
        ``coef [B]`` and ``intercept [B]``.
    """
    x = np.asarray(values, dtype=np.float64)
    y = np.broadcast_to(np.asarray(labels, dtype=np.float64), x.shape)
    w = C * np.broadcast_to(np.asarray(weights, dtype=np.float64), x.shape)
    sign = 2 * y - 1
    if start is None:
        coef, intercept = np.zeros(len(x)), np.zeros(len(x))
    else:
        coef, intercept = (np.array(part, dtype=np.float64) for part in start)

    every = np.arange(len(x))

    def rows_of(active: np.ndarray, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        # While every problem is still running, views instead of copies of the [B, N] arrays.
        return arrays if len(active) == len(x) else tuple(array[active] for array in arrays)

    def objective(c: np.ndarray, b: np.ndarray, rows: np.ndarray) -> np.ndarray:
        xr, wr, sr = rows_of(rows, x, w, sign)
        return (wr * _softplus(-sr * (c[:, None] * xr + b[:, None]))).sum(1) + 0.5 * c * c

    current = objective(coef, intercept, every)
    active = every
    for _ in range(max_iter):
        xa, wa, ya = rows_of(active, x, w, y)
        c, b = coef[active], intercept[active]
        p = 0.5 * (1 + np.tanh((c[:, None] * xa + b[:, None]) / 2))  # the logistic function, no overflow
        residual = wa * (p - ya)
        g_coef, g_intercept = (residual * xa).sum(1) + c, residual.sum(1)
        curvature = wa * p * (1 - p)
        h_cc, h_cb, h_bb = (curvature * xa * xa).sum(1) + 1, (curvature * xa).sum(1), curvature.sum(1)
        determinant = h_cc * h_bb - h_cb * h_cb
        solvable = determinant > 0
        safe = np.where(solvable, determinant, 1.0)
        step_c = np.where(solvable, (h_bb * g_coef - h_cb * g_intercept) / safe, g_coef / h_cc)
        step_b = np.where(solvable, (h_cc * g_intercept - h_cb * g_coef) / safe, 0.0)
        # Converged where the Newton decrement (the objective's predicted fall) is at float64 precision.
        moving = (step_c * g_coef + step_b * g_intercept) > 1e-15 * np.abs(current[active])
        if not moving.all():
            active, c, b, step_c, step_b = (part[moving] for part in (active, c, b, step_c, step_b))
            if not len(active):
                break
        length = np.ones(len(active))
        before = current[active]
        for _ in range(60):
            trial_c, trial_b = c - length * step_c, b - length * step_b
            trial = objective(trial_c, trial_b, active)
            worse = trial > before
            if not worse.any():
                break
            length = np.where(worse, length / 2, length)
        improved = trial < before
        coef[active] = np.where(improved, trial_c, c)
        intercept[active] = np.where(improved, trial_b, b)
        current[active] = np.where(improved, trial, before)
        active = active[improved]
        if not len(active):
            break
    return coef, intercept


def draw_seed(seed: int, draw: int) -> int:
    """The seed of subsample draw ``draw``: ``seed`` itself for draw 0 (the paper's single draw)."""
    return seed if draw == 0 else int(np.random.SeedSequence([seed, draw]).generate_state(1)[0])


@functools.lru_cache(maxsize=64)
def _lr_design(n_members: int, n_nonmembers: int, seed: int, n_splits: int) -> tuple[np.ndarray, ...]:
    """Which members / non-members a draw keeps, and the train / held-out masks of its splits.

    It depends only on the sizes and the seed, so every LR attack and every model shares it (read-only).
    """
    n = min(n_members, n_nonmembers)
    rng = np.random.default_rng(seed)
    keep_members = rng.permutation(n_members)[:n]
    keep_nonmembers = rng.permutation(n_nonmembers)[:n]
    labels = np.concatenate([np.ones(n, dtype=bool), np.zeros(n, dtype=bool)])
    train = np.zeros((n_splits, 2 * n), dtype=bool)
    held_out = np.zeros((n_splits, 2 * n), dtype=bool)
    splitter = StratifiedShuffleSplit(n_splits=n_splits, random_state=seed)
    for j, (fit_rows, test_rows) in enumerate(splitter.split(np.zeros((2 * n, 1)), labels)):
        train[j, fit_rows], held_out[j, test_rows] = True, True
    arrays = (keep_members, keep_nonmembers, labels, train, held_out)
    for array in arrays:
        array.flags.writeable = False
    return arrays


@dataclass(frozen=True)
class LrMiaDraws:
    """The LR attack over several subsample draws.

    ``accuracies [draws, n_splits]``: held-out accuracies; ``coefficients [draws]``: the coefficient of
    each draw's fit on all its (balanced) rows, whose sign says which direction of the value means "member".
    """

    accuracies: np.ndarray
    coefficients: np.ndarray


def lr_mia_draws(
    member_values: np.ndarray, nonmember_values: np.ndarray, *, seed: int, n_splits: int = 10, draws: int = 1
) -> LrMiaDraws:
    """The ∇τ paper's (and the NeurIPS 2023 unlearning kit's) membership attack, over ``draws`` subsamples.

    Logistic regression (scikit-learn's defaults, solved by :func:`logistic_regression_1d`) on one
    per-sample value (loss or entropy), members vs non-members, balanced by a seeded subsample of the
    larger set down to the smaller one's size, scored by 10-split stratified-shuffle cross-validation
    (10 % held out per split). Draw d uses seed :func:`draw_seed` (d), for both the subsample and the
    splits. The held-out accuracies: 0.5 = indistinguishable.

    Args:
        member_values: ``[M]`` values of the member set (e.g. forget losses).
        nonmember_values: ``[U]`` values of the non-member set (e.g. test losses).
    """
    members = np.asarray(member_values, dtype=np.float64).ravel()
    nonmembers = np.asarray(nonmember_values, dtype=np.float64).ravel()
    n = min(len(members), len(nonmembers))
    if n < n_splits:
        raise ValueError(f"the LR attack needs at least {n_splits} samples per class, got {n}")
    rows, targets, fits, tests = [], [], [], []
    for draw in range(draws):
        keep_members, keep_nonmembers, labels, train, held_out = _lr_design(
            len(members), len(nonmembers), draw_seed(seed, draw), n_splits)
        values = np.concatenate([members[keep_members], nonmembers[keep_nonmembers]])
        rows.append(np.broadcast_to(values, train.shape))
        targets.append(np.broadcast_to(labels, train.shape))
        fits.append(train)
        tests.append(held_out)
    # Each split's fit starts from its draw's fit on every row: 90 % of the rows are the same, so a
    # couple of Newton steps finish it.
    whole_c, whole_b = logistic_regression_1d(np.stack([r[0] for r in rows]), np.stack([t[0] for t in targets]),
                                              np.ones((draws, rows[0].shape[1])))
    values, labels, train, held_out = (np.concatenate(parts) for parts in (rows, targets, fits, tests))
    coef, intercept = logistic_regression_1d(values, labels, train,
                                             start=(np.repeat(whole_c, n_splits), np.repeat(whole_b, n_splits)))
    # scikit-learn's predict: class 1 where the decision function is > 0.
    correct = ((coef[:, None] * values + intercept[:, None] > 0) == labels) & held_out
    return LrMiaDraws((correct.sum(1) / held_out.sum(1)).reshape(draws, n_splits), whole_c)


def lr_mia_accuracies(
    member_values: np.ndarray, nonmember_values: np.ndarray, *, seed: int, n_splits: int = 10
) -> np.ndarray:
    """The ``[n_splits]`` held-out accuracies of one draw of :func:`lr_mia_draws`; their mean is the paper's "MIA"."""
    return lr_mia_draws(member_values, nonmember_values, seed=seed, n_splits=n_splits, draws=1).accuracies[0]


DELTA = 1e-5
"""The δ at which :func:`epsilon_lower_bound` states ε."""
_EPSILON_CANDIDATES = 32


def _check_scores(scores: np.ndarray, members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).ravel()
    members = np.asarray(members, dtype=bool).ravel()
    if len(scores) != len(members):
        raise ValueError(f"{len(scores)} scores but {len(members)} membership labels")
    if members.sum() < 2 or (~members).sum() < 2:
        raise ValueError("membership metrics need at least two members and two non-members")
    if not np.isfinite(scores).all():
        raise ValueError("membership scores must be finite")
    if scores.min() == scores.max():
        raise ValueError("membership scores are all equal: they cannot rank anything")
    return scores, members


def _counts_at_or_above(sorted_scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """How many of ``sorted_scores`` (ascending) are ≥ each threshold ("member iff score ≥ t")."""
    return len(sorted_scores) - np.searchsorted(sorted_scores, thresholds, "left")


def _epsilon_bounds(tp: np.ndarray, fp: np.ndarray, n_members: int, n_nonmembers: int, *, delta: float,
                    confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Per threshold, the ε lower bound from each of the two DP inequalities (Clopper–Pearson rates)."""
    # Each bound uses two one-sided rate bounds at α/2 (the ends of the two-sided interval at
    # ``confidence``): both hold with probability ≥ 1 − α.
    tpr_low, _ = clopper_pearson(tp, n_members, level=confidence)
    _, fpr_high = clopper_pearson(fp, n_nonmembers, level=confidence)
    tnr_low, _ = clopper_pearson(n_nonmembers - fp, n_nonmembers, level=confidence)
    _, fnr_high = clopper_pearson(n_members - tp, n_members, level=confidence)
    with np.errstate(divide="ignore", invalid="ignore"):
        first = np.log((tpr_low - delta) / fpr_high)
        second = np.log((tnr_low - delta) / fnr_high)
    return np.nan_to_num(first, nan=-np.inf), np.nan_to_num(second, nan=-np.inf)


def epsilon_lower_bound(
    scores: np.ndarray, members: np.ndarray, *, seed: int, delta: float = DELTA, confidence: float = 0.95
) -> float:
    """An empirical lower bound on ε for (ε, δ)-DP at ``confidence``, valid despite choosing the threshold.

    Any (ε, δ)-DP mechanism satisfies ``TPR ≤ e^ε·FPR + δ`` and ``1 − FPR ≤ e^ε·(1 − TPR) + δ``
    (Kairouz et al. 2015; used for auditing by Jagielski et al. 2020). The members and the non-members
    are each split into two seeded halves: on the first, the threshold and inequality with the largest
    Clopper–Pearson-bounded ε are chosen (among the members' scores, where both are tightest); on the
    second, that one threshold's bound is computed from
    Clopper–Pearson bounds (the lower one on the numerator's rate, the upper one on the denominator's,
    at α/2 each). Taking the best of many thresholds on the same rows would overstate ε. 0 when nothing
    beats chance.
    """
    scores, members = _check_scores(scores, members)
    rng = np.random.default_rng([seed, 0xE951])
    halves = []
    for group in (np.flatnonzero(members), np.flatnonzero(~members)):
        order = rng.permutation(group)
        halves.append((order[: len(order) // 2], order[len(order) // 2:]))
    (choose_members, bound_members), (choose_nonmembers, bound_nonmembers) = halves
    if min(len(choose_members), len(bound_members), len(choose_nonmembers), len(bound_nonmembers)) == 0:
        return 0.0
    chosen_pos, chosen_neg = np.sort(scores[choose_members]), np.sort(scores[choose_nonmembers])
    # Both inequalities are tightest at a member's score: for k members at or above the threshold the
    # fewest non-members are, and for j below it the most non-members are, when it sits on a member.
    thresholds = np.unique(chosen_pos)
    tp, fp = _counts_at_or_above(chosen_pos, thresholds), _counts_at_or_above(chosen_neg, thresholds)
    m, u = len(chosen_pos), len(chosen_neg)
    # Any rule may pick the threshold on this half; exact bounds are computed only for the most promising
    # ones by a smoothed point estimate (the Clopper–Pearson inverse costs ~10 µs a value).
    smoothed = np.concatenate([np.log((tp + 0.5) / m) - np.log((fp + 0.5) / u),
                               np.log((u - fp + 0.5) / u) - np.log((m - tp + 0.5) / m)])
    top = np.unique(np.argsort(-smoothed, kind="stable")[:_EPSILON_CANDIDATES] % len(thresholds))
    first, second = _epsilon_bounds(tp[top], fp[top], m, u, delta=delta, confidence=confidence)
    use_second = second.max() > first.max()
    threshold = thresholds[top[int(np.argmax(second if use_second else first))]]
    bound_pos, bound_neg = scores[bound_members], scores[bound_nonmembers]
    tp = np.asarray([(bound_pos >= threshold).sum()])
    fp = np.asarray([(bound_neg >= threshold).sum()])
    held = _epsilon_bounds(tp, fp, len(bound_pos), len(bound_neg), delta=delta, confidence=confidence)
    value = float(held[1 if use_second else 0][0])
    return max(value, 0.0) if np.isfinite(value) else 0.0


def attack_metrics(scores: np.ndarray, members: np.ndarray, *, seed: int, roc_points: int = 60) -> AttackMetrics:
    """Every membership metric of one attack's ``[N]`` scores (higher = member) against the ``[N]`` bool mask.

    The AUC and its interval are DeLong's (:func:`auditkit.audit.stats.auc_from_placements`); the ROC counts "member
    iff score ≥ t" at every distinct score. The balanced accuracy includes the "all non-member"
    threshold, so it is never below 0.5. A warning is added for each fixed FPR (1 %, 0.1 %) that fewer
    than 1/FPR non-members cannot resolve: the TPR reported there is then the TPR at zero false positives.
    Needs at least two members, two non-members, and scores that are not all equal.
    """
    scores, members = _check_scores(scores, members)
    n_members, n_nonmembers = int(members.sum()), int((~members).sum())
    positives, negatives = np.sort(scores[members]), np.sort(scores[~members])
    thresholds = np.unique(scores)[::-1]
    tpr = np.concatenate([[0.0], _counts_at_or_above(positives, thresholds) / n_members])
    fpr = np.concatenate([[0.0], _counts_at_or_above(negatives, thresholds) / n_nonmembers])
    estimate = auc_from_placements(*sorted_placements(positives, negatives))
    tpr_at, tpr_ci = {}, {}
    for target in (0.01, 0.001):
        # The best TPR with at most ⌊target·U⌋ false positives: threshold just above that many non-members.
        allowed = int(np.floor(target * n_nonmembers + 1e-9))
        cut = negatives[n_nonmembers - allowed - 1] if allowed < n_nonmembers else -np.inf
        hits = int((positives > cut).sum())
        low, high = clopper_pearson(hits, n_members, level=0.95)
        tpr_at[target], tpr_ci[target] = hits / n_members, (float(low), float(high))
    grid = roc_grid(n_nonmembers, points=roc_points)
    warnings = [
        f"only {n_nonmembers} non-members: TPR at {label} FPR is the TPR at zero false positives "
        f"(resolving {label} needs at least {int(round(1 / target))})"
        for target, label in ((0.01, "1 %"), (0.001, "0.1 %"))
        if n_nonmembers * target < 1
    ]
    return AttackMetrics(
        auc=estimate.auc,
        auc_ci=estimate.interval(0.95),
        auc_se=estimate.se,
        auc_df=estimate.df,
        balanced_accuracy=float(((tpr + 1 - fpr) / 2).max()),
        tpr_at_1pct_fpr=tpr_at[0.01],
        tpr_at_1pct_fpr_ci=tpr_ci[0.01],
        tpr_at_01pct_fpr=tpr_at[0.001],
        tpr_at_01pct_fpr_ci=tpr_ci[0.001],
        advantage=float(np.abs(tpr - fpr).max()),
        epsilon_lower_bound=epsilon_lower_bound(scores, members, seed=seed),
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
