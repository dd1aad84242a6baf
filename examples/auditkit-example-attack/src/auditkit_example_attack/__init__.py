"""An example third-party membership attack, registered through the ``auditkit.attacks`` entry point."""

from __future__ import annotations

import numpy as np

from auditkit.interfaces import Attack, AttackInput, AttackOutput


class LogitMarginAttack(Attack):
    """Score = true-class logit minus the largest other logit (higher = member).

    Training makes a model's margin on its own samples wide; on unseen samples it is narrower or
    negative. Unlike the loss, the margin ignores how the non-maximal logits are spread.
    """

    PLUGIN_NAME = "logit-margin"
    DESCRIPTION = "true-class logit minus the best other logit (example third-party plugin)"

    def score(self, data: AttackInput) -> AttackOutput:
        """``[N]`` float64 margins from the ``[N, C]`` logits of ``data.target``."""
        logits = np.asarray(data.target.logits, dtype=np.float64)
        labels = np.asarray(data.target.labels, dtype=np.int64)
        rows = np.arange(len(labels))
        true = logits[rows, labels]
        others = logits.copy()
        others[rows, labels] = -np.inf
        return AttackOutput(scores=true - others.max(axis=1))
