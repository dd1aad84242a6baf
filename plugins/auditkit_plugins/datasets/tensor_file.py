"""Already-featurised data in a ``.pt`` or ``.npz`` file: ``X``, ``y``, ``ids`` and an optional ``split``."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from auditkit.data import SampleSet
from auditkit.errors import InputError
from auditkit.interfaces import DatasetPlugin
from auditkit.training import TrainRecipe
from auditkit_plugins.datasets._common import check_ids, check_labels, check_splits, sample_set, split_for

_HOW = ("save a dict with X [N, ...] float, y [N] int, ids (N strings) and optionally split: "
        "torch.save({...}, 'data.pt') with ids as a list of str, or np.savez('data.npz', X=..., y=..., "
        "ids=np.asarray(ids, dtype=str))")


def _load_arrays(path: Path) -> dict[str, object]:
    if not path.is_file():
        raise InputError(f"tensor file {str(path)!r} does not exist", hint="pass --dataset-option path=FILE")
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as archive:
                return {key: archive[key] for key in archive.files}
        except ValueError as exc:
            raise InputError(f"tensor file {str(path)!r} holds pickled objects ({exc})",
                             hint="store IDs as a string array: np.asarray(ids, dtype=str)") from None
        except Exception as exc:  # a corrupt archive can fail in many ways; all mean "not readable"
            raise InputError(f"tensor file {str(path)!r} is not a readable .npz ({exc})", hint=_HOW) from None
    if path.suffix == ".pt":
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            raise InputError(f"tensor file {str(path)!r} contains pickled code or objects, which auditkit refuses to load",
                             hint=_HOW) from None
        except Exception as exc:  # a corrupt file can make the unpickler raise anything
            raise InputError(f"tensor file {str(path)!r} is not a readable .pt ({str(exc).splitlines()[0]})",
                             hint=_HOW) from None
        if not isinstance(loaded, dict):
            raise InputError(f"tensor file {str(path)!r} holds a {type(loaded).__name__}, not a dict", hint=_HOW)
        return loaded
    raise InputError(f"tensor file {str(path)!r} is neither .pt nor .npz", hint=_HOW)


class TensorFileDataset(DatasetPlugin):
    """Features of any shape (images, text embeddings, …) with labels and IDs, from ``.pt`` or ``.npz``.

    ``.pt`` files are read with ``torch.load(weights_only=True)``: tensors, lists and strings only.
    Without a ``split`` entry the samples get a seeded stratified split.
    """

    PLUGIN_NAME = "tensors"
    DESCRIPTION = "your own featurised data: a .pt or .npz with X, y, ids and optional split"
    OPTIONS = {"path": "", "split_seed": 0, "train_fraction": 0.6, "validation_fraction": 0.2}
    DEFAULT_MODEL = "mlp"
    DEFAULT_MODEL_OPTIONS = {"widths": (256,)}
    DEFAULT_RECIPE = TrainRecipe(epochs=100, batch_size=32, lr=1e-3)

    def load(self) -> SampleSet:
        """``X`` as float32 ``[N, ...]``, ``y`` as int64 ``[N]``, ``ids`` as ``[N]`` strings."""
        if not self.options["path"]:
            raise InputError("the tensors dataset needs a file", hint="pass --dataset-option path=FILE.pt")
        path = Path(self.options["path"])
        source = f"tensor file {str(path)!r}"
        arrays = _load_arrays(path)
        missing = [key for key in ("X", "y", "ids") if key not in arrays]
        if missing:
            raise InputError(f"{source} lacks {', '.join(missing)}; keys found: {', '.join(map(str, arrays)) or 'none'}",
                             hint=_HOW)
        features = np.asarray(arrays["X"].numpy() if isinstance(arrays["X"], torch.Tensor) else arrays["X"])
        labels = np.asarray(arrays["y"].numpy() if isinstance(arrays["y"], torch.Tensor) else arrays["y"])
        ids = np.asarray([str(i) for i in arrays["ids"]])
        n = len(ids)
        if features.ndim < 2 or len(features) != n or labels.shape != (n,):
            raise InputError(f"{source}: X {list(features.shape)}, y {list(labels.shape)} and {n} ids do not line up",
                             hint="X must be [N, ...], y [N] and ids N strings")
        if not np.issubdtype(features.dtype, np.number) or not np.isfinite(features).all():
            raise InputError(f"{source}: X must be finite numbers", hint="replace NaN/inf values before auditing")
        if not np.issubdtype(labels.dtype, np.integer):
            raise InputError(f"{source}: y has dtype {labels.dtype}, not integers",
                             hint="labels must be class numbers 0, 1, …, C-1 (int64)")
        check_ids(ids, source=source)
        num_classes = check_labels(labels.astype(np.int64), source=source)
        if "split" in arrays:
            splits = check_splits(np.asarray([str(s) for s in arrays["split"]]), source=f"{source} split")
            if len(splits) != n:
                raise InputError(f"{source}: split has {len(splits)} entries for {n} samples", hint=_HOW)
        else:
            splits = check_splits(split_for(labels, self.options), source=f"the seeded split of {source}")
        return sample_set(self.PLUGIN_NAME, ids, features, labels, splits, self.options, num_classes=num_classes)
