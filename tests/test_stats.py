"""The statistics that decide verdicts, against published values, brute force, scipy and simulation."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from scipy.stats import binomtest, norm, rankdata
from sklearn.metrics import roc_auc_score

from auditkit.audit.stats import (
    auc_from_placements,
    bonferroni_level,
    clopper_pearson,
    corrected_resampled_mean,
    delong_auc,
    delong_placements,
    hanley_mcneil_variance,
    members_needed,
    minimum_detectable_accuracy,
    minimum_detectable_auc,
    ratio_of_means,
    two_sided_quantile,
)

# pROC's own expected DeLong placements for roc(aSAH$outcome, aSAH$s100b) (41 poor-outcome cases, 72
# controls; tests/testthat/helper-deLongPlacementsCpp-expected.R in xrobin/pROC), for which pROC prints
# "Area under the curve: 0.7314, 95% CI: 0.6301-0.8326 (DeLong)" (Robin et al. 2011, BMC Bioinformatics).
PROC_S100B_CASES = [
    0.5625, 0.4375, 0.715277777777778, 0.541666666666667, 0.902777777777778, 1, 0.972222222222222,
    0.180555555555556, 0.854166666666667, 0.347222222222222, 0.180555555555556, 0.888888888888889, 0.875,
    0.965277777777778, 1, 0.819444444444444, 1, 1, 1, 0.180555555555556, 1, 0.833333333333333, 0,
    0.347222222222222, 0.805555555555556, 1, 0.819444444444444, 1, 0.263888888888889, 0.819444444444444, 0.5625,
    0.4375, 0.513888888888889, 0.805555555555556, 1, 0.611111111111111, 1, 0.840277777777778, 1, 1,
    0.902777777777778,
]
PROC_S100B_CONTROLS = [
    0.707317073170732, 0.670731707317073, 0.804878048780488, 0.975609756097561, 0.341463414634146,
    0.634146341463415, 0.804878048780488, 0.804878048780488, 0.975609756097561, 0.890243902439024,
    0.975609756097561, 0.853658536585366, 0.768292682926829, 0.939024390243902, 0.634146341463415,
    0.939024390243902, 0.768292682926829, 0.707317073170732, 0.634146341463415, 0.975609756097561,
    0.646341463414634, 0.670731707317073, 0.439024390243902, 0.853658536585366, 0.292682926829268,
    0.341463414634146, 0.646341463414634, 0.939024390243902, 0.390243902439024, 0.341463414634146,
    0.768292682926829, 0.890243902439024, 0.853658536585366, 0.890243902439024, 0.975609756097561,
    0.707317073170732, 0.804878048780488, 0.670731707317073, 0.658536585365854, 0.975609756097561,
    0.975609756097561, 0.853658536585366, 0.975609756097561, 0.853658536585366, 0.890243902439024,
    0.646341463414634, 0.853658536585366, 0.890243902439024, 0.451219512195122, 0.768292682926829,
    0.51219512195122, 0.939024390243902, 0.804878048780488, 0.475609756097561, 0.939024390243902,
    0.975609756097561, 0.585365853658537, 0.414634146341463, 0.804878048780488, 0.658536585365854,
    0.890243902439024, 0.670731707317073, 0.804878048780488, 0.939024390243902, 0.975609756097561,
    0.634146341463415, 0.658536585365854, 0.341463414634146, 0.634146341463415, 0.658536585365854,
    0.292682926829268, 0.329268292682927,
]

# Hanley & McNeil (1982), Table 1: 109 CT images rated 1 (definitely normal) … 5 (definitely abnormal).
HM_NORMAL = (33, 6, 6, 11, 2)
HM_ABNORMAL = (3, 2, 2, 11, 33)


def hanley_mcneil_ratings():
    scores = np.concatenate([np.repeat(np.arange(1, 6), HM_ABNORMAL), np.repeat(np.arange(1, 6), HM_NORMAL)])
    members = np.arange(len(scores)) < sum(HM_ABNORMAL)
    return scores.astype(float), members


def brute_force_placements(scores, members):
    pos, neg = scores[members], scores[~members]
    wins = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    return wins.mean(1), wins.mean(0)


@pytest.mark.parametrize("seed,ties", [(0, False), (1, True), (2, True)])
def test_delong_placements_match_brute_force_midranks_and_sklearn(seed, ties):
    rng = np.random.default_rng(seed)
    scores = np.concatenate([rng.normal(0.8, 1, 37), rng.normal(0, 1, 211)])
    if ties:
        scores = np.round(scores, 1)
    members = np.arange(len(scores)) < 37
    v10, v01 = delong_placements(scores, members)
    b10, b01 = brute_force_placements(scores, members)
    np.testing.assert_allclose(v10, b10, atol=1e-12)
    np.testing.assert_allclose(v01, b01, atol=1e-12)
    # Sun & Xu's form: V10 = (T_Z − T_X)/U and V01 = 1 − (T_Z − T_Y)/M, from midranks.
    pooled = rankdata(scores)
    np.testing.assert_allclose(v10, (pooled[members] - rankdata(scores[members])) / 211, atol=1e-12)
    np.testing.assert_allclose(v01, 1 - (pooled[~members] - rankdata(scores[~members])) / 37, atol=1e-12)
    estimate = delong_auc(scores, members)
    assert estimate.auc == pytest.approx(roc_auc_score(members, scores), abs=1e-12)
    # DeLong, DeLong & Clarke-Pearson (1988): S10/m + S01/n from the placements, written out here.
    expected = b10.var(ddof=1) / 37 + b01.var(ddof=1) / 211
    assert estimate.variance == pytest.approx(expected, rel=1e-12)


def test_delong_reproduces_proc_on_the_asah_example():
    estimate = auc_from_placements(np.asarray(PROC_S100B_CASES), np.asarray(PROC_S100B_CONTROLS))
    assert estimate.auc == pytest.approx(0.7314, abs=5e-5)
    # pROC's interval uses the normal quantile; ours adds Welch–Satterthwaite df, so it is a bit wider.
    low, high = dataclasses.replace(estimate, df=math.inf).interval(0.95)
    assert (round(low, 4), round(high, 4)) == (0.6301, 0.8326)
    t_low, t_high = estimate.interval(0.95)
    assert t_low < low and t_high > high and estimate.df == 40


def test_hanley_mcneil_worked_example():
    scores, members = hanley_mcneil_ratings()
    estimate = delong_auc(scores, members)
    assert round(estimate.auc, 3) == 0.893  # the paper's W
    # The paper's standard error for this example, from its exponential approximation, is 0.032.
    assert math.sqrt(hanley_mcneil_variance(estimate.auc, 51, 58)) == pytest.approx(0.032, abs=6e-4)
    # At AUC ½ the formula is the exact null variance of the Mann–Whitney statistic.
    assert hanley_mcneil_variance(0.5, 27, 1259) == pytest.approx((27 + 1259 + 1) / (12 * 27 * 1259), rel=1e-12)


def test_hanley_mcneil_variance_matches_simulation_of_its_model():
    # Negative-exponential scores (member survival = non-member survival ^ ((1−A)/A)) are the model
    # for which Q1 = A/(2−A) and Q2 = 2A²/(1+A) are exact.
    rng = np.random.default_rng(0)
    members, auc = np.arange(80) < 30, 0.8
    rate = (1 - auc) / auc
    aucs = [delong_auc(np.concatenate([rng.exponential(1 / rate, 30), rng.exponential(1, 50)]), members).auc
            for _ in range(2000)]
    assert np.mean(aucs) == pytest.approx(auc, abs=0.005)
    assert np.var(aucs) == pytest.approx(hanley_mcneil_variance(auc, 30, 50), rel=0.08)


def test_t_intervals_keep_small_requests_near_the_nominal_false_fail_rate():
    """Null data (members and non-members from one distribution): how often a verdict at the Bonferroni
    level would call a leak. With the normal quantile small requests cross it far more often than the
    nominal one-sided (1 − level)/2; the t quantile with min(M, U) − 1 df keeps it near nominal."""
    level = bonferroni_level(0.95, 8)
    nominal = (1 - level) / 2
    rng = np.random.default_rng(1)
    draws = 4000
    for n_members in (3, 5, 10):
        members, nonmembers = rng.normal(size=(draws, n_members)), rng.normal(size=(draws, 360))
        wins = (members[:, :, None] > nonmembers[:, None, :]).astype(float)  # brute-force placements
        v10, v01 = wins.mean(2), wins.mean(1)
        auc = v10.mean(1)
        se = np.sqrt(v10.var(1, ddof=1) / n_members + v01.var(1, ddof=1) / 360)
        first = delong_auc(np.concatenate([members[0], nonmembers[0]]), np.arange(n_members + 360) < n_members)
        assert (first.auc, first.se) == pytest.approx((auc[0], se[0]), abs=1e-12)
        t_rate = np.mean(auc - two_sided_quantile(level, first.df) * se > 0.5)
        z_rate = np.mean(auc - two_sided_quantile(level) * se > 0.5)
        assert t_rate < 2.5 * nominal
        assert z_rate > 4 * nominal and z_rate > 2 * t_rate


def test_minimum_detectable_auc_is_reached_with_at_least_the_stated_power():
    level = bonferroni_level(0.95, 8)
    assert minimum_detectable_auc(1, 1259, level=level) is None
    assert minimum_detectable_auc(3, 1259, level=level) is None  # a t quantile with ~2 df: nothing detectable
    detectable = minimum_detectable_auc(27, 1259, level=level)
    assert minimum_detectable_auc(100, 1259, level=level) < detectable < minimum_detectable_auc(10, 1259, level=level)
    # Binormal scores at exactly that AUC: the DeLong verdict detects them in ≥ 80 % of draws.
    rng = np.random.default_rng(2)
    shift = math.sqrt(2) * norm.ppf(detectable)
    members = np.arange(27 + 1259) < 27
    hits = sum(delong_auc(np.concatenate([rng.normal(shift, 1, 27), rng.normal(0, 1, 1259)]), members)
               .interval(level)[0] > 0.5 for _ in range(800))
    assert 0.8 <= hits / 800 < 0.95
    needed = members_needed(1259, target=0.75, level=level)
    assert minimum_detectable_auc(needed, 1259, level=level) <= 0.75 < minimum_detectable_auc(needed - 1, 1259,
                                                                                               level=level)


def test_minimum_detectable_accuracy_is_reached_with_about_the_stated_power():
    from auditkit.audit.metrics import lr_mia_draws

    level = bonferroni_level(0.95, 8)
    n = 100
    detectable = minimum_detectable_accuracy(n, level=level, splits=50, test_fraction=0.1)
    assert minimum_detectable_accuracy(9, level=level, splits=50, test_fraction=0.1) > detectable > 0.6
    # Two unit Gaussians whose best threshold has accuracy `detectable`; five draws of the LR attack each.
    rng = np.random.default_rng(3)
    shift = 2 * norm.ppf(detectable)
    hits = 0
    for _ in range(60):
        accuracies = lr_mia_draws(rng.normal(-shift, 1, n), rng.normal(0, 1, 600), seed=0, draws=5).accuracies
        summary = corrected_resampled_mean(accuracies.ravel(), test_fraction=0.1, held_out=20)
        hits += summary.interval(level)[0] > 0.5
    assert hits / 60 >= 0.7


def test_clopper_pearson_matches_scipy_exact_interval():
    for k, n in ((0, 27), (1, 27), (13, 27), (27, 27), (3, 1000)):
        low, high = clopper_pearson(k, n, level=0.95)
        expected = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
        assert float(low) == pytest.approx(expected.low, abs=1e-12) and float(high) == pytest.approx(expected.high,
                                                                                                       abs=1e-12)


def test_corrected_resampled_interval_and_its_binomial_floor():
    values = np.asarray([0.5, 0.6, 0.55, 0.45, 0.5, 0.65, 0.6, 0.5, 0.55, 0.6])
    low, high = corrected_resampled_mean(values, test_fraction=0.1).interval(0.95)
    # Nadeau & Bengio: mean ± t(0.975, 9)·sqrt((1/10 + 0.1/0.9)·s²), mean 0.55, s² = 0.0038889; t = 2.2622.
    half = 2.2622 * np.sqrt((0.1 + 0.1 / 0.9) * 0.0038888889)
    assert low == pytest.approx(0.55 - half, abs=1e-4) and high == pytest.approx(0.55 + half, abs=1e-4)
    # Every split exactly ½ (a constant prediction on balanced splits): no zero-width interval.
    constant = corrected_resampled_mean(np.full(50, 0.5), test_fraction=0.1, held_out=6)
    assert constant.se == pytest.approx(math.sqrt((1 / 50 + 1 / 9) * 0.25 / 6))


def test_ratio_of_means_interval_covers_the_true_ratio():
    rng = np.random.default_rng(4)
    covered = 0
    for seed in range(300):
        estimate = ratio_of_means(rng.exponential(0.5, 27), rng.exponential(1.0, 400), seed=seed, rounds=1000)
        low, high = estimate.interval(0.95)
        covered += low <= 0.5 <= high
    assert 0.92 <= covered / 300 <= 0.98
    with pytest.raises(ValueError, match="at least 2"):
        ratio_of_means(np.ones(1), np.ones(5), seed=0)


def test_ratio_of_means_stays_valid_when_rare_large_losses_carry_the_mean():
    """A well-fit model: 97 % of losses tiny, 3 % (misclassified) large. A forget set drawn from the same
    distribution often holds none of the large ones; the delta method on the forget set's own variance then
    calls its loss "far below" the test loss most of the time, the resampled pivot almost never."""
    rng = np.random.default_rng(5)
    level = bonferroni_level(0.95, 8)

    def losses(n):
        wrong = rng.random(n) < 0.03
        return np.where(wrong, rng.exponential(4.0, n) + 0.7, rng.exponential(0.002, n))

    delta_fails = pivot_fails = 0
    for seed in range(100):
        forget, test = losses(27), losses(172)
        pivot_fails += ratio_of_means(forget, test, seed=seed, rounds=2000).interval(level)[1] < 0.5
        log_se = math.sqrt(forget.var(ddof=1) / (27 * forget.mean() ** 2) + test.var(ddof=1) / (172 * test.mean() ** 2))
        delta_fails += forget.mean() / test.mean() * math.exp(two_sided_quantile(level) * log_se) < 0.5
    assert pivot_fails <= 1 and delta_fails > 25
    # Where a mean of 27 test losses is stable, a forget set 50× below is still called far below; with
    # losses this heavy-tailed it is not (a test-like sample of 27 lacks the large losses 44 % of the time):
    # the rank-based attacks, not the mean, are what see that leak.
    memorised = rng.exponential(0.004, 27)
    assert ratio_of_means(memorised, rng.exponential(0.2, 1259), seed=0).interval(level)[1] < 0.5
    assert ratio_of_means(memorised, losses(1259), seed=0).interval(level)[1] > 0.5
