"""Per-sample membership signals of one model, computed once and shared by every attack."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import numpy as np
import torch
from torch import nn

from auditkit.data import SampleSet
from auditkit.errors import InputError
from auditkit.ops import cross_entropy_stats
from auditkit.training import predict_many

SIGNAL_COLUMNS = (
    "loss",
    "entropy",
    "modified_entropy",
    "confidence",
    "scaled_confidence",
    "grad_norm",
)


_PER_MODEL = ("reference_logits", "reference_members", "never_seen_logits", "unlearned_logits")  # [K, N, …]: rows on axis 1


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
        reference_members: optional ``[K, N]`` bool, True where reference model k trained on row n
            (only retain rows can be True).
        never_seen_logits / unlearned_logits: optional ``[P, N, C]`` logits of u-lira's P shadow pairs: pair j's
            never-seen shadow trained on the retain set, its unlearned one on the retain set plus the forget
            set and then unlearned with the audited run's method, both with seed j.
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
    reference_members: np.ndarray | None = None
    never_seen_logits: np.ndarray | None = None
    unlearned_logits: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, index: np.ndarray) -> SignalTable:
        """The rows at ``index`` (a bool mask or int positions), reference signals included."""
        values = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "model" or value is None:
                continue
            values[f.name] = value[:, index] if f.name in _PER_MODEL else value[index]
        return replace(self, **values)

    def group(self, name: str) -> SignalTable:
        """The rows of one group (``"forget"``, ``"retain"``, ``"test"``, ``"validation"``)."""
        return self.take(self.groups == name)

    def reference_log_odds(self) -> np.ndarray:
        """``[K, N]`` logit-scaled confidence ``log(p_y / (1 - p_y))`` under each reference model."""
        if self.reference_logits is None:
            raise InputError(f"the signals of {self.model!r} carry no reference models",
                             hint="run the attack through the battery, which trains the reference models it asks for")
        return true_class_log_odds(self.reference_logits, self.labels)

    def shadow_pair_log_odds(self) -> tuple[np.ndarray, np.ndarray]:
        """``([P, N], [P, N])`` logit-scaled confidence under u-lira's never-seen and unlearned shadows."""
        if self.never_seen_logits is None or self.unlearned_logits is None:
            raise InputError(f"the signals of {self.model!r} carry no unlearned shadow models",
                             hint="run the attack through the battery, which trains the shadows it asks for")
        return (true_class_log_odds(self.never_seen_logits, self.labels),
                true_class_log_odds(self.unlearned_logits, self.labels))

    def reference_out(self) -> np.ndarray:
        """``[K, N]`` bool, True where reference model k did not train on row n (all True without membership)."""
        if self.reference_members is not None:
            return ~self.reference_members
        return np.ones(self.reference_log_odds().shape, dtype=bool)


