"""Helpers shared by the built-in dataset plugins: seeded splits, train-only scaling, SampleSet assembly."""

from __future__ import annotations

import numpy as np
import torch

from auditkit.data import SampleSet, seeded_split
from auditkit.errors import InputError

SPLIT_OPTIONS = ("split_seed", "train_fraction", "validation_fraction")


def split_for(labels: np.ndarray, options: dict) -> np.ndarray:
    """``[N]`` split names from the plugin's ``split_seed``/``*_fraction`` options, stratified by label."""
    try:
        return seeded_split(len(labels), seed=int(options["split_seed"]), train=float(options["train_fraction"]),
                            validation=float(options["validation_fraction"]), stratify=labels)
    except ValueError as exc:
        raise InputError(f"bad split options: {exc}",
                         hint="use e.g. train_fraction=0.6 validation_fraction=0.2 (test gets the rest)") from None


def standardize(features: np.ndarray, train: np.ndarray) -> np.ndarray:
    """Z-score ``features [N, D]`` with the mean/std of the rows in ``train`` only (no test leakage)."""
    mean = features[train].mean(axis=0)
    std = features[train].std(axis=0)
    # Constant columns would divide by zero; leaving them centred keeps them harmless.
    return (features - mean) / np.where(std > 0, std, 1.0)


def sample_set(name: str, ids: np.ndarray, features: np.ndarray, labels: np.ndarray, splits: np.ndarray,
               options: dict, *, num_classes: int | None = None) -> SampleSet:
    """A :class:`SampleSet` from numpy arrays (features become float32, labels int64)."""
    return SampleSet(name=name, ids=np.asarray(ids).astype(str),
                     features=torch.as_tensor(np.ascontiguousarray(features), dtype=torch.float32),
                     labels=torch.as_tensor(labels, dtype=torch.int64), splits=np.asarray(splits).astype(str),
                     num_classes=int(num_classes if num_classes is not None else labels.max() + 1),
                     options=dict(options))


def _examples(values: list[str], limit: int = 5) -> str:
    shown = ", ".join(repr(v) for v in values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


def check_ids(ids: np.ndarray, *, source: str) -> None:
    """Every ID non-empty and unique, or an :class:`InputError` naming some offenders."""
    if any(not str(i).strip() for i in ids):
        raise InputError(f"{source} has an empty sample ID", hint="give every row a non-empty ID")
    unique, counts = np.unique(ids, return_counts=True)
    duplicated = unique[counts > 1].tolist()
    if duplicated:
        raise InputError(f"{source} has {len(duplicated)} duplicate IDs: {_examples(duplicated)}",
                         hint="sample IDs must be unique; a deletion request names samples by ID")


def check_labels(labels: np.ndarray, *, source: str) -> int:
    """Labels are non-negative integers covering at least two classes; returns ``max + 1`` classes."""
    if labels.size == 0:
        raise InputError(f"{source} has no samples", hint="the dataset needs at least one row per split")
    if labels.min() < 0:
        raise InputError(f"{source} has a negative label {int(labels.min())}",
                         hint="number the classes 0, 1, …, C-1")
    classes = np.unique(labels)
    if len(classes) < 2:
        raise InputError(f"{source} has a single class ({int(classes[0])})",
                         hint="a classifier needs at least two classes")
    return int(labels.max()) + 1


def check_splits(splits: np.ndarray, *, source: str) -> np.ndarray:
    """Normalise given split names (case, whitespace) and require train, validation and test rows."""
    names = np.char.lower(np.char.strip(np.asarray(splits).astype(str)))
    unknown = sorted(set(np.unique(names).tolist()) - {"train", "validation", "test"})
    if unknown:
        raise InputError(f"{source} has unknown split names {_examples(unknown)}",
                         hint="use train, validation or test (or drop the column for a seeded split)")
    for split, why in (("train", "nothing to train on"),
                       ("validation", "∇τ needs held-out validation data for τ"),
                       ("test", "the audit needs held-out non-members")):
        if not (names == split).any():
            raise InputError(f"{source} has no {split} rows: {why}",
                             hint=f"mark some rows as {split} (or drop the split column for a seeded split)")
    return names
