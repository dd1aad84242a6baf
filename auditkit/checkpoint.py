"""Checkpoints: one file holding a state dict and the manifest that says how to rebuild and check it.

A checkpoint is ``torch.save`` of ``{"format": "auditkit-checkpoint", "version": 1, "manifest": {...},
"state_dict": {...}}``, made only of tensors, strings, numbers, lists and dicts, so it loads with
``torch.load(weights_only=True)``. The manifest names the model plugin and its options (enough to rebuild
the architecture), the dataset plugin and its options (split seed included), and the SHA-256 of the
sorted training-ID list, so a checkpoint used with other data is refused instead of silently audited.
"""

from __future__ import annotations

import io
import pickle
import platform
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import auditkit
from auditkit.data import SampleSet
from auditkit.errors import InputError
from auditkit.fsutil import atomic_write_bytes, sha256_bytes, sha256_file
from auditkit.messages import shown
from auditkit.progress import ProgressCallback, no_progress
from auditkit.registry import Registry
from auditkit.training import TrainRecipe, accuracy, train_model

FORMAT = "auditkit-checkpoint"
VERSION = 1


def ids_sha256(ids: np.ndarray | list[str]) -> str:
    """SHA-256 of the sorted IDs joined by newlines: the fingerprint of a training set."""
    return sha256_bytes("\n".join(sorted(str(i) for i in ids)).encode("utf-8"))


def _plain(value: Any) -> Any:
    """Options as JSON- and weights_only-friendly values (tuples become lists, numpy scalars numbers)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, str):
        return str(value)  # drops str subclasses such as TorchVersion, which weights_only refuses
    return value


@dataclass(frozen=True)
class CheckpointManifest:
    """How a checkpoint's model was built and trained.

    Attributes:
        model / model_options: model plugin name and the options it was built with.
        dataset / dataset_options: dataset plugin name and options (split seed included).
        num_classes / input_shape: the ``C`` and per-sample shape the model was built for.
        train_ids_sha256 / train_count: fingerprint (:func:`ids_sha256`) and size of the training set.
        recipe: the :class:`~auditkit.training.TrainRecipe` as a dict, or ``None`` for a model adopted
            without one (then nothing that retrains is allowed); seed: the training seed (``None`` if unknown).
        metrics: accuracies measured after training (``train_accuracy``, ``test_accuracy``, ...).
        auditkit_version / torch_version / python_version: the software that wrote it.
        train_ids: the exact training IDs when they differ from the dataset's own train split (a model
            adopted with ``--train-ids``); ``None`` means the dataset's train split.
        adopted_from: for ``auditkit adopt``, the state-dict file's name and SHA-256; ``None`` otherwise.
    """

    model: str
    model_options: dict[str, Any]
    dataset: str
    dataset_options: dict[str, Any]
    num_classes: int
    input_shape: tuple[int, ...]
    train_ids_sha256: str
    train_count: int
    recipe: dict[str, Any] | None
    seed: int | None
    metrics: dict[str, float] = field(default_factory=dict)
    auditkit_version: str = auditkit.__version__
    torch_version: str = str(torch.__version__)
    python_version: str = platform.python_version()
    train_ids: list[str] | None = None
    adopted_from: dict[str, str] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain values only (lists, not tuples): fit for JSON and for ``weights_only`` loading."""
        return _plain(asdict(self))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> CheckpointManifest:
        """The manifest from :meth:`to_dict` output; an :class:`InputError` if fields are missing."""
        if not isinstance(values, dict):
            raise InputError("the checkpoint manifest is not a mapping", hint="re-create the checkpoint with `auditkit train`")
        names = {f.name for f in fields(cls)}
        required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
        missing = [name for name in required if name not in values]
        if missing:
            raise InputError(f"the checkpoint manifest lacks {', '.join(missing)}",
                             hint="re-create the checkpoint with `auditkit train`")
        _check_manifest_types(values)
        known = {k: v for k, v in values.items() if k in names}
        try:
            known["input_shape"] = tuple(int(d) for d in known["input_shape"])
        except (TypeError, ValueError):
            raise InputError(f"the checkpoint manifest's input_shape {known['input_shape']!r} is not a list of sizes",
                             hint="re-create the checkpoint with `auditkit train`") from None
        return cls(**known)

    @property
    def train_recipe(self) -> TrainRecipe | None:
        """The recipe as a :class:`TrainRecipe` (for ``retrain`` and reference models); ``None`` if none was recorded."""
        return None if self.recipe is None else TrainRecipe.from_dict(self.recipe)

    def describe_model(self) -> str:
        """E.g. ``mlp (widths=[256])`` for error messages and reports."""
        return describe_model(self.model, self.model_options)


