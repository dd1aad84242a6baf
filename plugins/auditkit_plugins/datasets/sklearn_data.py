"""scikit-learn's bundled datasets: digits (the default) and breast-cancer."""

from __future__ import annotations

import numpy as np
import torch
from sklearn import datasets as sk_datasets

from auditkit.data import SampleSet, seeded_split
from auditkit.interfaces import DatasetPlugin


def _sample_set(name: str, prefix: str, features: np.ndarray, labels: np.ndarray, options: dict) -> SampleSet:
    ids = np.asarray([f"{prefix}-{i:04d}" for i in range(len(labels))])
    splits = seeded_split(len(labels), seed=options["split_seed"], train=options["train_fraction"],
                          validation=options["validation_fraction"], stratify=labels)
    return SampleSet(name=name, ids=ids, features=torch.as_tensor(features, dtype=torch.float32),
                     labels=torch.as_tensor(labels, dtype=torch.int64), splits=splits,
                     num_classes=int(labels.max()) + 1, options=dict(options))


class DigitsDataset(DatasetPlugin):
    """1,797 real 8×8 handwritten digits (scikit-learn), pixel values scaled to [0, 1]."""

    PLUGIN_NAME = "digits"
    DESCRIPTION = "scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes)"
    OPTIONS = {"split_seed": 0, "train_fraction": 0.5, "validation_fraction": 0.15, "image": False}

    def load(self) -> SampleSet:
        bunch = sk_datasets.load_digits()
        features = bunch.data / 16.0
        if self.options["image"]:
            features = features.reshape(-1, 1, 8, 8)
        return _sample_set(self.PLUGIN_NAME, "digits", features, bunch.target, self.options)
