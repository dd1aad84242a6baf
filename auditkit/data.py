"""The in-memory dataset every plugin produces: features, labels, stable string IDs and a split."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True, eq=False)
class SampleSet:
    """A labelled dataset with one stable string ID and one split per sample.

    Attributes:
        name: dataset plugin name (for manifests and reports).
        ids: ``[N]`` unique sample IDs as strings.
        features: ``[N, *input_shape]`` float32 tensor.
        labels: ``[N]`` int64 tensor with values in ``[0, num_classes)``.
        splits: ``[N]`` numpy array of ``"train" | "validation" | "test"``.
        num_classes: number of classes ``C``.
        options: the options the dataset plugin was built with (recorded in manifests).
    """

    name: str
    ids: np.ndarray
    features: torch.Tensor
    labels: torch.Tensor
    splits: np.ndarray
    num_classes: int
    options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.ids)
        if self.features.shape[0] != n or self.labels.shape[0] != n or len(self.splits) != n:
            raise ValueError("ids, features, labels and splits must have the same length")
        unknown = set(np.unique(self.splits).tolist()) - set(SPLITS)
        if unknown:
            raise ValueError(f"unknown split names {sorted(unknown)}; expected {SPLITS}")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample's features."""
        return tuple(self.features.shape[1:])

    def indices(self, split: str) -> np.ndarray:
        """``[n]`` int64 positions of the samples in ``split``, in dataset order."""
        return np.flatnonzero(self.splits == split).astype(np.int64)

    def position_of(self) -> dict[str, int]:
        """Map from sample ID to its position."""
        return {sample_id: i for i, sample_id in enumerate(self.ids.tolist())}

    def positions(self, ids: Iterable[str]) -> np.ndarray:
        """``[k]`` positions of ``ids`` (all must exist)."""
        lookup = self.position_of()
        return np.asarray([lookup[i] for i in ids], dtype=np.int64)

    def subset(self, positions: Sequence[int] | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Features ``[k, *input_shape]`` and labels ``[k]`` at ``positions``."""
        index = torch.as_tensor(np.asarray(positions, dtype=np.int64))
        return self.features[index], self.labels[index]


def seeded_split(
    n: int, *, seed: int, train: float, validation: float, stratify: np.ndarray | None = None
) -> np.ndarray:
    """Assign ``n`` samples to train/validation/test with fixed fractions, reproducibly.

    Returns a ``[n]`` array of split names; test receives the remainder. With ``stratify`` the
    fractions hold within every class.
    """
    if not (0 < train < 1 and 0 < validation < 1 and train + validation < 1):
        raise ValueError("split fractions must be in (0, 1) and leave room for a test split")
    rng = np.random.default_rng(seed)
    splits = np.empty(n, dtype=object)
    groups = [np.arange(n)] if stratify is None else [np.flatnonzero(stratify == c) for c in np.unique(stratify)]
    for group in groups:
        order = group[rng.permutation(len(group))]
        n_train = int(round(train * len(group)))
        n_val = int(round(validation * len(group)))
        splits[order[:n_train]] = "train"
        splits[order[n_train : n_train + n_val]] = "validation"
        splits[order[n_train + n_val :]] = "test"
    return splits.astype(str)
