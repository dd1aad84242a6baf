"""RMIA, offline (Zarifzadeh et al. 2024): compare x's likelihood ratio p(x|θ)/p(x) against population
samples z; p(x) comes from reference models that never trained on x, scaled by the offline factor a."""

from __future__ import annotations

import numpy as np
from scipy.special import expit
from sklearn.metrics import roc_auc_score

from auditkit.audit.signals import mean_over_out
from auditkit.errors import InputError
from auditkit.interfaces import Attack, AttackInput, AttackOutput

_A_GRID = np.round(np.arange(0.0, 1.01, 0.1), 2)


def rmia_scores(
    target_prob: np.ndarray, reference_prob: np.ndarray, reference_out: np.ndarray,
    z_target_prob: np.ndarray, z_reference_prob: np.ndarray, *, a: float, gamma: float,
) -> np.ndarray:
    """``[N]`` fraction of population points z with ``(p(x|θ)/p(x)) / (p(z|θ)/p(z)) > gamma``.

    ``p(x) ≈ ((1 + a)·mean_OUT p_ref(x) + (1 − a)) / 2``: offline, only OUT reference models exist and
    ``a`` corrects their systematic underestimate of the IN/OUT average.

    Args:
        target_prob: ``[N]`` true-class probability under the audited model.
        reference_prob / reference_out: ``[K, N]`` the same under each reference model, and whether it left x out.
        z_target_prob: ``[Z]`` / z_reference_prob: ``[K, Z]`` the same for the population points.
    """
    prior_x = (1 + a) / 2 * mean_over_out(reference_prob, reference_out) + (1 - a) / 2
    prior_z = (1 + a) / 2 * z_reference_prob.mean(0) + (1 - a) / 2
    ratio_x = target_prob / prior_x
    ratio_z = z_target_prob / prior_z
    # ratio_x / ratio_z > gamma ⟺ ratio_z < ratio_x / gamma (all positive): with the z ratios sorted,
    # the N×Z comparison becomes one binary search per x.
    return np.searchsorted(np.sort(ratio_z), ratio_x / gamma, side="left") / len(ratio_z)


class RmiaAttack(Attack):
    """Offline RMIA with population z points (the validation split) and ``a`` chosen on a reference model.

    ``a = "tune"`` (default) attacks reference model 0 with the others, on the retain rows it did and
    did not train on, for each a in 0, 0.1, …, 1, and keeps the a with the highest AUC (as ML Privacy
    Meter does); a number fixes it.
    """

    PLUGIN_NAME = "rmia"
    DESCRIPTION = "offline robust membership inference attack with reference models (costs K trainings)"
    OPTIONS = {"references": 4, "a": "tune", "gamma": 1.0}

    def reference_models(self) -> int:
        return int(self.options["references"])

    def score(self, data: AttackInput) -> AttackOutput:
        if len(data.population) == 0:
            raise InputError("rmia needs population samples (the validation split) and got none",
                             hint="use a dataset split with a validation part, or drop rmia")
        gamma = float(self.options["gamma"])
        if self.options["a"] == "tune":
            a, tuning = self._choose_a(data, gamma)
            parameters = {"a": a, "a_source": "tuned on reference model 0 (highest AUC over the grid)",
                          "tuning_auc": tuning}
        else:
            a, parameters = self._fixed_a(), {"a_source": "fixed by the a option"}
        target, population = data.target, data.population
        scores = rmia_scores(
            expit(target.scaled_confidence), expit(target.reference_log_odds()), target.reference_out(),
            expit(population.scaled_confidence), expit(population.reference_log_odds()), a=a, gamma=gamma,
        )
        return AttackOutput(scores=scores, parameters={"a": a, "gamma": gamma, **parameters,
                                                       "population_points": len(population)})

    def _fixed_a(self) -> float:
        try:
            a = float(self.options["a"])
        except ValueError:
            a = -1.0
        if not 0 <= a <= 1:
            raise InputError(f"rmia option a={self.options['a']!r} must be 'tune' or a number in [0, 1]",
                             hint="for example a=0.3")
        return a

    def _choose_a(self, data: AttackInput, gamma: float) -> tuple[float, dict[str, float]]:
        calibration = data.calibration
        if calibration is None or calibration.reference_members is None or calibration.reference_members.shape[0] < 2:
            raise InputError("rmia cannot tune a without two or more reference models and their training sets",
                             hint="run rmia through the battery with references >= 2, or fix it with a=0.3")
        probs = expit(calibration.reference_log_odds())
        members = calibration.reference_members
        out = ~members[1:]
        usable = out.any(0)
        if members[0, usable].all() or not members[0, usable].any():
            raise InputError("rmia cannot tune a: reference model 0 has no IN or no OUT calibration rows",
                             hint="audit a larger retain sample, or fix it with a=0.3")
        z_probs = expit(data.population.reference_log_odds())
        aucs = [
            roc_auc_score(members[0, usable], rmia_scores(
                probs[0, usable], probs[1:, usable], out[:, usable], z_probs[0], z_probs[1:], a=a, gamma=gamma))
            for a in _A_GRID
        ]
        return float(_A_GRID[int(np.argmax(aucs))]), {f"{a:g}": float(auc) for a, auc in zip(_A_GRID, aucs)}
