"""LiRA, offline (Carlini et al. 2022): is the target's confidence on x unusually high for a model that
never saw x? Reference models (never trained on the audited sample) give x's OUT distribution."""

from __future__ import annotations

import numpy as np
from scipy.stats import norm

from auditkit.audit.signals import mean_over_out
from auditkit.interfaces import Attack, AttackInput, AttackOutput

_SIGMA_FLOOR = 0.1  # fraction of the pooled σ below which a per-example σ is not trusted


class LiraOfflineAttack(Attack):
    """Per-example Gaussian fit of the OUT logit-scaled confidences ``log(p_y / (1 − p_y))``.

    Score: ``−log P(OUT ≥ target)``, the one-sided p-value in negative log form (higher = member). The
    mean is per example; the spread is per example too unless ``fixed_variance`` pools it over all
    examples (better with few reference models). Per-example σ is floored at a tenth of the pooled σ so
    that a row whose few OUT values happen to agree does not get an infinite score.
    """

    PLUGIN_NAME = "lira-offline"
    DESCRIPTION = "offline likelihood-ratio attack with reference models (costs K trainings)"
    OPTIONS = {"references": 8, "fixed_variance": False}

    def reference_models(self) -> int:
        return int(self.options["references"])

    def score(self, data: AttackInput) -> AttackOutput:
        target = data.target
        values = target.reference_log_odds()
        out = target.reference_out()
        mean = mean_over_out(values, out)
        residuals = np.where(out, values - mean, np.nan)
        # With one reference model every residual is 0; any common σ then gives the same ranking.
        pooled = float(np.nanstd(residuals)) or 1.0
        fixed = bool(self.options["fixed_variance"]) or values.shape[0] < 2
        if fixed:
            sigma = np.full(len(target), pooled)
        else:
            counts = out.sum(0)
            spread = np.sqrt(np.nansum(residuals**2, axis=0) / np.maximum(counts - 1, 1))
            sigma = np.where(counts >= 2, np.maximum(spread, _SIGMA_FLOOR * pooled), pooled)
        z = (target.scaled_confidence - mean) / sigma
        return AttackOutput(scores=-norm.logsf(z), parameters={
            "fixed_variance": fixed, "pooled_sigma": pooled, "sigma_floor": _SIGMA_FLOOR * pooled})
