"""Supervised training with a recorded recipe, shared by `auditkit train`, `retrain` and reference models."""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from auditkit.data import Rows, stream
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
    """The optimiser named by the recipe (see :func:`eager_optimizer`)."""
    if recipe.optimizer == "adam":
        return eager_optimizer(torch.optim.Adam, parameters, lr=recipe.lr, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adamw":
        return eager_optimizer(torch.optim.AdamW, parameters, lr=recipe.lr, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "sgd":
        return eager_optimizer(torch.optim.SGD, parameters, lr=recipe.lr, momentum=0.9,
                               weight_decay=recipe.weight_decay)
    raise InputError(f"unknown optimizer {recipe.optimizer!r}", hint="use adam, adamw or sgd")


def eager_optimizer(kind: type[torch.optim.Optimizer], parameters, **options) -> torch.optim.Optimizer:
    """``kind(parameters, **options)``, computing exactly the same updates, without importing ``torch._dynamo``.

    Torch's optimisers wrap ``add_param_group``, ``zero_grad`` and ``step`` in dynamo guards that import
    ``torch._dynamo`` on first use (1.2-4.4 s measured, in every command that trains) even though nothing
    here is compiled. This subclass calls the unwrapped methods, with ``step`` under ``no_grad`` as torch's
    guard does; outside ``torch.compile`` the guards do nothing else.
    """
    return _eager_class(kind)(parameters, **options)


@functools.cache
def _eager_class(kind: type[torch.optim.Optimizer]) -> type[torch.optim.Optimizer]:
    step = inspect.unwrap(kind.step)

    def eager_step(self, closure=None):
        with torch.no_grad():
            return step(self, closure)

    return type(kind.__name__, (kind,), {
        "__module__": __name__, "__doc__": kind.__doc__, "step": eager_step,
        "add_param_group": inspect.unwrap(torch.optim.Optimizer.add_param_group),
        "zero_grad": inspect.unwrap(torch.optim.Optimizer.zero_grad),
    })


def _as_rows(data: Rows | torch.Tensor, labels: torch.Tensor | None) -> Rows:
    if isinstance(data, Rows):
        if labels is not None:
            raise TypeError("pass labels only with a features tensor; Rows carry their own labels")
        return data
    if labels is None:
        raise TypeError("a features tensor needs its labels")
    return Rows.from_tensors(data, labels)


def epoch_batches(n: int, batch_size: int, *, epochs: int, generator: torch.Generator) -> Iterator[tuple[torch.Tensor]]:
    """Per epoch, one seeded shuffle of ``range(n)`` cut into batches: the plan :func:`train_model` streams."""
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            yield (order[start : start + batch_size],)


def train_model(
    model: nn.Module,
    data: Rows | torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    recipe: TrainRecipe,
    seed: int,
    progress: ProgressCallback = no_progress,
    stage: str = "train",
) -> nn.Module:
    """Train ``model`` in place with ``recipe``; returns it.

    ``data`` is a :class:`~auditkit.data.Rows` selection (``sample_set.rows(positions)``, in memory or
    streamed) or a features tensor ``[N, ...]`` with ``labels [N]``. Rows are read on the device of the
    model's parameters. Deterministic for a fixed seed on CPU, for any number of DataLoader workers: the
    shuffle is drawn from a seeded generator in the main process.
    """
    rows = _as_rows(data, labels)
    if len(rows) == 0:
        raise InputError("cannot train on an empty set", hint="check the dataset split and the request")
    generator = torch.Generator().manual_seed(seed)
    optimizer = make_optimizer(recipe, model.parameters())
    model.train()
    n = len(rows)
    per_epoch = math.ceil(n / recipe.batch_size)
    batches = stream([rows], epoch_batches(n, recipe.batch_size, epochs=recipe.epochs, generator=generator),
                     device=_device_of(model))
    for epoch in range(recipe.epochs):
        for _ in range(per_epoch):
            batch = next(batches)
            loss = F.cross_entropy(model(batch.features), batch.labels)
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
def predict_logits(model: nn.Module, data: Rows | torch.Tensor, *, batch_size: int | None = None) -> torch.Tensor:
    """Logits ``[N, C]`` of ``model`` in eval mode, batched, on the model's device; restores its mode.

    ``data`` is a :class:`~auditkit.data.Rows` selection or a features tensor ``[N, ...]``; batches hold
    :func:`~auditkit.data.eval_batch_size` rows unless ``batch_size`` is given.
    """
    rows = data if isinstance(data, Rows) else Rows.from_tensors(data, torch.zeros(len(data), dtype=torch.int64))
    return predict_many([model], rows, batch_size=batch_size)[0]


@torch.no_grad()
def predict_many(models: Sequence[nn.Module], rows: Rows, *, batch_size: int | None = None) -> list[torch.Tensor]:
    """Logits ``[N, C]`` of each model over ``rows``, reading the rows once (each batch through every model)."""
    modes = [model.training for model in models]
    for model in models:
        model.eval()
    parts: list[list[torch.Tensor]] = [[] for _ in models]
    try:
        if models:
            for batch in rows.batches(device=_device_of(models[0]), batch_size=batch_size):
                for model, out in zip(models, parts):
                    out.append(model(batch.features.to(_device_of(model))))
    finally:
        for model, mode in zip(models, modes):
            model.train(mode)
    return [torch.cat(out) if out else torch.empty(0, 0) for out in parts]


def accuracy(model: nn.Module, data: Rows | torch.Tensor, labels: torch.Tensor | None = None) -> float:
    """Top-1 accuracy of ``model`` on a :class:`~auditkit.data.Rows` selection, or on ``features``/``labels``
    tensors (NaN for an empty set)."""
    rows = _as_rows(data, labels)
    if len(rows) == 0:
        return float("nan")
    logits = predict_logits(model, rows)
    return (logits.argmax(1) == rows.labels.to(logits.device)).double().mean().item()


def _device_of(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")
