"""Supervised training with a recorded recipe, shared by `auditkit train`, `retrain` and reference models."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from auditkit.errors import InputError, RunError
from auditkit.messages import shown
from auditkit.progress import Progress, ProgressCallback, no_progress


@dataclass(frozen=True)
class TrainRecipe:
    """How a model was (or will be) trained; stored in every checkpoint manifest."""

    epochs: int = 100
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainRecipe:
        if not isinstance(values, dict):
            raise InputError(f"the training recipe must be a table of fields, not {type(values).__name__}",
                             hint=f"give fields such as {', '.join(cls.__dataclass_fields__)}")
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise InputError(
                f"unknown training recipe fields {sorted(map(str, unknown))}",
                hint=f"valid fields: {', '.join(cls.__dataclass_fields__)}",
            )
        # A string where a number belongs ([recipe] lr = "fast") failed the range check with a TypeError.
        defaults = cls()
        mistyped = [f"{name}={shown(value, limit=20)}" for name, value in values.items()
                    if not _same_kind(value, getattr(defaults, name))]
        if mistyped:
            raise InputError(f"training recipe fields of the wrong type: {', '.join(mistyped)}",
                             hint="epochs and batch_size are integers, lr and weight_decay numbers, optimizer a name")
        recipe = cls(**values)
        # Out of range, torch fails mid-run with a traceback, or epochs=0 silently writes an untrained model.
        bad = [f"{name}={getattr(recipe, name)!r}" for name, ok in (
            ("epochs", recipe.epochs >= 1), ("batch_size", recipe.batch_size >= 1),
            ("lr", 0 <= recipe.lr < math.inf), ("weight_decay", 0 <= recipe.weight_decay < math.inf)) if not ok]
        if bad:
            raise InputError(f"training recipe out of range: {', '.join(bad)}",
                             hint="use epochs >= 1, batch_size >= 1, lr >= 0 and weight_decay >= 0")
        return recipe


def _same_kind(value: object, default: object) -> bool:
    """Whether ``value`` can stand where ``default`` does (an int for a float; never a bool for a number)."""
    if isinstance(value, bool) or isinstance(default, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


def make_optimizer(recipe: TrainRecipe, parameters) -> torch.optim.Optimizer:
    """The optimiser named by the recipe."""
    if recipe.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=recipe.lr, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=recipe.lr, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=recipe.lr, momentum=0.9, weight_decay=recipe.weight_decay)
    raise InputError(f"unknown optimizer {recipe.optimizer!r}", hint="use adam, adamw or sgd")


def train_model(
    model: nn.Module,
    features: torch.Tensor,
    labels: torch.Tensor,
    *,
    recipe: TrainRecipe,
    seed: int,
    progress: ProgressCallback = no_progress,
    stage: str = "train",
) -> nn.Module:
    """Train ``model`` in place on ``features [N, ...]`` / ``labels [N]`` with ``recipe``; returns it.

    Deterministic for a fixed seed on CPU (seeded shuffling, no data-loader workers).
    """
    if len(labels) == 0:
        raise InputError("cannot train on an empty set", hint="check the dataset split and the request")
    generator = torch.Generator().manual_seed(seed)
    optimizer = make_optimizer(recipe, model.parameters())
    model.train()
    n = len(labels)
    for epoch in range(recipe.epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, recipe.batch_size):
            batch = order[start : start + recipe.batch_size]
            loss = F.cross_entropy(model(features[batch]), labels[batch])
            if not math.isfinite(loss.item()):
                raise RunError(
                    f"training diverged at epoch {epoch + 1} (loss {loss.item()})",
                    hint="lower the learning rate in the training recipe",
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        progress(Progress(stage, epoch + 1, recipe.epochs))
    model.eval()
    return model


@torch.no_grad()
def predict_logits(model: nn.Module, features: torch.Tensor, *, batch_size: int = 4096) -> torch.Tensor:
    """Logits ``[N, C]`` of ``model`` in eval mode, batched; restores the model's mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        parts = [model(features[i : i + batch_size]) for i in range(0, len(features), batch_size)]
    finally:
        model.train(was_training)
    if not parts:
        return torch.empty(0, 0)
    return torch.cat(parts)


def accuracy(model: nn.Module, features: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy of ``model`` on ``features``/``labels`` (NaN for an empty set)."""
    if len(labels) == 0:
        return float("nan")
    return (predict_logits(model, features).argmax(1) == labels).double().mean().item()
