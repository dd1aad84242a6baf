"""Per-sample membership signals of one model, computed once and shared by every attack."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np

SIGNAL_COLUMNS = (
    "loss",
    "entropy",
    "modified_entropy",
    "confidence",
    "scaled_confidence",
    "grad_norm",
)


@dataclass(frozen=True, eq=False)
class SignalTable:
    """Signals of one model over ``N`` audited samples, all float64.

    Attributes:
        model: which model produced them (``"original"``, ``"unlearned"``, ``"retrained"``, ...).
        ids: ``[N]`` sample IDs.
        groups: ``[N]`` ``"forget" | "retain" | "test" | "validation"``.
        labels: ``[N]`` int64 true labels.
        logits: ``[N, C]`` float64 logits.
        loss: ``[N]`` cross-entropy ``-log p_y``.
        entropy: ``[N]`` prediction entropy ``-Σ p_i log p_i``.
        modified_entropy: ``[N]`` Song & Mittal's ``-(1-p_y) log p_y - Σ_{i≠y} p_i log(1-p_i)``.
        confidence: ``[N]`` max softmax probability.
        scaled_confidence: ``[N]`` ``log(p_y / (1 - p_y))`` computed stably from logits.
        grad_norm: ``[N]`` ``‖softmax - onehot(y)‖₂`` (from the fused op).
        reference_logits: optional ``[K, N, C]`` logits of K reference models that never trained on
            any forget, test or validation sample.
    """

    model: str
    ids: np.ndarray
    groups: np.ndarray
    labels: np.ndarray
    logits: np.ndarray
    loss: np.ndarray
    entropy: np.ndarray
    modified_entropy: np.ndarray
    confidence: np.ndarray
    scaled_confidence: np.ndarray
    grad_norm: np.ndarray
    reference_logits: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, index: np.ndarray) -> SignalTable:
        """The rows at ``index`` (a bool mask or int positions), reference signals included."""
        values = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "model" or value is None:
                continue
            values[f.name] = value[:, index] if f.name == "reference_logits" else value[index]
        return replace(self, **values)

    def group(self, name: str) -> SignalTable:
        """The rows of one group (``"forget"``, ``"retain"``, ``"test"``, ``"validation"``)."""
        return self.take(self.groups == name)
