"""Statistics that decide a verdict: AUC variance and intervals, exact rate bounds, power, corrections.

Every function names its source; ``tests/test_stats.py`` checks each against a published value or an
independent computation (brute force, scikit-learn, scipy, simulation).

Conventions: ``level`` is a two-sided confidence (0.95 → the central 95 % interval); "members" are the
positive class (forgotten or retained samples), "non-members" the negative one (the test split).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq
from scipy.special import betaincinv
from scipy.stats import norm
from scipy.stats import t as t_dist

POWER = 0.8
"""The power at which minimum detectable effects are stated (the usual 80 %)."""


def bonferroni_level(confidence: float, tests: int) -> float:
    """Two-sided confidence of each of ``tests`` intervals so that all hold at once with ``confidence``.

    Bonferroni's inequality: P(any of k intervals misses) ≤ Σ α/k = α.
    """
    return 1 - (1 - confidence) / max(int(tests), 1)


def two_sided_quantile(level: float, df: float | None = None) -> float:
    """The ``0.5 + level/2`` quantile of Student's t with ``df`` degrees of freedom (normal when None or ∞)."""
    if df is None or not math.isfinite(df):
        return float(norm.ppf(0.5 + level / 2))
    return float(t_dist.ppf(0.5 + level / 2, df))


def t_interval(center: float, se: float, df: float | None, level: float) -> tuple[float, float]:
    """``center ± t(df)·se`` at two-sided confidence ``level``."""
    half = two_sided_quantile(level, df) * se
    return center - half, center + half


# ---------------------------------------------------------------- the AUC


@dataclass(frozen=True)
class AucEstimate:
    """The Mann–Whitney AUC with DeLong's variance and the degrees of freedom of its t interval.

    ``interval(level)`` is ``auc ± t(df)·√variance``, clipped to [0, 1].
    """

    auc: float
    variance: float
    df: float
    n_members: int
    n_nonmembers: int

    @property
    def se(self) -> float:
        return math.sqrt(self.variance)

    def interval(self, level: float) -> tuple[float, float]:
        low, high = t_interval(self.auc, self.se, self.df, level)
        return max(low, 0.0), min(high, 1.0)