def mean_over_out(values: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``[N]`` mean of ``values [K, N]`` over the entries where ``out [K, N]`` is True.

    A row that no reference model left out (probability 2^-K for a retain row) takes the average of the
    other rows' means rather than an IN value, which would pull its score towards "non-member".
    """
    counts = out.sum(0)
    means = np.where(counts > 0, np.where(out, values, 0.0).sum(0) / np.maximum(counts, 1), np.nan)
    if np.isnan(means).all():
        raise InputError("no reference model left any of these samples out",
                         hint="use more reference models (the attack's references option)")
    return np.where(np.isnan(means), np.nanmean(means), means)


def true_class_log_odds(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``log(p_y / (1 - p_y)) = z_y − logsumexp_{i≠y} z_i`` for logits ``[..., N, C]`` and labels ``[N]``.

    Exact where ``p_y`` rounds to 1 (well-fit training samples), unlike ``log p - log1p(-p)``.
    """
    logits = torch.as_tensor(np.asarray(logits, dtype=np.float64))
    index = torch.as_tensor(np.asarray(labels, dtype=np.int64)).expand(logits.shape[:-1]).unsqueeze(-1)
    true = logits.gather(-1, index).squeeze(-1)
    others = logits.scatter(-1, index, float("-inf")).logsumexp(-1)
    return (true - others).numpy()


def exact_loss(log_odds: np.ndarray) -> np.ndarray:
    """Per-sample cross-entropy ``−log p_y = log(1 + e^(−log-odds))`` from :func:`true_class_log_odds`.

    Exact even where ``log_softmax`` returns exactly 0 for ``p_y ≈ 1`` (memorised samples); a diverged
    model's NaN logits give NaN losses, which callers refuse.
    """
    with np.errstate(invalid="ignore"):
        return np.logaddexp(0.0, -np.asarray(log_odds, dtype=np.float64))


def compute_signals(
    model: nn.Module,
    data: SampleSet,
    positions: np.ndarray,
    groups: np.ndarray,
    *,
    model_name: str,
    backend: str = "auto",
    reference_models: Sequence[nn.Module] | None = None,
    reference_members: np.ndarray | None = None,
) -> SignalTable:
    """One forward pass of ``model`` over ``data[positions]`` and every per-sample signal, in float64.

    Args:
        model: maps ``[B, *input_shape]`` to logits ``[B, C]``; evaluated in eval mode on its own device.
        positions: ``[N]`` int64 positions into ``data``.
        groups: ``[N]`` group name of each row (``"forget"``, ``"retain"``, ``"test"``, ``"validation"``).
        model_name: recorded in the table (``"original"``, ``"unlearned"``, ...).
        backend: op backend for the logit-gradient norm (see :mod:`auditkit.ops`).
        reference_models: optional K reference models; their logits go to ``reference_logits [K, N, C]``.
        reference_members: optional ``[K, N]`` bool, which rows each reference model trained on.
    """
    positions = np.asarray(positions, dtype=np.int64)
    groups = np.asarray(groups)
    if len(groups) != len(positions):
        raise InputError("positions and groups differ in length", hint="pass one group name per position")
    rows = data.rows(positions)
    labels = rows.labels
    # One read of the rows for the audited model and every reference model (streamed data is read once).
    logits, *references = predict_many([model, *(reference_models or [])], rows)
    # Float32 log-probabilities of well-fit samples round to exactly 0 and tie, which distorts AUCs,
    # so every score below is computed from float64 logits.
    logits = logits.double()
    device_labels = labels.to(logits.device)
    _, grad_norm = cross_entropy_stats(logits, device_labels, backend=backend)
    logits = logits.cpu()
    log_odds = torch.as_tensor(true_class_log_odds(logits.numpy(), labels.numpy()))
    loss = torch.as_tensor(exact_loss(log_odds.numpy()))
    log_probs = logits.log_softmax(1).scatter(1, labels[:, None], -loss[:, None])
    probs = log_probs.exp()
    # 1 - p_y = p_y·e^(-log-odds), again without cancellation.
    true_complement = (-loss - log_odds).exp()
    # For i ≠ y, log(1 - p_i) = log(-expm1(log p_i)) is accurate except when p_i rounds to 1, i.e. on
    # confidently wrong rows; the clamp keeps those terms large and finite instead of infinite.
    log_complement = torch.log(-torch.expm1(log_probs).clamp(max=-torch.finfo(torch.float64).tiny))
    other_terms = (probs * log_complement).scatter(1, labels[:, None], 0.0).sum(1)
    modified_entropy = true_complement * loss - other_terms
    reference_logits = None
    if reference_models is not None:
        reference_logits = np.stack([reference.double().cpu().numpy() for reference in references])
    return SignalTable(
        model=model_name,
        ids=np.asarray(data.ids)[positions],
        groups=groups,
        labels=labels.numpy(),
        logits=logits.numpy(),
        loss=loss.numpy(),
        entropy=-(probs * log_probs).sum(1).numpy(),
        modified_entropy=modified_entropy.numpy(),
        confidence=probs.max(1).values.numpy(),
        scaled_confidence=log_odds.numpy(),
        grad_norm=grad_norm.double().cpu().numpy(),
        reference_logits=reference_logits,
        reference_members=None if reference_members is None else np.asarray(reference_members, dtype=bool),
    )

