"""Reference models for LiRA / RMIA: trained with the audited model's own recipe on random halves of the
retain set (so they never see a forget, test or validation sample), cached on disk.

A reference model is cached under a key naming everything that determines its weights: the dataset
(name, options, and a hash of its features, labels and IDs), the model (the trainer's ``model_key``),
the recipe, the positions it trained on and its seed. The cache lives in ``$AUDITKIT_CACHE_DIR`` or
``~/.cache/auditkit``; entries are written atomically and loaded with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from auditkit.data import SampleSet
from auditkit.fsutil import atomic_write_bytes, sha256_bytes, sha256_file
from auditkit.progress import Progress, ProgressCallback, no_progress
from auditkit.training import TrainRecipe, train_model

CACHE_ENV = "AUDITKIT_CACHE_DIR"
_FORMAT = 1  # bump when what a cache entry means changes


@dataclass(frozen=True)
class ReferenceTrainer:
    """How to build and train a model like the audited one (the CLI fills it from the checkpoint).

    Attributes:
        build: returns a freshly initialised model of the audited architecture (torch is seeded first).
        recipe: the audited model's training recipe.
        model_key: names the model plugin and its options (part of the cache key), e.g. ``"mlp widths=256"``.
        device: where reference models are trained.
    """

    build: Callable[[], nn.Module]
    recipe: TrainRecipe
    model_key: str
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))


def cache_dir() -> Path:
    """``$AUDITKIT_CACHE_DIR/reference-models`` or ``~/.cache/auditkit/reference-models``."""
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "auditkit"
    return Path(root) / "reference-models"


def reference_halves(n_retain: int, *, count: int, seed: int) -> np.ndarray:
    """``[count, n_retain]`` bool: which retain samples each reference model trains on (a seeded random half)."""
    halves = np.zeros((count, n_retain), dtype=bool)
    for k in range(count):
        rng = np.random.default_rng([seed, k])
        halves[k, rng.permutation(n_retain)[: n_retain // 2]] = True
    return halves


def train_reference_models(
    trainer: ReferenceTrainer,
    *,
    data: SampleSet,
    retain: np.ndarray,
    count: int,
    seed: int,
    progress: ProgressCallback = no_progress,
) -> tuple[list[nn.Module], np.ndarray, list[str]]:
    """Train (or load from the cache) ``count`` reference models on random halves of ``retain``.

    Announces the cost (how many trainings, how many cached) through ``progress`` before starting.
    Returns the models (eval mode, on ``trainer.device``), the ``[count, len(retain)]`` bool halves and
    the SHA-256 of each model's weights: of its cache file, so ``sha256sum`` on the cache checks it.
    Model k depends only on ``seed`` and k, so the first K of a larger set are the K a smaller one trains.
    """
    retain = np.asarray(retain, dtype=np.int64)
    halves = reference_halves(len(retain), count=count, seed=seed)
    dataset_key = _dataset_key(data)
    plans = []
    for k in range(count):
        positions = retain[halves[k]]
        model_seed = int(np.random.SeedSequence([seed, k]).generate_state(1)[0])
        key = sha256_bytes(json.dumps({
            "format": _FORMAT, "dataset": dataset_key, "model": trainer.model_key,
            "recipe": trainer.recipe.to_dict(), "positions": sha256_bytes(positions.tobytes()), "seed": model_seed,
        }, sort_keys=True).encode())
        plans.append((positions, model_seed, cache_dir() / f"{key}.pt"))
    cached = sum(path.is_file() for _, _, path in plans)
    progress(Progress("reference-models", 0, count, message=(
        f"{count} reference models needed: {count - cached} to train ({trainer.recipe.epochs} epochs each "
        f"on {len(retain) // 2} samples), {cached} cached in {cache_dir()}"
    )))
    models, hashes = [], []
    for k, (positions, model_seed, path) in enumerate(plans):
        model = _load(trainer, path)
        if model is None:
            torch.manual_seed(model_seed)
            model = trainer.build().to(trainer.device)
            train_model(model, data.rows(positions), recipe=trainer.recipe, seed=model_seed, progress=progress,
                        stage=f"reference model {k + 1}/{count}")
            _save(model, path)
        models.append(model.eval())
        hashes.append(sha256_file(path))
        progress(Progress("reference-models", k + 1, count))
    return models, halves, hashes


def _dataset_key(data: SampleSet) -> dict:
    return {"name": data.name, "options": json.loads(json.dumps(data.options, default=str)),
            "contents": data.content_sha256()}


def _load(trainer: ReferenceTrainer, path: Path) -> nn.Module | None:
    """The cached model at ``path``, or None when missing or unreadable (then it is retrained and rewritten)."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location=trainer.device, weights_only=True)
        model = trainer.build().to(trainer.device)
        model.load_state_dict(state)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile):
        return None
    return model


def _save(model: nn.Module, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save({name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}, buffer)
    atomic_write_bytes(path, buffer.getvalue())