def sorted_placements(positives: np.ndarray, negatives: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong's placement values from the two classes' scores, each sorted ascending.

    ``V10_i`` is the share of non-members scored below member i (ties count ½), ``V01_j`` the share of
    members scored above non-member j; both means are the AUC. These are Sun & Xu's midrank differences
    (2014, "Fast implementation of DeLong's algorithm", IEEE SPL 21(11), eq. 10–11: ``V10 = (T_Z − T_X)/U``,
    ``V01 = 1 − (T_Z − T_Y)/M``), counted here by binary search of each sorted class in the other, O(N log N).
    Returned in the order of the sorted inputs.
    """
    below = np.searchsorted(negatives, positives, "left") + np.searchsorted(negatives, positives, "right")
    above = 2 * len(positives) - np.searchsorted(positives, negatives, "left") - np.searchsorted(positives, negatives,
                                                                                                 "right")
    return below / (2 * len(negatives)), above / (2 * len(positives))


def delong_placements(scores: np.ndarray, members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`sorted_placements` of ``scores [N]`` split by the bool mask ``members [N]``, in input order."""
    scores = np.asarray(scores, dtype=np.float64)
    members = np.asarray(members, dtype=bool)
    positives, negatives = scores[members], scores[~members]
    pos_order, neg_order = np.argsort(positives, kind="stable"), np.argsort(negatives, kind="stable")
    v10, v01 = sorted_placements(positives[pos_order], negatives[neg_order])
    out10, out01 = np.empty_like(v10), np.empty_like(v01)
    out10[pos_order], out01[neg_order] = v10, v01
    return out10, out01


def auc_from_placements(v10: np.ndarray, v01: np.ndarray) -> AucEstimate:
    """AUC, DeLong's variance ``S10/M + S01/U`` (DeLong, DeLong & Clarke-Pearson 1988, eq. 2) and df.

    Intervals use a t quantile with ``min(M, U) − 1`` degrees of freedom, the conservative choice for
    a sum of two variance estimates (as in Welch's test when the Satterthwaite df is not trusted): a
    deletion request is usually the small side, and the normal quantile lets small requests cross the
    Bonferroni threshold far too often. Measured on null data at 360 non-members and the 8-check level
    (one-sided nominal 0.31 %): the normal quantile calls a leak in 13 / 6.5 / 3.5 / 1.5 % of draws at
    2 / 3 / 5 / 10 members, Welch–Satterthwaite df in 4.1 / 1.6 / 1.1 / 0.7 %, ``min(M, U) − 1`` in
    0 / 0.35 / 0.65 / 0.65 % (``tests/test_stats.py`` checks this).
    """
    v10, v01 = np.asarray(v10, dtype=np.float64), np.asarray(v01, dtype=np.float64)
    m, u = len(v10), len(v01)
    if m < 2 or u < 2:
        raise ValueError(f"DeLong's variance needs at least 2 members and 2 non-members, got {m} and {u}")
    variance = v10.var(ddof=1) / m + v01.var(ddof=1) / u
    return AucEstimate(float(v10.mean()), float(variance), float(min(m, u) - 1), m, u)


def delong_auc(scores: np.ndarray, members: np.ndarray) -> AucEstimate:
    """The AUC of ``scores [N]`` (higher = member) for the bool mask ``members [N]``, with its DeLong variance."""
    return auc_from_placements(*delong_placements(scores, members))


def hanley_mcneil_variance(auc: float, n_members: int, n_nonmembers: int) -> float:
    """Variance of the AUC estimate under Hanley & McNeil's model (Radiology 143:29–36, 1982, eq. 1–2).

    ``[A(1−A) + (M−1)(Q1 − A²) + (U−1)(Q2 − A²)] / (M·U)`` with ``Q1 = A/(2−A)``, ``Q2 = 2A²/(1+A)``;
    at A = ½ it is the exact null variance ``(M + U + 1)/(12·M·U)`` of the Mann–Whitney statistic.
    """
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    return (auc * (1 - auc) + (n_members - 1) * (q1 - auc**2) + (n_nonmembers - 1) * (q2 - auc**2)) / (
        n_members * n_nonmembers
    )


def minimum_detectable_auc(n_members: int, n_nonmembers: int, *, level: float, power: float = POWER) -> float | None:
    """The smallest AUC that a verdict at ``level`` detects (lower bound above ½) with probability ``power``.

    Power at a true AUC A: ``Φ((A − ½ − t·σ0) / σA)``, with σ0, σA from :func:`hanley_mcneil_variance`
    at ½ and at A, and t the verdict's quantile (``min(M, U) − 1`` df, as in :func:`auc_from_placements`)
    (Hanley & McNeil 1982, §"sample size"; solved for A numerically). None when no AUC below 1 reaches
    ``power`` (e.g. one member). Conservative: in simulations the DeLong verdict detects binormal scores
    at exactly this AUC in 82–95 % of draws, exponential ones in 87–100 %.
    """
    if n_members < 2 or n_nonmembers < 2:
        return None
    threshold = two_sided_quantile(level, min(n_members, n_nonmembers) - 1) * math.sqrt(
        hanley_mcneil_variance(0.5, n_members, n_nonmembers))

    def shortfall(auc: float) -> float:
        spread = math.sqrt(max(hanley_mcneil_variance(auc, n_members, n_nonmembers), 1e-300))
        return float(norm.cdf((auc - 0.5 - threshold) / spread)) - power

    top = 1 - 1e-9
    if shortfall(top) < 0:
        return None
    return float(brentq(shortfall, 0.5, top, xtol=1e-7))


def members_needed(n_nonmembers: int, *, target: float, level: float, power: float = POWER,
                   limit: int = 10_000_000) -> int | None:
    """The fewest members for which :func:`minimum_detectable_auc` is at most ``target`` (None beyond ``limit``)."""

    def enough(n: int) -> bool:
        detectable = minimum_detectable_auc(n, n_nonmembers, level=level, power=power)
        return detectable is not None and detectable <= target

    high = 2
    while not enough(high):
        if high >= limit:
            return None
        high = min(high * 2, limit)
    low = max(high // 2, 1)
    while high - low > 1:  # enough(high) holds, enough(low) does not (or low is the smallest size)
        middle = (low + high) // 2
        low, high = (low, middle) if enough(middle) else (middle, high)
    return high if not enough(low) else low


# ---------------------------------------------------------------- rates


def clopper_pearson(k: np.ndarray | int, n: np.ndarray | int, *, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Exact two-sided interval for a binomial rate ``k/n`` (Clopper & Pearson 1934), elementwise.

    ``[Beta⁻¹(α/2; k, n−k+1), Beta⁻¹(1−α/2; k+1, n−k)]`` with 0 / 1 at the ends.
    """
    k, n = np.broadcast_arrays(np.asarray(k, dtype=np.float64), np.asarray(n, dtype=np.float64))
    alpha = 1 - level
    # betaincinv(a, b, q) is the Beta(a, b) quantile, as a ufunc (scipy.stats.beta.ppf costs ~1 ms a call).
    low = np.where(k > 0, betaincinv(np.maximum(k, 1.0), n - k + 1, alpha / 2), 0.0)
    high = np.where(k < n, betaincinv(k + 1, np.maximum(n - k, 1.0), 1 - alpha / 2), 1.0)
    return low, high


# ---------------------------------------------------------------- cross-validated accuracies


@dataclass(frozen=True)
class ResampledMean:
    """The mean of J resampled held-out scores with Nadeau & Bengio's corrected standard error."""

    mean: float
    se: float
    df: float

    def interval(self, level: float) -> tuple[float, float]:
        return t_interval(self.mean, self.se, self.df, level)


def corrected_resampled_mean(
    values: np.ndarray, *, test_fraction: float, held_out: int | None = None
) -> ResampledMean:
    """Mean of ``[J]`` scores from J random train/test splits, with the corrected resampled t (Nadeau &
    Bengio 2003, Machine Learning 52:239–281, eq. 8).

    The splits share samples, so the naive ``s²/J`` understates the variance; the corrected one is
    ``(1/J + n_test/n_train)·s²`` with J − 1 degrees of freedom. With ``held_out`` (the rows each
    split's accuracy is measured on), ``s²`` is floored at the binomial ``p̄(1 − p̄)/held_out``: a
    classifier that predicts one class on every balanced split scores exactly ½ every time, which
    says nothing about what another draw of the same size would give.
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    mean = float(values.mean())
    spread = float(values.var(ddof=1)) if len(values) > 1 else 0.0
    if held_out:
        spread = max(spread, mean * (1 - mean) / held_out)
    se = math.sqrt((1 / len(values) + test_fraction / (1 - test_fraction)) * spread)
    return ResampledMean(mean, se, float(max(len(values) - 1, 1)))


def minimum_detectable_accuracy(
    n_per_class: int, *, level: float, splits: int, test_fraction: float, power: float = POWER
) -> float | None:
    """The smallest cross-validated accuracy a verdict at ``level`` detects with probability ``power``.

    A planning approximation of :func:`corrected_resampled_mean`'s interval: each of the ``splits``
    held-out accuracies is binomial on ``⌈test_fraction·2n⌉`` rows, so at accuracy p the corrected
    standard error is ``√((1/J + ρ)·p(1−p)/m)``; solved for ``p − ½ = (t_{level} + z_{power})·se(p)``
    (the usual normal power equation, with the verdict's t quantile at J − 1 df). None when no accuracy
    below 1 is detectable.
    """
    held_out = math.ceil(test_fraction * 2 * n_per_class)
    if n_per_class < 2 or held_out < 1:
        return None
    ratio = test_fraction / (1 - test_fraction)
    quantile = two_sided_quantile(level, splits - 1) + float(norm.ppf(power))

    def shortfall(p: float) -> float:
        return p - 0.5 - quantile * math.sqrt((1 / splits + ratio) * p * (1 - p) / held_out)

    top = 1 - 1e-9
    if shortfall(top) < 0:
        return None
    return float(brentq(shortfall, 0.5, top, xtol=1e-7))


# ---------------------------------------------------------------- the loss ratio

RATIO_ROUNDS = 4000
"""Resampling rounds behind :func:`ratio_of_means` (≈ 12 in each 0.3 % tail, the 8-check verdict level's)."""
_EXACT_RESAMPLING = 2_000_000  # rounds × n above which a mean's sampling distribution is taken as normal


@dataclass(frozen=True)
class RatioEstimate:
    """``mean(forget) / mean(test)`` and resampled values of its pivot ``log(A/B)`` (see :func:`ratio_of_means`)."""

    ratio: float
    log_pivots: np.ndarray

    def interval(self, level: float) -> tuple[float, float]:
        low, high = np.quantile(self.log_pivots, [(1 - level) / 2, (1 + level) / 2])
        return self.ratio * math.exp(-high), self.ratio * math.exp(-low)


def ratio_of_means(forget: np.ndarray, test: np.ndarray, *, seed: int, rounds: int = RATIO_ROUNDS) -> RatioEstimate:
    """The ratio R of the forget set's mean loss to the test split's, with an interval valid for heavy tails.

    Losses of a well-fit model are mostly tiny with a few large ones (misclassified samples), so a mean
    over a few dozen forgotten samples depends on whether one of those happens to be among them, and the
    delta method (or a bootstrap of the forget set itself) calls a retrained model's forget loss "far
    below" the test loss in 25–69 % of draws at 10–43 forgotten samples (measured, ``tests/test_stats.py``).
    Instead the interval assumes the scaling model ``forget loss ~ R · test loss`` (which a model that
    never saw the samples satisfies with R = 1): then ``mean(forget) / mean(test) = R · A/B`` with A the
    mean of n_forget and B the mean of n_test draws from the test losses' distribution, whose pivot A/B
    is resampled from the test losses (exactly; or from the normal approximation of a mean when rounds × n
    exceeds 2 M, i.e. n > 500 at the default rounds). The interval is ``[R̂ / q_hi, R̂ / q_lo]`` with q the
    pivot's quantiles: a bootstrap-calibrated pivot (Efron & Tibshirani 1993, ch. 12), seeded.
    """
    x, y = np.asarray(forget, dtype=np.float64), np.asarray(test, dtype=np.float64)
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"a ratio interval needs at least 2 values on each side, got {len(x)} and {len(y)}")
    rng = np.random.default_rng([seed, 0x7A710])

    def means(n: int) -> np.ndarray:
        if rounds * n <= _EXACT_RESAMPLING:
            return y[rng.integers(0, len(y), (rounds, n))].mean(1)
        return rng.normal(y.mean(), y.std(ddof=1) / math.sqrt(n), rounds)

    tiny = np.finfo(np.float64).tiny
    pivots = np.log(np.maximum(means(len(x)), tiny) / np.maximum(means(len(y)), tiny))
    return RatioEstimate(float(x.mean() / max(y.mean(), tiny)), pivots)


# ---------------------------------------------------------------- per-example tests (u-lira)


def gaussian_log_likelihood_ratio(x: np.ndarray, *, mean_in: np.ndarray, sd_in: np.ndarray, mean_out: np.ndarray,
                                  sd_out: np.ndarray) -> np.ndarray:
    """``log N(x; mean_in, sd_in²) − log N(x; mean_out, sd_out²)``, elementwise (LiRA's test statistic,
    Carlini et al. 2022, eq. 4, in log form; Hayes et al. 2024 use it with "in" = unlearned shadows)."""
    x, mean_in, sd_in, mean_out, sd_out = (np.asarray(v, dtype=np.float64) for v in (x, mean_in, sd_in, mean_out, sd_out))
    return (np.log(sd_out / sd_in) - 0.5 * ((x - mean_in) / sd_in) ** 2 + 0.5 * ((x - mean_out) / sd_out) ** 2)


def likelihood_ratio_p_value(x: np.ndarray, *, mean_in: np.ndarray, sd_in: np.ndarray, mean_out: np.ndarray,
                             sd_out: np.ndarray, null_scale: np.ndarray, null_df: np.ndarray | float) -> np.ndarray:
    """``P(Λ(X) ≥ Λ(x))`` for ``X`` from the null ("out") distribution, Λ the Gaussian log likelihood ratio
    of :func:`gaussian_log_likelihood_ratio` (the exact tail of the Neyman–Pearson statistic), elementwise.

    The null is ``X = mean_out + null_scale · T`` with ``T`` Student's t on ``null_df`` degrees of freedom
    (normal for ∞): the predictive distribution of a new draw when the out Gaussian was fitted to m
    samples (``null_scale = sd_out·√(1 + 1/m)``, df = the variance estimate's). ``Λ(X) − Λ(x)`` is a
    quadratic ``aX² + bX + c`` with ``x`` one root, so the other is ``−b/a − x`` and the region Λ ≥ Λ(x)
    is a half-line (``a = 0``: equal spreads), both tails outside the roots (``a > 0``: the in
    distribution is wider) or the interval between them (``a < 0``).
    """
    x, mean_in, sd_in, mean_out, sd_out, null_scale = np.broadcast_arrays(*(
        np.asarray(v, dtype=np.float64) for v in (x, mean_in, sd_in, mean_out, sd_out, null_scale)))
    df = np.broadcast_to(np.asarray(null_df, dtype=np.float64), x.shape)
    a = 0.5 / sd_out**2 - 0.5 / sd_in**2
    b = mean_in / sd_in**2 - mean_out / sd_out**2

    def cdf(value: np.ndarray) -> np.ndarray:
        z = (value - mean_out) / null_scale
        return np.where(np.isfinite(df), t_dist.cdf(z, np.where(np.isfinite(df), df, 1.0)), norm.cdf(z))

    def sf(value: np.ndarray) -> np.ndarray:
        return cdf(2 * mean_out - value)  # the null is symmetric about mean_out

    # a is 0 exactly when the spreads are equal (global variance, or per-example spreads that agree).
    quadratic = np.abs(a) > 1e-12 * np.maximum(0.5 / sd_out**2, 0.5 / sd_in**2)
    with np.errstate(divide="ignore", invalid="ignore"):
        other = np.where(quadratic, -b / np.where(quadratic, a, 1.0) - x, 0.0)
    low, high = np.minimum(x, other), np.maximum(x, other)
    linear = np.where(b > 0, sf(x), np.where(b < 0, cdf(x), 1.0))
    outside = np.minimum(cdf(low) + sf(high), 1.0)
    between = np.clip(cdf(high) - cdf(low), 0.0, 1.0)
    return np.where(~quadratic, linear, np.where(a > 0, outside, between))


def benjamini_hochberg(p_values: np.ndarray, *, rate: float) -> np.ndarray:
    """``[n]`` bool: the hypotheses Benjamini & Hochberg's (1995) step-up procedure rejects at false-discovery
    rate ``rate``: the k smallest p-values, k the largest i with ``p_(i) ≤ i·rate/n``.

    With every hypothesis true (a model that never saw any of them) and independent p-values, it rejects
    anything with probability at most ``rate`` (it then coincides with Simes' global test).
    """
    p = np.asarray(p_values, dtype=np.float64)
    n = len(p)
    if n == 0:
        return np.zeros(0, dtype=bool)
    order = np.argsort(p, kind="stable")
    below = p[order] <= rate * np.arange(1, n + 1) / n
    count = int(np.nonzero(below)[0].max()) + 1 if below.any() else 0
    flagged = np.zeros(n, dtype=bool)
    flagged[order[:count]] = True
    return flagged
