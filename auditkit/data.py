"""The dataset every plugin produces, and the one way code reads its rows.

A :class:`SampleSet` holds what is small for any dataset in memory (one stable string ID, one label and
one split per sample) and the features either as one in-memory tensor (the fast path for small data)
or as a map-style :class:`torch.utils.data.Dataset` read row by row (data larger than memory).

Code that needs features never indexes ``SampleSet.features``: it takes a :class:`Rows` selection
(``data.rows(positions)``) and reads it with :func:`stream` (batches in a given order: training,
unlearning) or :meth:`Rows.batches` (in order: predictions, signals). In memory a batch is one tensor
index; streamed, the same batches come from a :class:`~torch.utils.data.DataLoader` with
:func:`loader_workers` worker processes (pinned memory when the target is a GPU). The batch order is always
decided in the main process, so every result is identical for any number of workers, and identical
between the two paths for the same rows.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from auditkit.errors import InputError

SPLITS = ("train", "validation", "test", "unused")
"""Split names; ``unused`` holds samples the model neither trained on nor is audited with (see
:meth:`SampleSet.with_training_ids`)."""

#: Rows per evaluation batch at most (predictions and signals); fewer for large rows, see :func:`eval_batch_size`.
EVAL_BATCH_ROWS = 4096
#: Bytes of features per evaluation batch at most: 4096 rows of 64 floats, but ~100 rows of 3×224×224.
EVAL_BATCH_BYTES = 64 * 2**20

_settings = {"loader_workers": 0}


def loader_workers() -> int:
    """How many DataLoader worker processes read streamed rows (0: in the main process)."""
    return _settings["loader_workers"]


def set_loader_workers(count: int) -> int:
    """Set the number of DataLoader workers for streamed datasets; returns the previous number.

    Results do not depend on it (the batch order is drawn in the main process); the CLI's ``--loader-workers``
    and the Python API's ``loader_workers=`` set it.
    """
    if int(count) < 0:
        raise ValueError(f"loader_workers must be >= 0, not {count}")
    previous, _settings["loader_workers"] = _settings["loader_workers"], int(count)
    return previous


@contextlib.contextmanager
def loader_workers_set_to(count: int) -> Iterator[None]:
    """Use ``count`` DataLoader workers inside the block."""
    previous = set_loader_workers(count)
    try:
        yield
    finally:
        set_loader_workers(previous)


class RowReadError(RuntimeError):
    """A streamed row could not be read. Raised inside DataLoader workers, so it carries one plain message
    (a worker re-raises an exception as ``type(message)``); :func:`stream` turns it into an InputError."""


@dataclass(frozen=True, eq=False)
class SampleSet:
    """A labelled dataset with one stable string ID and one split per sample.

    Attributes:
        name: dataset plugin name (for manifests and reports).
        ids: ``[N]`` unique sample IDs as strings.
        features: ``[N, *input_shape]`` tensor in memory (float32 for real-valued data), or ``None`` when
            the rows stream from ``dataset``.
        labels: ``[N]`` int64 tensor with values in ``[0, num_classes)`` (always in memory).
        splits: ``[N]`` numpy array of ``"train" | "validation" | "test" | "unused"``.
        num_classes: number of classes ``C``.
        options: the options the dataset plugin was built with (recorded in manifests).
        dataset: a map-style :class:`torch.utils.data.Dataset` whose item ``i`` is sample ``i``'s features
            ``[*input_shape]`` (or a ``(features, label)`` pair, the label checked against ``labels``);
            used when ``features`` is ``None``. Floating rows are read as float32. It may define
            ``fingerprint() -> str`` (a cheap content hash, e.g. over file sizes and times); without one,
            :meth:`content_sha256` reads every row.
    """

    name: str
    ids: np.ndarray
    features: torch.Tensor | None
    labels: torch.Tensor
    splits: np.ndarray
    num_classes: int
    options: dict = field(default_factory=dict)
    dataset: Dataset | None = None

    def __post_init__(self) -> None:
        n = len(self.ids)
        if (self.features is None) == (self.dataset is None):
            raise ValueError("give exactly one of features (in memory) and dataset (streamed)")
        if self.dataset is not None and len(self.dataset) != n:
            raise ValueError(f"the dataset has {len(self.dataset)} rows but there are {n} ids")
        if (self.features is not None and self.features.shape[0] != n) or self.labels.shape[0] != n \
                or len(self.splits) != n:
            raise ValueError("ids, features, labels and splits must have the same length")
        unknown = set(np.unique(self.splits).tolist()) - set(SPLITS)
        if unknown:
            raise ValueError(f"unknown split names {sorted(unknown)}; expected {SPLITS}")

    @classmethod
    def from_dataset(cls, dataset: Dataset, *, name: str, ids: Sequence[str] | np.ndarray,
                     labels: Sequence[int] | np.ndarray | torch.Tensor, splits: Sequence[str] | np.ndarray,
                     num_classes: int, options: dict | None = None) -> SampleSet:
        """A streamed :class:`SampleSet`: rows are read from ``dataset`` only when a batch needs them."""
        return cls(name=name, ids=np.asarray(ids).astype(str), features=None,
                   labels=torch.as_tensor(np.asarray(labels), dtype=torch.int64),
                   splits=np.asarray(splits).astype(str), num_classes=int(num_classes),
                   options=dict(options or {}), dataset=dataset)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def streamed(self) -> bool:
        """True when the features are read from :attr:`dataset` row by row rather than held in memory."""
        return self.features is None

    @cached_property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample's features (streamed: read from the first row)."""
        if self.features is not None:
            return tuple(self.features.shape[1:])
        try:
            return tuple(_RowReader(self)[0].shape) if len(self) else ()
        except RowReadError as exc:
            raise InputError(str(exc), hint=f"fix or remove that sample in dataset {self.name!r}") from None

    def indices(self, split: str) -> np.ndarray:
        """``[n]`` int64 positions of the samples in ``split``, in dataset order."""
        return np.flatnonzero(self.splits == split).astype(np.int64)

    def position_of(self) -> dict[str, int]:
        """Map from sample ID to its position."""
        return {sample_id: i for i, sample_id in enumerate(self.ids.tolist())}

    def positions(self, ids: Iterable[str]) -> np.ndarray:
        """``[k]`` positions of ``ids`` (all must exist)."""
        lookup = self.position_of()
        return np.asarray([lookup[i] for i in ids], dtype=np.int64)

    def rows(self, positions: Sequence[int] | np.ndarray) -> Rows:
        """The rows at ``positions`` (in that order), to read with :func:`stream` or :meth:`Rows.batches`.

        In memory the selection is gathered now (one copy of those rows); streamed, nothing is read yet.
        """
        positions = np.asarray(positions, dtype=np.int64)
        index = torch.from_numpy(positions)
        if self.features is not None:
            return Rows(labels=self.labels[index], features=self.features[index], source=None, positions=None)
        return Rows(labels=self.labels[index], features=None, source=self, positions=positions)

    def subset(self, positions: Sequence[int] | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Features ``[k, *input_shape]`` and labels ``[k]`` at ``positions``, all in memory at once.

        For small selections (tests, a few rows); streamed data should be read in batches with :meth:`rows`.
        """
        return self.rows(positions).materialize()

    def with_training_ids(self, train_ids: Iterable[str]) -> SampleSet:
        """This dataset with exactly ``train_ids`` as its training split (a model trained outside auditkit).

        Listed samples of the validation or test split move to train (validation and test must be
        unseen); training-split samples not listed become ``unused``: the model never saw them, but they
        were not set aside as held-out data either, so the audit does not use them.
        Raises :class:`KeyError` naming the first unknown IDs.
        """
        wanted = np.asarray(sorted(set(str(i) for i in train_ids)))
        known = np.isin(wanted, self.ids)
        if not known.all():
            raise KeyError(wanted[~known].tolist())
        listed = np.isin(self.ids, wanted)
        splits = np.where(listed, "train", np.where(self.splits == "train", "unused", self.splits))
        return _replace(self, splits=splits.astype(str))

    def content_sha256(self) -> str:
        """SHA-256 of every feature, label and ID: what a cache of models trained on this data keys on.

        Streamed data uses ``dataset.fingerprint()`` when the dataset has one, else reads every row.
        """
        contents = hashlib.sha256()
        if self.features is not None:
            contents.update(np.ascontiguousarray(self.features.numpy()).tobytes())
        elif callable(getattr(self.dataset, "fingerprint", None)):
            contents.update(str(self.dataset.fingerprint()).encode())
        else:
            for batch in self.rows(np.arange(len(self))).batches(device=torch.device("cpu")):
                contents.update(np.ascontiguousarray(batch.features.numpy()).tobytes())
        for array in (self.labels.numpy(), np.asarray(self.ids, dtype=str)):
            contents.update(np.ascontiguousarray(array).tobytes())
        return contents.hexdigest()


def _replace(data: SampleSet, **changes: Any) -> SampleSet:
    values = {name: getattr(data, name) for name in data.__dataclass_fields__}
    return SampleSet(**{**values, **changes})


class Batch(NamedTuple):
    """One batch: ``features [B, *input_shape]`` and ``labels [B]`` on the target device, and how many
    rows each selection passed to :func:`stream` contributed (in order)."""

    features: torch.Tensor
    labels: torch.Tensor
    sizes: tuple[int, ...]


@dataclass(frozen=True, eq=False)
class Rows:
    """A selection of rows of one dataset, in a fixed order (see :meth:`SampleSet.rows`).

    ``labels`` ``[n]`` are always in memory. In memory, ``features`` ``[n, *input_shape]`` holds the rows;
    streamed, ``source`` and ``positions`` say where they are read from.
    """

    labels: torch.Tensor
    features: torch.Tensor | None
    source: SampleSet | None
    positions: np.ndarray | None

    @classmethod
    def from_tensors(cls, features: torch.Tensor, labels: torch.Tensor) -> Rows:
        """In-memory rows from ``features [n, ...]`` and ``labels [n]``."""
        if len(features) != len(labels):
            raise ValueError(f"{len(features)} feature rows but {len(labels)} labels")
        return cls(labels=labels, features=features, source=None, positions=None)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def row_bytes(self) -> int:
        """Bytes of one row's features (float32 assumed when streamed)."""
        if self.features is not None:
            return self.features[0].numel() * self.features.element_size() if len(self) else 0
        return math.prod(self.source.input_shape) * 4

    def batches(self, *, device: torch.device, batch_size: int | None = None) -> Iterator[Batch]:
        """Every row once, in order, in batches of ``batch_size`` (default :func:`eval_batch_size`)."""
        size = batch_size or eval_batch_size(self)
        index = torch.arange(len(self))
        return stream([self], ((index[start:start + size],) for start in range(0, len(self), size)), device=device)

    def materialize(self, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """Features ``[n, *input_shape]`` and labels ``[n]``, all at once, on ``device``."""
        device = torch.device(device)
        if self.features is not None:
            return self.features.to(device), self.labels.to(device)
        parts = [batch.features for batch in self.batches(device=device)]
        features = torch.cat(parts) if parts else torch.empty(0, *self.source.input_shape)
        return features, self.labels.to(device)


def eval_batch_size(rows: Rows) -> int:
    """Rows per prediction batch: :data:`EVAL_BATCH_ROWS`, fewer when that would exceed :data:`EVAL_BATCH_BYTES`."""
    return int(max(1, min(EVAL_BATCH_ROWS, EVAL_BATCH_BYTES // max(rows.row_bytes, 1))))


def stream(parts: Sequence[Rows], plan: Iterable[Sequence[torch.Tensor]], *, device: torch.device) -> Iterator[Batch]:
    """The batches of ``plan``: per step, the rows ``parts[k][plan_step[k]]`` of every part, concatenated.

    ``plan`` yields one tuple of ``int64`` index tensors per step (positions within each part). It is
    consumed in the main process (ahead of the consumer when DataLoader workers prefetch), so it may draw
    from a generator that nothing else uses. In memory every part is moved to ``device`` once and each
    step is one index per part; streamed (every part from the same :class:`SampleSet`), the rows come
    from a DataLoader over ``source.dataset`` with :func:`loader_workers` workers, pinned when ``device`` is a GPU.
    """
    device = torch.device(device)
    if all(part.features is not None for part in parts):
        return _in_memory(parts, plan, device)
    sources = {id(part.source) for part in parts}
    if len(sources) != 1 or any(part.source is None for part in parts):
        raise ValueError("stream() reads streamed parts of one dataset, or in-memory parts only")
    return _streamed(parts, plan, device)


def _in_memory(parts: Sequence[Rows], plan: Iterable[Sequence[torch.Tensor]], device: torch.device) -> Iterator[Batch]:
    moved = [(part.features.to(device), part.labels.to(device)) for part in parts]
    for step in plan:
        if len(moved) == 1:
            (features, labels), (index,) = moved[0], step
            yield Batch(features[index], labels[index], (len(index),))
            continue
        yield Batch(torch.cat([features[index] for (features, _), index in zip(moved, step)]),
                    torch.cat([labels[index] for (_, labels), index in zip(moved, step)]),
                    tuple(len(index) for index in step))


class _StepPositions:
    """The plan as a DataLoader batch sampler (dataset positions per step); records each step's sizes."""

    def __init__(self, parts: Sequence[Rows], plan: Iterable[Sequence[torch.Tensor]]) -> None:
        self.parts, self.plan = parts, plan
        self.labels: deque[list[torch.Tensor]] = deque()  # of the steps handed out and not yet consumed

    def __iter__(self) -> Iterator[list[int]]:
        for step in self.plan:
            index = [np.asarray(i, dtype=np.int64) for i in step]
            self.labels.append([part.labels[torch.from_numpy(i)] for part, i in zip(self.parts, index)])
            yield np.concatenate([part.positions[i] for part, i in zip(self.parts, index)]).tolist()


def _streamed(parts: Sequence[Rows], plan: Iterable[Sequence[torch.Tensor]], device: torch.device) -> Iterator[Batch]:
    source = parts[0].source
    sampler = _StepPositions(parts, plan)
    count = loader_workers()
    loader = DataLoader(
        _RowReader(source), batch_sampler=sampler, num_workers=count, pin_memory=device.type == "cuda",
        # Its own generator: a DataLoader otherwise draws its worker seed from the global torch RNG, which
        # would make model initialisation or dropout differ from the in-memory path.
        generator=torch.Generator().manual_seed(0), persistent_workers=False,
        prefetch_factor=2 if count else None,
    )
    try:
        for features in loader:  # in order: a DataLoader returns batches in sampler order
            labels = sampler.labels.popleft()
            yield Batch(features.to(device, non_blocking=True), torch.cat(labels).to(device),
                        tuple(len(part) for part in labels))
    except RowReadError as exc:  # from a worker, the message ends with the original exception's line
        message = str(exc).strip().splitlines()[-1].removeprefix(f"{RowReadError.__module__}.RowReadError: ")
        raise InputError(message, hint=f"fix or remove that sample in dataset {source.name!r} (rows are read "
                                       "on demand, so a broken one shows up only when it is needed)") from None


class _RowReader(Dataset):
    """``source.dataset`` as the DataLoader reads it: features only, float rows as float32, labels checked."""

    def __init__(self, source: SampleSet) -> None:
        self.dataset, self.labels, self.ids = source.dataset, source.labels.numpy(), source.ids

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, position: int) -> torch.Tensor:
        try:
            item = self.dataset[position]
        except Exception as exc:  # any failure of a user's dataset is reported with the row's ID
            raise RowReadError(f"reading sample {str(self.ids[position])!r} failed: {type(exc).__name__}: {exc}") from None
        if isinstance(item, (tuple, list)):
            item, label = item[0], item[1]
            if int(label) != int(self.labels[position]):
                raise RowReadError(f"sample {str(self.ids[position])!r} has label {int(label)} in the dataset but "
                                   f"{int(self.labels[position])} in the labels given with it")
        row = torch.as_tensor(item)
        return row.float() if row.is_floating_point() else row


def seeded_split(
    n: int, *, seed: int, train: float, validation: float, stratify: np.ndarray | None = None
) -> np.ndarray:
    """Assign ``n`` samples to train/validation/test with fixed fractions, reproducibly.

    Returns a ``[n]`` array of split names; test receives the remainder. With ``stratify`` the
    fractions hold within every class.
    """
    if not (0 < train < 1 and 0 < validation < 1 and train + validation < 1):
        raise ValueError("split fractions must be in (0, 1) and leave room for a test split")
    rng = np.random.default_rng(seed)
    splits = np.empty(n, dtype=object)
    groups = [np.arange(n)] if stratify is None else [np.flatnonzero(stratify == c) for c in np.unique(stratify)]
    for group in groups:
        order = group[rng.permutation(len(group))]
        n_train = int(round(train * len(group)))
        n_val = int(round(validation * len(group)))
        splits[order[:n_train]] = "train"
        splits[order[n_train : n_train + n_val]] = "validation"
        splits[order[n_train + n_val :]] = "test"
    return splits.astype(str)