def describe_model(model: str, options: dict[str, Any]) -> str:
    """A model plugin and its options as one phrase, e.g. ``mlp (widths=[256])``."""
    listed = ", ".join(f"{k}={v!r}" for k, v in sorted(_plain(options).items()))
    return f"{model} ({listed})" if listed else model


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_options(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(key, str) for key in value)


#: What each manifest field must hold; a file edited by hand or written by other software can hold
#: anything, and a wrong type used to surface as a TypeError deep inside a plugin.
_MANIFEST_FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "model": (lambda v: isinstance(v, str) and bool(v), "a plugin name"),
    "dataset": (lambda v: isinstance(v, str) and bool(v), "a plugin name"),
    "model_options": (_is_options, "a table of options"),
    "dataset_options": (_is_options, "a table of options"),
    "num_classes": (lambda v: _is_int(v) and v >= 2, "an integer of at least 2"),
    "input_shape": (lambda v: isinstance(v, (list, tuple)) and all(_is_int(d) and d >= 1 for d in v),
                    "a list of positive sizes"),
    "train_ids_sha256": (lambda v: isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) is not None,
                         "a SHA-256 hex digest"),
    "train_count": (lambda v: _is_int(v) and v >= 0, "a non-negative integer"),
    "recipe": (lambda v: v is None or isinstance(v, dict), "a table of training settings, or null"),
    "seed": (lambda v: v is None or (_is_int(v) and v >= 0), "a non-negative integer, or null"),
    "metrics": (lambda v: isinstance(v, dict), "a table"),
    "train_ids": (lambda v: v is None or (isinstance(v, list) and all(isinstance(i, str) for i in v)),
                  "a list of IDs, or null"),
    "adopted_from": (lambda v: v is None or isinstance(v, dict), "a table, or null"),
}


def _check_manifest_types(values: dict[str, Any]) -> None:
    """One :class:`InputError` naming every manifest field of the wrong type (and a recipe that is unusable)."""
    wrong = [f"{name} is {shown(values[name], limit=30)} (must be {what})"
             for name, (valid, what) in _MANIFEST_FIELDS.items() if name in values and not valid(values[name])]
    if not wrong and isinstance(values.get("recipe"), dict):
        try:
            TrainRecipe.from_dict(values["recipe"])
        except InputError as exc:
            wrong.append(f"recipe: {exc.message}")
    if wrong:
        raise InputError(f"the checkpoint manifest has {len(wrong)} malformed field{'s' if len(wrong) > 1 else ''}: "
                         f"{'; '.join(wrong)}", hint="the manifest was edited or written by other software: re-create "
                                                    "the checkpoint with `auditkit train`, or fix those fields")


def _check_finite_weights(state_dict: dict[str, Any], name: str) -> None:
    """Refuse NaN or infinite weights at load, before they make a run fail halfway with a misleading cause."""
    broken = [(key, value) for key, value in state_dict.items()
              if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all())]
    if not broken:
        return
    key, tensor = broken[0]
    count = int((~torch.isfinite(tensor)).sum())
    others = f" (and {len(broken) - 1} more tensor(s))" if len(broken) > 1 else ""
    raise InputError(f"checkpoint {shown(name)} holds non-finite weights: {count:,} of the {tensor.numel():,} values of "
                     f"{shown(key, limit=40)} are NaN or infinite{others}",
                     hint="the model diverged before it was saved, or the file was altered: use an earlier "
                          "checkpoint, or retrain it with `auditkit train`")


