"""`auditkit adopt`: turn a state dict trained by someone else's code into an auditkit checkpoint.

The state dict is read with ``torch.load(weights_only=True)`` and must fit the model plugin's
architecture exactly. The checkpoint's manifest records the dataset (and, with explicit training IDs,
exactly which samples the model trained on) and, only when the user states it, the training recipe:
without one, everything that retrains (``retrain``, ``--retrain-reference``, reference-model attacks) is
refused with a message naming what is missing, and everything else works.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from auditkit.checkpoint import (
    FORMAT,
    CheckpointManifest,
    _plain,
    architecture_mismatch,
    describe_model,
    ids_sha256,
    read_weights_only,
    save_checkpoint,
    with_training_ids,
)
from auditkit.errors import InputError
from auditkit.fsutil import note_written, sha256_bytes, sha256_file
from auditkit.pipeline import check_checkpoint_out
from auditkit.progress import Progress, ProgressCallback, no_progress
from auditkit.registry import Registry
from auditkit.request import parse_request
from auditkit.training import TrainRecipe, accuracy, predict_logits

#: The recipe fields an adopted model must state when it states a recipe at all (the others have defaults).
REQUIRED_RECIPE_FIELDS = ("epochs", "batch_size", "lr")


@dataclass
class AdoptSettings:
    """What `auditkit adopt` needs.

    ``state_dict`` is a file (``torch.save(model.state_dict(), path)``) or, from Python, the mapping itself.
    ``train_ids`` is a CSV of IDs (an ``id`` column or one column without header) or the IDs themselves;
    ``None`` means the dataset's train split. ``recipe`` holds the recipe fields the user stated (empty: no
    recipe is recorded).
    """

    state_dict: Path | Mapping[str, torch.Tensor]
    model: str
    dataset: str
    out: Path
    model_options: dict[str, Any] = field(default_factory=dict)
    dataset_options: dict[str, Any] = field(default_factory=dict)
    train_ids: Path | Sequence[str] | None = None
    recipe: dict[str, Any] = field(default_factory=dict)
    force: bool = False
    plugin_files: list[Path] = field(default_factory=list)


def run_adopt(settings: AdoptSettings, *, progress: ProgressCallback = no_progress) -> dict[str, Any]:
    """Check the state dict against the model plugin and dataset and write the checkpoint atomically.

    Returns a summary: checkpoint path and SHA-256, dataset, model, training-set size, recipe (or
    ``None``), the measured train/test accuracy and warnings (e.g. an accuracy at chance level, the sign
    of a model trained with other preprocessing or label order).
    """
    registry = Registry.default(plugin_files=list(settings.plugin_files))
    file = Path(settings.state_dict) if isinstance(settings.state_dict, (str, Path)) else None
    ids_file = Path(settings.train_ids) if isinstance(settings.train_ids, (str, Path)) else None
    check_checkpoint_out(Path(settings.out), force=settings.force, keep=(file, ids_file, *settings.plugin_files))
    model_plugin = registry.create("models", settings.model, **settings.model_options)
    dataset_plugin = registry.create("datasets", settings.dataset, **settings.dataset_options)
    recipe = _recipe(settings.recipe)
    train_ids = _train_ids(settings.train_ids, ids_file)
    state, adopted_from = _state_dict(settings.state_dict, file)

    data = dataset_plugin.load()
    if train_ids is not None:
        own_split = ids_sha256(data.ids[data.indices("train")])
        source = f"the {len(train_ids)} training IDs" + (f" in {str(ids_file)!r}" if ids_file else "")
        data = with_training_ids(data, train_ids, source=source)
        # The dataset's own train split needs no list in the manifest.
        train_ids = None if ids_sha256(data.ids[data.indices("train")]) == own_split else sorted(set(train_ids))
    torch.manual_seed(0)  # the initial weights are replaced; seeded so that building is reproducible anyway
    network = model_plugin.build(input_shape=data.input_shape, num_classes=data.num_classes)
    described = describe_model(settings.model, model_plugin.options)
    mismatch = architecture_mismatch(network, state)
    if mismatch:
        prefixed = bool(state) and all(key.startswith("module.") for key in state)
        raise InputError(
            f"state dict {_name(file)} does not fit {described} for input {list(data.input_shape)} and "
            f"{data.num_classes} classes: {'; '.join(mismatch)}",
            hint="its keys start with 'module.' (saved from DataParallel/DDP): save model.module.state_dict()"
                 if prefixed else "pass the --model and --model-option values that build the architecture you "
                                  "trained (your own class: --model module --model-option factory=file.py:Name)")
    network.load_state_dict(state)
    network.eval()
    train, test = data.indices("train"), data.indices("test")
    _check_output(network, data.rows(train[:2]), data.num_classes, described)
    progress(Progress("adopt", 0, 1, message=f"measuring accuracy on {len(train)} training and {len(test)} "
                                             "test samples"))
    metrics = {"train_accuracy": accuracy(network, data.rows(train)), "test_accuracy": accuracy(network, data.rows(test))}
    progress(Progress("adopt", 1, 1))
    manifest = CheckpointManifest(
        model=settings.model, model_options=_plain(model_plugin.options), dataset=settings.dataset,
        dataset_options=_plain(data.options), num_classes=data.num_classes, input_shape=data.input_shape,
        train_ids_sha256=ids_sha256(data.ids[train]), train_count=len(train),
        recipe=None if recipe is None else recipe.to_dict(), seed=None, metrics=metrics, train_ids=train_ids,
        adopted_from=adopted_from,
    )
    sha256 = save_checkpoint(settings.out, state_dict=network.state_dict(), manifest=manifest)
    note_written(f"checkpoint {settings.out}")
    return {"checkpoint": str(settings.out), "sha256": sha256, "dataset": manifest.dataset, "model": manifest.model,
            "model_options": manifest.to_dict()["model_options"], "recipe": manifest.recipe,
            "train_count": manifest.train_count, "train_ids": "listed" if train_ids is not None else "train split",
            "metrics": metrics, "adopted_from": adopted_from,
            "warnings": _chance_warning(metrics["test_accuracy"], len(test), data.num_classes)}


def _name(file: Path | None) -> str:
    return repr(str(file)) if file is not None else "(given in memory)"


def _recipe(values: Mapping[str, Any]) -> TrainRecipe | None:
    """The stated recipe (strings coerced to each field's type), ``None`` when nothing was stated."""
    if not values:
        return None
    missing = [name for name in REQUIRED_RECIPE_FIELDS if name not in values]
    if missing:
        raise InputError(f"the training recipe lacks {', '.join(missing)} (a recipe states at least "
                         f"{', '.join(REQUIRED_RECIPE_FIELDS)})",
                         hint="add " + " ".join(f"--recipe-option {name}=…" for name in missing) +
                              ", or give no --recipe-option at all to adopt without a recipe")
    defaults = TrainRecipe()
    coerced = {}
    for name, value in values.items():
        default = getattr(defaults, name, None)
        try:
            coerced[name] = type(default)(value) if isinstance(value, str) and default is not None else value
        except ValueError:
            raise InputError(f"--recipe-option {name}={value!r} is not a valid {type(default).__name__}",
                             hint=f"pass a value like {name}={default!r}") from None
    return TrainRecipe.from_dict(coerced)


def _train_ids(given: Path | Sequence[str] | None, file: Path | None) -> list[str] | None:
    if given is None:
        return None
    if file is None:
        ids = [str(i) for i in given]
        if not ids:
            raise InputError("the training-ID list is empty", hint="list the IDs the model was trained on")
        return ids
    try:
        return list(parse_request(file).ids)
    except InputError as exc:  # the request parser speaks of deletion requests and --ids
        raise InputError(exc.message.replace("deletion request", "training-ID file", 1),
                         hint=(exc.hint or "").replace("--ids", "--train-ids")) from None


def _state_dict(given: Path | Mapping[str, torch.Tensor] | nn.Module, file: Path | None
                ) -> tuple[dict[str, torch.Tensor], dict[str, str | None]]:
    """The tensors to adopt and where they came from (file name and SHA-256 of its bytes)."""
    if file is not None:
        state = read_weights_only(file, what="state dict", flag="--state-dict",
                                  make="save one with torch.save(model.state_dict(), FILE)",
                                  save="save only tensors: torch.save(model.state_dict(), FILE)")
        origin = {"file": str(file), "sha256": sha256_file(file)}
    else:
        state = given.state_dict() if isinstance(given, nn.Module) else given
        buffer = io.BytesIO()
        torch.save(dict(state), buffer)
        origin = {"file": None, "sha256": sha256_bytes(buffer.getvalue())}
    if not isinstance(state, Mapping):
        raise InputError(f"state dict {_name(file)} holds a {type(state).__name__}, not a mapping of parameter "
                         "names to tensors", hint="save it with torch.save(model.state_dict(), FILE)")
    if state.get("format") == FORMAT:
        raise InputError(f"{_name(file)} is already an auditkit checkpoint",
                         hint="use it directly: auditkit forget --checkpoint FILE")
    others = [key for key, value in state.items() if not isinstance(value, torch.Tensor)]
    if others:
        nested = [key for key in others if isinstance(state[key], Mapping) and state[key]
                  and all(isinstance(v, torch.Tensor) for v in state[key].values())]
        hint = (f"the weights are under {nested[0]!r}: save that mapping alone, torch.save(saved[{nested[0]!r}], FILE)"
                if nested else "save only the weights: torch.save(model.state_dict(), FILE)")
        raise InputError(f"state dict {_name(file)} has {len(others)} entries that are not tensors: "
                         f"{', '.join(map(repr, others[:5]))}{' …' if len(others) > 5 else ''}", hint=hint)
    return {str(key): value for key, value in state.items()}, origin


def _check_output(network: nn.Module, rows, num_classes: int, described: str) -> None:
    """Two real samples through the adopted model: logits ``[2, C]``, all finite."""
    try:
        logits = predict_logits(network, rows)
    except Exception as exc:  # the user's weights on the plugin's architecture: any failure is bad input
        raise InputError(f"{described} with the adopted weights fails on two samples: {type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}",
                         hint="check --model-option against the architecture you trained") from None
    if tuple(logits.shape) != (len(rows), num_classes):
        raise InputError(f"{described} returns {list(logits.shape)} for {len(rows)} samples, expected "
                         f"[{len(rows)}, {num_classes}]", hint="the last layer must output one logit per class")
    if not torch.isfinite(logits).all():
        raise InputError("the adopted weights give non-finite logits (NaN or inf) on training samples",
                         hint="check that the state dict is the trained model's (a diverged run saves NaN weights)")


def _chance_warning(test_accuracy: float, n_test: int, num_classes: int) -> list[str]:
    """A warning when test accuracy is within two binomial standard errors of guessing (1/C)."""
    chance = 1.0 / num_classes
    if n_test == 0 or not math.isfinite(test_accuracy):
        return []
    if test_accuracy > chance + 2 * math.sqrt(chance * (1 - chance) / n_test):
        return []
    return [f"test accuracy {test_accuracy:.3f} is at chance level ({chance:.3f} for {num_classes} classes): the "
            "model may have been trained with other preprocessing, label order or features than this dataset gives"]

