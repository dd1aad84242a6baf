"""Single-signal threshold attacks (Yeom et al. 2018; Song & Mittal 2021): the score is the signal itself,
oriented so that a higher score means "member"."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from auditkit.interfaces import Attack, AttackInput, AttackOutput


class _ThresholdAttack(Attack):
    """Score = ``SIGN · signal``; every threshold on it is one attack, so the ROC covers them all."""

    SIGNAL: ClassVar[str]
    SIGN: ClassVar[float]

    def score(self, data: AttackInput) -> AttackOutput:
        return AttackOutput(scores=self.SIGN * np.asarray(getattr(data.target, self.SIGNAL), dtype=np.float64))


class LossAttack(_ThresholdAttack):
    PLUGIN_NAME = "loss"
    DESCRIPTION = "members have lower cross-entropy loss (Yeom et al. 2018)"
    SIGNAL, SIGN = "loss", -1.0


class EntropyAttack(_ThresholdAttack):
    PLUGIN_NAME = "entropy"
    DESCRIPTION = "members get more certain (lower-entropy) predictions"
    SIGNAL, SIGN = "entropy", -1.0


class ModifiedEntropyAttack(_ThresholdAttack):
    PLUGIN_NAME = "modified-entropy"
    DESCRIPTION = "Song & Mittal's label-aware entropy; lower for members"
    SIGNAL, SIGN = "modified_entropy", -1.0


class ConfidenceAttack(_ThresholdAttack):
    PLUGIN_NAME = "confidence"
    DESCRIPTION = "members get a higher maximum softmax probability"
    SIGNAL, SIGN = "confidence", 1.0


class GradNormAttack(_ThresholdAttack):
    PLUGIN_NAME = "grad-norm"
    DESCRIPTION = "members have a smaller logit-gradient norm ‖softmax − onehot‖"
    SIGNAL, SIGN = "grad_norm", -1.0
