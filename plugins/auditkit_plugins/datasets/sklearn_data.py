"""scikit-learn's bundled datasets: digits (the default) and breast-cancer."""

from __future__ import annotations

import numpy as np
from sklearn import datasets as sk_datasets

from auditkit.data import SampleSet
from auditkit.interfaces import DatasetPlugin
from auditkit.training import TrainRecipe
from auditkit_plugins.datasets._common import sample_set, split_for, standardize


class DigitsDataset(DatasetPlugin):
    """1,797 real 8×8 handwritten digits (scikit-learn), pixel values scaled to [0, 1].

    The default split trains on 10 % (179 images), keeps 20 % for validation and tests on the rest:
    an MLP trained on half of digits generalises so well that a loss attack barely beats chance
    (AUC ≈ 0.54), which leaves nothing to forget; on 10 % the leak is measurable (AUC ≈ 0.63, test
    accuracy ≈ 0.94). ``image=true`` gives ``[1, 8, 8]`` features for the ``cnn`` model.
    """

    PLUGIN_NAME = "digits"
    DESCRIPTION = "scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes)"
    OPTIONS = {"split_seed": 0, "train_fraction": 0.1, "validation_fraction": 0.2, "image": False}
    DEFAULT_MODEL = "mlp"
    DEFAULT_MODEL_OPTIONS = {"widths": (256,)}
    DEFAULT_RECIPE = TrainRecipe(epochs=200, batch_size=32, lr=1e-3)

    def load(self) -> SampleSet:
        """``[1797, 64]`` features (``[1797, 1, 8, 8]`` with ``image``), IDs ``digits-0000`` … ``digits-1796``."""
        bunch = sk_datasets.load_digits()
        features = bunch.data / 16.0
        if self.options["image"]:
            features = features.reshape(-1, 1, 8, 8)
        ids = np.asarray([f"digits-{i:04d}" for i in range(len(bunch.target))])
        splits = split_for(bunch.target, self.options)
        return sample_set(self.PLUGIN_NAME, ids, features, bunch.target, splits, self.options)


class BreastCancerDataset(DatasetPlugin):
    """569 Wisconsin breast-cancer cases, 30 numeric features z-scored with train-split statistics."""

    PLUGIN_NAME = "breast-cancer"
    DESCRIPTION = "scikit-learn's bundled Wisconsin breast-cancer table (569 rows, 30 features, 2 classes)"
    OPTIONS = {"split_seed": 0, "train_fraction": 0.5, "validation_fraction": 0.2}
    DEFAULT_MODEL = "mlp"
    DEFAULT_MODEL_OPTIONS = {"widths": (128,)}
    DEFAULT_RECIPE = TrainRecipe(epochs=200, batch_size=32, lr=1e-3)

    def load(self) -> SampleSet:
        """``[569, 30]`` float features, labels 0 = malignant / 1 = benign, IDs ``breast-cancer-000``."""
        bunch = sk_datasets.load_breast_cancer()
        splits = split_for(bunch.target, self.options)
        features = standardize(bunch.data, splits == "train")
        ids = np.asarray([f"breast-cancer-{i:03d}" for i in range(len(bunch.target))])
        return sample_set(self.PLUGIN_NAME, ids, features, bunch.target, splits, self.options)