def read_manifest(path: str | Path) -> CheckpointManifest:
    """A checkpoint's manifest alone, read and checked like :func:`load_checkpoint` reads it (no model built)."""
    return CheckpointManifest.from_dict(_read_payload(Path(path))["manifest"])


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A checkpoint read back: the model in eval mode, its manifest, and the file's SHA-256."""

    model: nn.Module
    manifest: CheckpointManifest
    sha256: str
    path: Path


def save_checkpoint(path: str | Path, *, state_dict: dict[str, torch.Tensor], manifest: CheckpointManifest) -> str:
    """Write a checkpoint atomically (temp file + rename); returns the SHA-256 of the written file.

    ``state_dict`` tensors are copied to contiguous CPU tensors; the parent folder is created.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "manifest": manifest.to_dict(),
        "state_dict": {key: value.detach().cpu().contiguous().clone() for key, value in state_dict.items()},
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getvalue()
    atomic_write_bytes(target, data)
    return sha256_bytes(data)


def build_model(manifest: CheckpointManifest, *, registry: Registry) -> nn.Module:
    """A freshly initialised model of the manifest's architecture (seed torch first for reproducibility)."""
    return model_builder(manifest, registry=registry)()


def model_builder(manifest: CheckpointManifest, *, registry: Registry) -> Callable[[], nn.Module]:
    """A ``build_model`` callable for :class:`~auditkit.interfaces.UnlearningTask` and reference models.

    The plugin is resolved now, so an unknown or broken model plugin fails before any heavy work.
    """
    plugin = registry.create("models", manifest.model, **manifest.model_options)
    return lambda: plugin.build(input_shape=tuple(manifest.input_shape), num_classes=manifest.num_classes)


def read_weights_only(path: Path, *, what: str = "checkpoint", flag: str = "--checkpoint",
                      make: str = "train one with `auditkit train`",
                      save: str = "save only tensors: use `auditkit train`, or auditkit.checkpoint.save_checkpoint "
                                  "with model.state_dict()") -> Any:
    """``torch.load(path, weights_only=True)`` on CPU, every failure one :class:`InputError` naming ``what``.

    ``flag`` names the option that gave the path, ``make`` how to create a good file and ``save`` how
    to save one without pickled code (the hints).
    """
    name = str(path)
    if not path.exists():
        raise InputError(f"{what} {name!r} does not exist", hint=f"{make} or check the {flag} path")
    if not path.is_file():
        raise InputError(f"{what} {name!r} is not a file", hint=f"point {flag} at the .pt file")
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols above our own error
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt file can make the unpickler raise anything (KeyError, EOFError, ...)
        text = str(exc).strip()
        # torch's own first line advises weights_only=False; the unpickler's words say what it met.
        found = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
        detail = found.group(1).strip() if found else text.splitlines()[0] if text else type(exc).__name__
        # Only a refused global is code or an object; any other refusal is a corrupt or foreign file.
        if isinstance(exc, pickle.UnpicklingError) and "unsupported global" in detail.lower():
            raise InputError(f"{what} {name!r} contains pickled code or objects, which auditkit refuses to load "
                             "(torch.load with weights_only=True rejected it)", hint=save) from None
        raise InputError(f"{what} {name!r} is not a readable torch file ({detail})",
                         hint=f"the file is truncated or not a {what}; {make}") from None


