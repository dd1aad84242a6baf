"""U-LiRA (Hayes et al. 2024, "Inexact unlearning needs more careful evaluations to avoid a false sense of
privacy", arXiv 2403.01218): a per-example unlearning attack. For each forgotten ID, does the audited model's
logit-scaled confidence look like that of models that saw the ID and then unlearned it with the audited
method, or like that of models that never saw it?"""

from __future__ import annotations

import numpy as np

from auditkit.audit.results import FLAGGED_SHARE
from auditkit.audit.stats import (
    benjamini_hochberg,
    clopper_pearson,
    gaussian_log_likelihood_ratio,
    likelihood_ratio_p_value,
)
from auditkit.errors import InputError
from auditkit.interfaces import Attack, AttackInput, AttackOutput, Statistic

_SIGMA_FLOOR = 0.1  # fraction of the pooled σ below which a per-example σ is not trusted (as lira-offline)
VARIANCES = ("global", "per-example")
SHADOW_DATA = ("retain", "halves")


def fit_gaussians(unlearned: np.ndarray, never_seen: np.ndarray, *, variance: str,
                  pool: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-ID Gaussians of the logit-scaled confidence of ``unlearned [U, n]`` and ``never_seen [R, n]`` shadows.

    Means are per ID. ``variance="global"`` (Carlini et al.'s fixed variance) gives each kind one σ pooled
    over the IDs in ``pool`` (``[n]`` bool, default all), with ``n_pool·(K − 1)`` degrees of freedom;
    ``"per-example"`` gives each ID its own σ per kind (K − 1 degrees of freedom), floored at a tenth of
    the pooled σ. Returns ``mean_in``, ``sd_in``, ``mean_out``, ``sd_out`` (``[n]``), ``null_scale`` (the
    never-seen predictive spread ``sd_out·√(1 + 1/R)``) and ``null_df``; NaN spreads where there are too
    few shadows to estimate one.
    """
    pool = np.ones(unlearned.shape[1], dtype=bool) if pool is None else np.asarray(pool, dtype=bool)
    fits = {}
    for name, values in (("in", unlearned), ("out", never_seen)):
        count, n = values.shape
        mean = values.mean(0)
        squares = ((values - mean) ** 2).sum(0)
        dof = count - 1
        pooled = np.sqrt(squares[pool].sum() / (pool.sum() * dof)) if dof > 0 else np.nan
        if variance == "global" or dof < 1:
            sd, df = np.full(n, pooled), float(pool.sum() * dof)
        else:
            sd, df = np.maximum(np.sqrt(squares / dof), _SIGMA_FLOOR * pooled), float(dof)
        fits[f"mean_{name}"], fits[f"sd_{name}"], fits[f"df_{name}"] = mean, sd, df
    return {"mean_in": fits["mean_in"], "sd_in": fits["sd_in"], "mean_out": fits["mean_out"],
            "sd_out": fits["sd_out"], "null_scale": fits["sd_out"] * np.sqrt(1 + 1 / never_seen.shape[0]),
            "null_df": fits["df_out"] if fits["df_out"] > 0 else np.nan}


def score_ids(target: np.ndarray, unlearned: np.ndarray, never_seen: np.ndarray, *, variance: str,
              pool: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``[n]`` log likelihood ratios (unlearned over never-seen; higher = looks unlearned, i.e. seen) of the
    audited model's values ``target [n]`` at n IDs, and their p-values under the never-seen distribution;
    ``unlearned [U, n]`` and ``never_seen [R, n]`` are the shadows' values there, ``pool`` as for
    :func:`fit_gaussians`."""
    fit = fit_gaussians(unlearned, never_seen, variance=variance, pool=pool)
    gaussians = {key: fit[key] for key in ("mean_in", "sd_in", "mean_out", "sd_out")}
    scores = gaussian_log_likelihood_ratio(target, **gaussians)
    p_values = likelihood_ratio_p_value(target, **gaussians, null_scale=fit["null_scale"], null_df=fit["null_df"])
    return scores, p_values


def held_out_balanced_accuracy(unlearned: np.ndarray, never_seen: np.ndarray, *, variance: str) -> float | None:
    """The attacker's balanced accuracy on held-out shadow pairs (leave one pair out).

    Pair j is unlearned shadow j and never-seen shadow j (same retain half, same seed). For each pair, the
    Gaussians are fitted on the other pairs and each held-out shadow is called "unlearned" where its log
    likelihood ratio is positive, at every ID; the result is the mean of the two kinds' accuracies (ties
    count half). None with fewer than 3 pairs (two left to fit a spread from).
    """
    pairs = min(unlearned.shape[0], never_seen.shape[0])
    if pairs < 3:
        return None
    hits_in, hits_out = [], []
    for j in range(pairs):
        keep = np.arange(pairs) != j
        fit = fit_gaussians(unlearned[:pairs][keep], never_seen[:pairs][keep], variance=variance)
        gaussians = {key: fit[key] for key in ("mean_in", "sd_in", "mean_out", "sd_out")}
        for values, hits, sign in ((unlearned[j], hits_in, 1.0), (never_seen[j], hits_out, -1.0)):
            ratio = sign * gaussian_log_likelihood_ratio(values, **gaussians)
            hits.append(np.where(ratio > 0, 1.0, np.where(ratio == 0, 0.5, 0.0)))
    return float((np.mean(hits_in) + np.mean(hits_out)) / 2)


class UliraAttack(Attack):
    """Per-example likelihood-ratio test of each forgotten ID against unlearned and never-seen shadows.

    ``shadows`` K (even, ≥ 4): K/2 pairs of a never-seen shadow (the audited recipe on the retain set,
    i.e. a retrained model) and an unlearned one (the recipe on the retain set plus the forget set, then
    the audited run's method and options), pair j with seed j. ``shadow_data``: ``retain`` (default) trains
    them on the whole retain set, so a shadow differs from the audited model's situation only by its seed;
    ``halves`` on the reference models' random retain halves, as LiRA does (the never-seen shadows are then
    reference models, shared with lira-offline and rmia), which trains on half the data the audited model
    did, so its shadows differ from the audited model in data size as well as seed. Per forgotten ID, one Gaussian per kind of its logit-scaled
    confidence; score = the log likelihood ratio of the audited model's value; p-value = the chance that a
    model that never saw the ID scores at least as high (exact for the fitted Gaussians, with the
    never-seen fit's predictive spread); flagged = rejected by Benjamini–Hochberg at the smaller of
    ``fdr`` and the audit's per-check error rate (1 − the verdict level: Bonferroni over the checks).

    ``variance``: ``global`` (default; one σ per kind pooled over the forgotten IDs: with few shadows a
    per-ID σ from K/2 values is noisy and its t tails cost power, Carlini et al.'s fixed-variance finding)
    or ``per-example``.
    """

    PLUGIN_NAME = "u-lira"
    DESCRIPTION = ("per-example unlearning LiRA (Hayes et al. 2024): decides each forgotten ID, even one; costs K "
                   "trainings and K/2 unlearning runs")
    OPTIONS = {"shadows": 16, "variance": "global", "fdr": 0.05, "shadow_data": "retain"}

    def __init__(self, **options) -> None:
        super().__init__(**options)
        shadows, variance, fdr = self.options["shadows"], self.options["variance"], self.options["fdr"]
        if shadows < 4 or shadows % 2:
            raise InputError(f"u-lira option shadows={shadows} must be an even number of at least 4 (half of them "
                             "unlearned, half never-seen)", hint="for example --attack-option u-lira.shadows=16")
        if variance not in VARIANCES:
            raise InputError(f"u-lira option variance={variance!r} is not one of {', '.join(VARIANCES)}",
                             hint="use variance=global (few shadows) or variance=per-example")
        if self.options["shadow_data"] not in SHADOW_DATA:
            raise InputError(f"u-lira option shadow_data={self.options['shadow_data']!r} is not one of "
                             f"{', '.join(SHADOW_DATA)}", hint="use shadow_data=retain (the default) or shadow_data=halves")
        if not 0 < fdr < 1:
            raise InputError(f"u-lira option fdr={fdr!r} must lie strictly between 0 and 1", hint="for example fdr=0.05")

    def shadow_pairs(self) -> int:
        return int(self.options["shadows"]) // 2

    def shadow_pairs_on_halves(self) -> bool:
        return self.options["shadow_data"] == "halves"

    def minimum_detectable_statistic(self, *, n_members: int, n_nonmembers: int, level: float) -> float | None:
        # One flagged ID fails the verdict: whether it would be flagged is shown on the original model.
        return 1 / n_members if n_members else None

    def score(self, data: AttackInput) -> AttackOutput:
        target = data.target
        groups = set(target.groups[data.members].tolist())
        if groups != {"forget"}:
            return AttackOutput(scores=None, abstained=f"u-lira tests forgotten IDs only, not {', '.join(sorted(groups))}")
        variance = self.options["variance"]
        never_seen, unlearned = target.shadow_pair_log_odds()
        members = np.asarray(data.members, dtype=bool)
        # The spreads are pooled over the forgotten IDs alone: a test row is unseen by both kinds of shadow,
        # and pooling its smaller spread would overstate every forgotten ID's evidence. (The test rows'
        # scores only feed the descriptive AUC.)
        scores, p_values = score_ids(target.scaled_confidence, unlearned, never_seen, variance=variance, pool=members)
        if not (np.isfinite(scores[members]).all() and np.isfinite(p_values[members]).all()):
            # A spread of exactly 0 (identical shadows of one kind) leaves no distribution to test against.
            return AttackOutput(scores=None, abstained=(
                "the shadows of one kind agree exactly at some forgotten ID (spread 0), so no likelihood ratio "
                "can be computed; use more shadows or check that they differ"))
        rate = min(float(self.options["fdr"]), 1 - data.level)
        flagged = benjamini_hochberg(p_values[members], rate=rate)
        n, k = int(members.sum()), int(flagged.sum())
        low, high = clopper_pearson(k, n, level=0.95)
        accuracy = held_out_balanced_accuracy(unlearned[:, members], never_seen[:, members], variance=variance)
        per_example = [{"id": str(i), "score": float(s), "p_value": float(p), "flagged": bool(f)}
                       for i, s, p, f in zip(target.ids[members], scores[members], p_values[members], flagged)]
        return AttackOutput(
            scores=scores,
            statistic=Statistic(FLAGGED_SHARE, k / n, float(low), float(high), chance=0.0),
            parameters={"shadows": int(self.options["shadows"]), "shadow_data": self.options["shadow_data"],
                        "variance": variance, "fdr": float(self.options["fdr"]),
                        "bh_rate": rate, "flagged": k, "ids": n, "held_out_balanced_accuracy": accuracy,
                        "held_out_pairs": min(unlearned.shape[0], never_seen.shape[0])},
            per_example=per_example,
        )
