"""MNIST-1D (Greydanus 2020), generated offline by the ``mnist1d`` package's procedural generator."""

from __future__ import annotations

import random

import numpy as np

from auditkit.data import SampleSet
from auditkit.interfaces import DatasetPlugin
from auditkit.training import TrainRecipe
from auditkit_plugins.datasets._common import sample_set, split_for


class Mnist1dDataset(DatasetPlugin):
    """10 one-dimensional digit templates, randomly padded, sheared, shifted and noised into 40 features.

    Generated with ``mnist1d.data.make_dataset`` (never the package's download path), so it needs no
    network; the generator's own 80/20 split is ignored in favour of the usual seeded three-way split.
    Small MLPs overfit it strongly, which makes membership leakage easy to see.
    """

    PLUGIN_NAME = "mnist1d"
    DESCRIPTION = "MNIST-1D benchmark generated offline (40 features, 10 classes, 5,000 samples by default)"
    OPTIONS = {"split_seed": 0, "train_fraction": 0.4, "validation_fraction": 0.2,
               "num_samples": 5000, "generator_seed": 42, "sequence": False}
    DEFAULT_MODEL = "mlp"
    DEFAULT_MODEL_OPTIONS = {"widths": (256, 256)}
    DEFAULT_RECIPE = TrainRecipe(epochs=30, batch_size=32, lr=1e-3)

    def load(self) -> SampleSet:
        """``[num_samples, 40]`` features (``[num_samples, 1, 40]`` with ``sequence``, for the ``cnn``).

        IDs ``mnist1d-00000`` …
        """
        from mnist1d.data import get_dataset_args, make_dataset

        args = get_dataset_args()
        args.num_samples = int(self.options["num_samples"])
        args.seed = int(self.options["generator_seed"])
        # make_dataset reseeds Python's and numpy's global generators; put them back afterwards so
        # loading a dataset never changes anybody else's random stream.
        python_state, numpy_state = random.getstate(), np.random.get_state()
        try:
            generated = make_dataset(args)
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)
        features = np.concatenate([generated["x"], generated["x_test"]])
        labels = np.concatenate([generated["y"], generated["y_test"]]).astype(np.int64)
        ids = np.asarray([f"mnist1d-{i:05d}" for i in range(len(labels))])
        if self.options["sequence"]:
            features = features[:, None, :]
        return sample_set(self.PLUGIN_NAME, ids, features, labels, split_for(labels, self.options), self.options,
                          num_classes=10)
