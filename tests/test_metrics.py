"""Membership metrics against scikit-learn and brute force, on synthetic scores of known separability, and the
LR attack's exact logistic regression against scikit-learn's."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from sklearn.model_selection import StratifiedShuffleSplit, cross_val_score

from auditkit.audit.metrics import (
    attack_metrics,
    epsilon_lower_bound,
    logistic_regression_1d,
    lr_mia_accuracies,
    lr_mia_draws,
)
from auditkit.audit.stats import clopper_pearson, delong_auc


def synthetic(seed: int, *, shift: float, n_members: int = 150, n_nonmembers: int = 250, ties: bool = False):
    rng = np.random.default_rng(seed)
    scores = np.concatenate([rng.normal(shift, 1, n_members), rng.normal(0, 1, n_nonmembers)])
    if ties:
        scores = np.round(scores, 1)
    members = np.concatenate([np.ones(n_members, bool), np.zeros(n_nonmembers, bool)])
    return scores, members


def best_balanced_accuracy(scores, members):
    """Max over thresholds "member iff score ≥ t" of the balanced accuracy, checked with sklearn at the best t."""
    thresholds = np.unique(scores)
    predicted = scores[None, :] >= thresholds[:, None]
    values = ((predicted & members).sum(1) / members.sum() + (~predicted & ~members).sum(1) / (~members).sum()) / 2
    best = int(np.argmax(values))
    assert values[best] == pytest.approx(balanced_accuracy_score(members, scores >= thresholds[best]), abs=1e-12)
    return max(values[best], 0.5)


def brute_force_roc(scores, members):
    """(FPR, TPR) of "member iff score ≥ t" for every distinct t, plus the all-non-member point."""
    points = [(0.0, 0.0)]
    for t in np.unique(scores):
        predicted = scores >= t
        points.append(((predicted & ~members).sum() / (~members).sum(), (predicted & members).sum() / members.sum()))
    return np.asarray(points).T


@pytest.mark.parametrize("seed,shift,ties", [(0, 0.0, False), (1, 1.0, False), (2, 0.5, True), (3, 2.5, False)])
def test_metrics_match_sklearn_and_brute_force(seed, shift, ties):
    scores, members = synthetic(seed, shift=shift, ties=ties)
    m = attack_metrics(scores, members, seed=seed)
    assert m.auc == pytest.approx(roc_auc_score(members, scores), abs=1e-12)
    estimate = delong_auc(scores, members)
    assert m.auc_se == pytest.approx(estimate.se) and m.auc_ci == pytest.approx(estimate.interval(0.95))
    assert m.balanced_accuracy == pytest.approx(best_balanced_accuracy(scores, members), abs=1e-12)
    fpr, tpr = brute_force_roc(scores, members)
    assert m.tpr_at_1pct_fpr == pytest.approx(tpr[fpr <= 0.01].max())
    assert m.tpr_at_01pct_fpr == pytest.approx(tpr[fpr <= 0.001].max())
    hits = round(m.tpr_at_1pct_fpr * 150)
    assert m.tpr_at_1pct_fpr_ci == pytest.approx(tuple(float(v) for v in clopper_pearson(hits, 150, level=0.95)))
    assert m.advantage == pytest.approx(np.abs(tpr - fpr).max())
    assert (m.n_members, m.n_nonmembers) == (150, 250)
    assert m.auc_ci[0] <= m.auc <= m.auc_ci[1]
    assert np.all(np.diff(m.roc_fpr) > 0) and np.all(np.diff(m.roc_tpr) >= 0) and m.roc_tpr[-1] == 1.0


def test_perfectly_separable_scores_give_auc_one():
    scores, members = synthetic(0, shift=100.0)
    m = attack_metrics(scores, members, seed=0)
    assert m.auc == 1.0 and m.auc_ci == (1.0, 1.0)
    assert m.balanced_accuracy == 1.0 and m.tpr_at_1pct_fpr == 1.0 and m.advantage == 1.0
    assert m.epsilon_lower_bound > 2.0


def test_identical_distributions_have_intervals_containing_chance():
    covered = 0
    for seed in range(40):
        scores, members = synthetic(seed, shift=0.0)
        m = attack_metrics(scores, members, seed=seed)
        covered += m.auc_ci[0] <= 0.5 <= m.auc_ci[1]
    # A 95 % interval should miss chance about twice in 40 null draws; more often means it is too narrow.
    assert covered >= 35
    scores, members = synthetic(7, shift=0.0)
    assert attack_metrics(scores, members, seed=7).epsilon_lower_bound < 0.5


def test_too_few_nonmembers_for_an_fpr_is_a_warning():
    scores, members = synthetic(5, shift=1.0, n_members=50, n_nonmembers=80)
    warnings = attack_metrics(scores, members, seed=0).warnings
    assert len(warnings) == 2 and "1 %" in warnings[0] and "0.1 %" in warnings[1]
    scores, members = synthetic(5, shift=1.0, n_members=50, n_nonmembers=500)
    warnings = attack_metrics(scores, members, seed=0).warnings
    assert len(warnings) == 1 and "0.1 %" in warnings[0]


def test_epsilon_bound_is_clopper_pearson_on_a_held_out_half():
    # Perfect separation of 100 + 100 samples: the threshold chosen on one half still separates the other
    # 50 + 50, where the two-sided 95 % Clopper–Pearson bounds are 0.025^(1/50) on TPR and 1 − that on FPR.
    scores, members = synthetic(0, shift=100.0, n_members=100, n_nonmembers=100)
    low = 0.025 ** (1 / 50)
    assert epsilon_lower_bound(scores, members, seed=0) == pytest.approx(np.log((low - 1e-5) / (1 - low)), rel=1e-9)


def test_epsilon_bound_rarely_exceeds_the_true_epsilon():
    """A mechanism with a known ε: non-members uniform on [0, 1], members the same except that a share w
    lands uniformly in the top h, so TPR/FPR = 1 − w + w/h at every threshold in the top h."""
    rng = np.random.default_rng(3)
    w, h, n = 0.3, 0.05, 200
    true = np.log(1 - w + w / h)
    members = np.arange(2 * n) < n
    bounds = []
    for seed in range(100):
        top = rng.random(n) < w
        scores = np.concatenate([np.where(top, rng.uniform(1 - h, 1, n), rng.uniform(0, 1, n)), rng.uniform(0, 1, n)])
        bounds.append(epsilon_lower_bound(scores, members, seed=seed))
    bounds = np.asarray(bounds)
    assert np.mean(bounds > true) <= 0.05 and np.mean(bounds > 0) > 0.9  # valid, and it still finds the leak


def test_logistic_regression_matches_sklearn_at_its_optimum():
    rng = np.random.default_rng(0)
    worst = 0.0
    for _ in range(12):
        n = int(rng.integers(10, 300))
        scale = 10.0 ** rng.uniform(-6, 1.5)  # from well-fit losses (~1e-6) to large entropies
        values = np.concatenate([rng.exponential(scale, n), rng.exponential(scale * rng.uniform(0.3, 3), n + 20)])
        labels = np.arange(len(values)) < n
        reference = LogisticRegression(tol=1e-12, max_iter=100_000).fit(values[:, None], labels)
        coef, intercept = logistic_regression_1d(values[None], labels[None], np.ones((1, len(values))))
        for ours, theirs in ((coef[0], reference.coef_[0, 0]), (intercept[0], reference.intercept_[0])):
            worst = max(worst, abs(ours - theirs) / max(1.0, abs(theirs)))
    assert worst < 1e-6


def test_lr_attack_is_the_papers_cross_validation():
    # On values of ordinary scale the exact solver and scikit-learn's default lbfgs agree on every held-out
    # prediction, so the split accuracies are the paper's cross_val_score exactly.
    rng = np.random.default_rng(1)
    for seed in range(3):
        members, nonmembers = rng.exponential(1.0, 40 + 20 * seed), rng.exponential(1.6, 400)
        ours = lr_mia_accuracies(members, nonmembers, seed=seed)
        order = np.random.default_rng(seed)
        n = len(members)
        values = np.concatenate([members[order.permutation(n)[:n]], nonmembers[order.permutation(400)[:n]]])
        labels = np.repeat([1, 0], n)
        expected = cross_val_score(LogisticRegression(), values[:, None], labels, scoring="accuracy",
                                   cv=StratifiedShuffleSplit(n_splits=10, random_state=seed))
        np.testing.assert_array_equal(ours, expected)
    draws = lr_mia_draws(members, nonmembers, seed=2, draws=4).accuracies
    assert draws.shape == (4, 10) and np.array_equal(draws[0], lr_mia_accuracies(members, nonmembers, seed=2))
    assert not np.array_equal(draws[1], draws[0])  # another subsample of the non-members, other splits


def test_lr_attack_sees_a_leak_in_well_fit_losses_where_lbfgs_stops_at_zero():
    # Losses of ~1e-5 for members and ~1e-4 for unseen samples: scikit-learn's default lbfgs starts at
    # coef = 0, finds its gradient already below tol and predicts one class (accuracy exactly 0.5).
    rng = np.random.default_rng(2)
    members, nonmembers = rng.exponential(1e-5, 60), rng.exponential(1e-4, 400)
    ours = lr_mia_accuracies(members, nonmembers, seed=0)
    values = np.concatenate([members, nonmembers[np.random.default_rng(0).permutation(400)[:60]]])[:, None]
    lbfgs = cross_val_score(LogisticRegression(), values, np.repeat([1, 0], 60), scoring="accuracy",
                            cv=StratifiedShuffleSplit(n_splits=10, random_state=0))
    assert np.all(lbfgs == 0.5) and ours.mean() > 0.75


def test_degenerate_inputs_are_rejected():
    with pytest.raises(ValueError, match="two members and two non-members"):
        attack_metrics(np.zeros(5), np.ones(5, bool), seed=0)
    with pytest.raises(ValueError, match="finite"):
        attack_metrics(np.asarray([0.0, np.nan, 1.0, 2.0]), np.asarray([True, True, False, False]), seed=0)
    with pytest.raises(ValueError, match="all equal"):
        attack_metrics(np.ones(6), np.arange(6) < 3, seed=0)
    with pytest.raises(ValueError, match="at least 10 samples per class"):
        lr_mia_accuracies(np.ones(9), np.ones(50), seed=0)