def _read_payload(path: Path) -> dict[str, Any]:
    name = str(path)
    payload = read_weights_only(path)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        bare = isinstance(payload, dict) and payload and all(isinstance(v, torch.Tensor) for v in payload.values())
        raise InputError(
            f"{name!r} is {'a bare state dict' if bare else 'not an auditkit checkpoint'} (no manifest)",
            hint="auditkit needs the model plugin and training data recorded: adopt it with `auditkit adopt "
                 "--state-dict FILE --model PLUGIN --dataset PLUGIN --out CHECKPOINT`, or write it with "
                 "auditkit.checkpoint.save_checkpoint(path, state_dict=..., manifest=...)",
        )
    if payload.get("version") != VERSION:
        raise InputError(f"checkpoint {name!r} has format version {payload.get('version')!r}; "
                         f"this auditkit reads version {VERSION}", hint="use the auditkit version that wrote it")
    if not isinstance(payload.get("state_dict"), dict):
        raise InputError(f"checkpoint {name!r} has no state dict", hint="re-create it with `auditkit train`")
    return payload


def _listed(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def architecture_mismatch(model: nn.Module, state_dict: dict[str, Any]) -> list[str]:
    """What keeps ``state_dict`` from loading into ``model`` exactly: missing, unexpected and mis-shaped
    keys, each list elided after five names; empty when it fits."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    reshaped = [k for k in expected if k in state_dict and (not isinstance(state_dict[k], torch.Tensor) or
                                                              tuple(expected[k].shape) != tuple(state_dict[k].shape))]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing: {_listed(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected: {_listed(unexpected)}")
    if reshaped:
        shapes = [f"{k} {_shape(state_dict[k])} in the file, {list(expected[k].shape)} in the model" for k in reshaped]
        parts.append(f"{len(reshaped)} of another shape: {_listed(shapes, limit=3)}")
    return parts


def _shape(value: Any) -> str:
    return str(list(value.shape)) if isinstance(value, torch.Tensor) else f"a {type(value).__name__}"


def _check_architecture(model: nn.Module, state_dict: dict[str, torch.Tensor], manifest: CheckpointManifest,
                        name: str) -> None:
    """One readable error when the weights do not fit the architecture the manifest names."""
    parts = architecture_mismatch(model, state_dict)
    if not parts:
        return
    raise InputError(
        f"checkpoint {name!r} does not fit the architecture its manifest names, {manifest.describe_model()} "
        f"for input {list(manifest.input_shape)} and {manifest.num_classes} classes: {'; '.join(parts)}",
        hint="the weights were saved from a different model or options; re-train with `auditkit train` "
             "or fix model_options in the manifest",
    )


def load_checkpoint(path: str | Path, *, registry: Registry) -> LoadedCheckpoint:
    """Read, validate and rebuild a checkpoint; the model comes back on CPU in eval mode."""
    file = Path(path)
    payload = _read_payload(file)
    manifest = CheckpointManifest.from_dict(payload["manifest"])
    model = build_model(manifest, registry=registry)
    _check_architecture(model, payload["state_dict"], manifest, str(file))
    _check_finite_weights(payload["state_dict"], str(file))
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return LoadedCheckpoint(model=model, manifest=manifest, sha256=sha256_file(file), path=file)


def load_dataset(manifest: CheckpointManifest, *, registry: Registry) -> SampleSet:
    """The dataset a checkpoint was trained on, with its training IDs applied, checked against the manifest."""
    data = registry.create("datasets", manifest.dataset, **manifest.dataset_options).load()
    if manifest.train_ids is not None:
        data = with_training_ids(data, manifest.train_ids, source="the checkpoint's training IDs")
    check_matches_dataset(manifest, data)
    return data


def with_training_ids(data: SampleSet, train_ids: Sequence[str], *, source: str) -> SampleSet:
    """:meth:`SampleSet.with_training_ids`, refusing unknown IDs and a split left without validation or test data."""
    try:
        adjusted = data.with_training_ids(train_ids)
    except KeyError as exc:
        unknown = exc.args[0]
        raise InputError(f"{len(unknown)} of {source} are not in dataset {data.name!r}: {_listed(unknown)}",
                         hint="list IDs of this dataset (and its options) only; IDs are case-sensitive") from None
    for split in ("validation", "test"):
        if not len(adjusted.indices(split)):
            raise InputError(f"{source} cover every {split} sample of dataset {data.name!r}, so none is left "
                             "unseen", hint=f"the audit needs unseen {split} samples: give the dataset a {split} "
                                            "split outside the training IDs (e.g. a split column)")
    return adjusted


def check_matches_dataset(manifest: CheckpointManifest, data: SampleSet) -> None:
    """Refuse data the checkpoint was not trained on (other dataset, options, split or class count)."""
    if manifest.dataset != data.name:
        raise InputError(f"the checkpoint was trained on dataset {manifest.dataset!r}, not {data.name!r}",
                         hint=f"use --dataset {manifest.dataset} (or omit --dataset: the manifest names it)")
    if manifest.num_classes != data.num_classes or tuple(manifest.input_shape) != data.input_shape:
        raise InputError(
            f"the checkpoint expects {manifest.num_classes} classes and input {list(manifest.input_shape)}, "
            f"but dataset {data.name!r} has {data.num_classes} and {list(data.input_shape)}",
            hint=f"use the dataset options the checkpoint was trained with: {manifest.dataset_options}",
        )
    train_ids = data.ids[data.indices("train")]
    if ids_sha256(train_ids) != manifest.train_ids_sha256:
        raise InputError(
            f"dataset {data.name!r} has a different training split ({len(train_ids)} IDs) than the checkpoint "
            f"was trained on ({manifest.train_count} IDs; the fingerprints differ)",
            hint=f"use the dataset options the checkpoint was trained with: {manifest.dataset_options}",
        )


def train_checkpoint(
    *,
    registry: Registry,
    dataset: str,
    dataset_options: dict[str, Any] | None = None,
    model: str | None = None,
    model_options: dict[str, Any] | None = None,
    recipe: TrainRecipe | dict[str, Any] | None = None,
    seed: int = 0,
    out: str | Path,
    progress: ProgressCallback = no_progress,
) -> tuple[CheckpointManifest, str]:
    """Train a model plugin on a dataset's train split and write the checkpoint to ``out``.

    ``model``, ``model_options`` and ``recipe`` default to the dataset plugin's ``DEFAULT_MODEL``,
    ``DEFAULT_MODEL_OPTIONS`` (only when the model is the default one) and ``DEFAULT_RECIPE``; a
    recipe dict overrides single fields of the default. Plugins and options are validated before
    any training. Returns the manifest and the SHA-256 of the written file.
    """
    dataset_plugin = registry.create("datasets", dataset, **(dataset_options or {}))
    model_name = model or dataset_plugin.DEFAULT_MODEL
    if model_options is None:
        model_options = dict(dataset_plugin.DEFAULT_MODEL_OPTIONS) if model_name == dataset_plugin.DEFAULT_MODEL else {}
    model_plugin = registry.create("models", model_name, **model_options)
    if isinstance(recipe, TrainRecipe):
        train_recipe = recipe
    else:
        train_recipe = TrainRecipe.from_dict({**dataset_plugin.DEFAULT_RECIPE.to_dict(), **(recipe or {})})
    data = dataset_plugin.load()
    train, test = data.indices("train"), data.indices("test")
    torch.manual_seed(seed)
    network = model_plugin.build(input_shape=data.input_shape, num_classes=data.num_classes)
    train_rows = data.rows(train)
    train_model(network, train_rows, recipe=train_recipe, seed=seed, progress=progress)
    manifest = CheckpointManifest(
        model=model_name,
        model_options=_plain(model_plugin.options),
        dataset=dataset,
        dataset_options=_plain(data.options),
        num_classes=data.num_classes,
        input_shape=data.input_shape,
        train_ids_sha256=ids_sha256(data.ids[train]),
        train_count=len(train),
        recipe=train_recipe.to_dict(),
        seed=seed,
        metrics={"train_accuracy": accuracy(network, train_rows), "test_accuracy": accuracy(network, data.rows(test))},
    )
    return manifest, save_checkpoint(out, state_dict=network.state_dict(), manifest=manifest)
