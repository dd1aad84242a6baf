"""Membership metrics against scikit-learn and brute force, on synthetic scores of known separability."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from auditkit.audit.metrics import (
    attack_metrics,
    bootstrap_auc_accuracy,
    cv_mean_interval,
    epsilon_lower_bound,
    lr_mia_accuracies,
)


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
    assert m.balanced_accuracy == pytest.approx(best_balanced_accuracy(scores, members), abs=1e-12)
    fpr, tpr = brute_force_roc(scores, members)
    assert m.tpr_at_1pct_fpr == pytest.approx(tpr[fpr <= 0.01].max())
    assert m.tpr_at_01pct_fpr == pytest.approx(tpr[fpr <= 0.001].max())
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


def test_bootstrap_replicates_are_roc_auc_of_the_resample_and_seeded():
    scores, members = synthetic(4, shift=0.7, ties=True)
    auc, accuracy = bootstrap_auc_accuracy(scores, members, seed=11, rounds=3)
    rng = np.random.default_rng(11)
    pos, neg = scores[members], scores[~members]
    sampled_pos = pos[rng.integers(0, len(pos), (3, len(pos)))]
    sampled_neg = neg[rng.integers(0, len(neg), (3, len(neg)))]
    labels = np.r_[np.ones(len(pos), bool), np.zeros(len(neg), bool)]
    for r in range(3):
        sample = np.r_[sampled_pos[r], sampled_neg[r]]
        assert auc[r] == pytest.approx(roc_auc_score(labels, sample), abs=1e-12)
        assert accuracy[r] == pytest.approx(best_balanced_accuracy(sample, labels), abs=1e-12)
    again = bootstrap_auc_accuracy(scores, members, seed=11, rounds=3)
    assert np.array_equal(auc, again[0]) and np.array_equal(accuracy, again[1])


def test_too_few_nonmembers_for_an_fpr_is_a_warning():
    scores, members = synthetic(5, shift=1.0, n_members=50, n_nonmembers=80)
    warnings = attack_metrics(scores, members, seed=0).warnings
    assert len(warnings) == 2 and "1 %" in warnings[0] and "0.1 %" in warnings[1]
    scores, members = synthetic(5, shift=1.0, n_members=50, n_nonmembers=500)
    warnings = attack_metrics(scores, members, seed=0).warnings
    assert len(warnings) == 1 and "0.1 %" in warnings[0]


def test_epsilon_bound_uses_clopper_pearson_at_the_perfect_point():
    # TPR = 1 and FPR = 0 on 100 + 100 samples: the two-sided 95 % Clopper–Pearson bounds are
    # 0.025^(1/100) on TPR and 1 − 0.025^(1/100) on FPR.
    low = 0.025 ** (1 / 100)
    expected = np.log((low - 1e-5) / (1 - low))
    bound = epsilon_lower_bound(np.asarray([0.0, 0.0, 1.0]), np.asarray([0.0, 1.0, 1.0]), n_members=100, n_nonmembers=100)
    assert bound == pytest.approx(expected, rel=1e-9)
    bigger = epsilon_lower_bound(np.asarray([0.0, 0.0, 1.0]), np.asarray([0.0, 1.0, 1.0]), n_members=1000, n_nonmembers=1000)
    assert bigger > bound


def test_cv_interval_is_the_corrected_resampled_t_interval_and_lr_mia_separates():
    values = np.asarray([0.5, 0.6, 0.55, 0.45, 0.5, 0.65, 0.6, 0.5, 0.55, 0.6])
    low, high = cv_mean_interval(values, test_fraction=0.1)
    # Nadeau & Bengio: mean ± t(0.975, 9)·sqrt((1/10 + 0.1/0.9)·s²), mean 0.55, s² = 0.0038889 here; t(0.975, 9) = 2.2622.
    half = 2.2622 * np.sqrt((0.1 + 0.1 / 0.9) * 0.0038888889)
    assert low == pytest.approx(0.55 - half, abs=1e-4) and high == pytest.approx(0.55 + half, abs=1e-4)
    accuracies = lr_mia_accuracies(np.zeros(40), np.ones(60), seed=0)
    assert accuracies.shape == (10,) and np.all(accuracies == 1.0)


def test_degenerate_inputs_are_rejected():
    with pytest.raises(ValueError, match="one member and one non-member"):
        attack_metrics(np.zeros(5), np.ones(5, bool), seed=0)
    with pytest.raises(ValueError, match="finite"):
        attack_metrics(np.asarray([0.0, np.nan]), np.asarray([True, False]), seed=0)
