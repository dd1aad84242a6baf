"""Membership-inference metrics, computed in one place (checked against scikit-learn in the tests)."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedShuffleSplit, cross_val_score


def lr_mia_accuracies(
    member_values: np.ndarray, nonmember_values: np.ndarray, *, seed: int, n_splits: int = 10
) -> np.ndarray:
    """The ∇τ paper's (and the NeurIPS 2023 unlearning kit's) membership attack.

    Logistic regression on one per-sample value (loss or entropy), members vs non-members, balanced by
    a seeded subsample of the larger set down to the smaller one's size, scored by 10-split
    stratified-shuffle cross-validation (10 % held out per split). Returns the ``[n_splits]``
    held-out accuracies; their mean is the paper's "MIA" (0.5 = indistinguishable).

    Args:
        member_values: ``[M]`` values of the member set (e.g. forget losses).
        nonmember_values: ``[U]`` values of the non-member set (e.g. test losses).
    """
    members = np.asarray(member_values, dtype=np.float64).ravel()
    nonmembers = np.asarray(nonmember_values, dtype=np.float64).ravel()
    n = min(len(members), len(nonmembers))
    if n < n_splits:
        raise ValueError(f"the LR attack needs at least {n_splits} samples per class, got {n}")
    rng = np.random.default_rng(seed)
    members = members[rng.permutation(len(members))[:n]]
    nonmembers = nonmembers[rng.permutation(len(nonmembers))[:n]]
    values = np.concatenate([members, nonmembers])[:, None]
    labels = np.concatenate([np.ones(n, dtype=np.int64), np.zeros(n, dtype=np.int64)])
    cv = StratifiedShuffleSplit(n_splits=n_splits, random_state=seed)
    return cross_val_score(LogisticRegression(), values, labels, cv=cv, scoring="accuracy")
