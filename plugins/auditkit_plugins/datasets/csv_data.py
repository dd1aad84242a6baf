"""A user's own table: one row per sample with an ID column, a label column and numeric features."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from auditkit.data import SampleSet
from auditkit.errors import InputError
from auditkit.interfaces import DatasetPlugin
from auditkit.training import TrainRecipe
from auditkit_plugins.datasets._common import (
    check_ids,
    check_labels,
    check_splits,
    sample_set,
    split_for,
    standardize,
)

_MISSING = {"", "na", "n/a", "nan", "null", "none"}


def _read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    """The header and data rows (blank lines skipped) of a UTF-8 CSV, or a clear error."""
    if not path.is_file():
        raise InputError(f"CSV file {str(path)!r} does not exist", hint="pass the file with --dataset-option path=FILE")
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            rows = [row for row in csv.reader(handle) if any(cell.strip() for cell in row)]
    except UnicodeDecodeError:
        raise InputError(f"CSV file {str(path)!r} is not UTF-8 text", hint="save it as UTF-8 (CSV UTF-8)") from None
    except csv.Error as exc:
        raise InputError(f"CSV file {str(path)!r} is malformed: {exc}", hint="check its quoting") from None
    if not rows:
        raise InputError(f"CSV file {str(path)!r} is empty", hint="the first line must name the columns")
    header = [cell.strip() for cell in rows[0]]
    if len(rows) == 1:
        raise InputError(f"CSV file {str(path)!r} has a header but no rows", hint="add one row per sample")
    return header, rows[1:]


class CsvDataset(DatasetPlugin):
    """Numeric features from a CSV file with a header line.

    Columns: ``id_column`` (unique sample IDs), ``label_column`` (integer classes 0…C-1), an optional
    split column (``train``/``validation``/``test``; by default a column named ``split`` is used when
    present, otherwise a seeded stratified split), and numeric features: ``features`` (comma-separated
    names) or every other column. Features are z-scored with train-split statistics unless
    ``standardize=false``. Missing values are an error: fill or drop them first.
    """

    PLUGIN_NAME = "csv"
    DESCRIPTION = "your own CSV table: id, label, numeric features, optional split column"
    OPTIONS = {"path": "", "id_column": "id", "label_column": "label", "split_column": "", "features": "",
               "standardize": True, "split_seed": 0, "train_fraction": 0.6, "validation_fraction": 0.2}
    DEFAULT_MODEL = "mlp"
    DEFAULT_MODEL_OPTIONS = {"widths": (256,)}
    DEFAULT_RECIPE = TrainRecipe(epochs=100, batch_size=32, lr=1e-3)

    def load(self) -> SampleSet:
        """``[N, D]`` float features from the ``D`` feature columns, in file order."""
        if not self.options["path"]:
            raise InputError("the csv dataset needs a file", hint="pass --dataset-option path=FILE.csv")
        path = Path(self.options["path"])
        source = f"CSV file {str(path)!r}"
        header, rows = _read_rows(path)
        column = {name: i for i, name in enumerate(header)}
        split_name = self.options["split_column"] or ("split" if "split" in column else "")
        wanted = [self.options["id_column"], self.options["label_column"]] + ([split_name] if split_name else [])
        if self.options["features"]:
            feature_names = [name.strip() for name in self.options["features"].split(",") if name.strip()]
        else:
            feature_names = [name for name in header if name not in wanted]
        missing = [name for name in wanted + feature_names if name not in column]
        if missing:
            # A header cell with a line break or control character is shown as a literal: one clean line.
            found = ", ".join(name if name.isprintable() else repr(name) for name in header)
            raise InputError(f"{source} has no column {', '.join(map(repr, missing))}; columns found: {found}",
                             hint="name the columns with --dataset-option id_column=… label_column=… features=…")
        if not feature_names:
            raise InputError(f"{source} has no feature columns", hint="add numeric feature columns")
        for line, row in enumerate(rows, start=2):
            if len(row) != len(header):
                raise InputError(f"{source} line {line} has {len(row)} cells but the header has {len(header)}",
                                 hint="every row needs one value per column")
        ids = np.asarray([row[column[self.options["id_column"]]].strip() for row in rows])
        check_ids(ids, source=source)
        labels = np.asarray([self._label(row[column[self.options["label_column"]]], line, source)
                             for line, row in enumerate(rows, start=2)], dtype=np.int64)
        num_classes = check_labels(labels, source=source)
        features = np.stack([self._feature(rows, column[name], name, source) for name in feature_names], axis=1)
        if split_name:
            splits = check_splits(np.asarray([row[column[split_name]] for row in rows]),
                                  source=f"{source} column {split_name!r}")
        else:
            splits = check_splits(split_for(labels, self.options), source=f"the seeded split of {source}")
        if self.options["standardize"]:
            features = standardize(features, splits == "train")
        return sample_set(self.PLUGIN_NAME, ids, features, labels, splits, self.options, num_classes=num_classes)

    @staticmethod
    def _label(cell: str, line: int, source: str) -> int:
        text = cell.strip()
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value != int(value):
            raise InputError(f"{source} line {line}: label {text!r} is not an integer",
                             hint="labels must be class numbers 0, 1, …, C-1; map class names to numbers first")
        return int(value)

    @classmethod
    def _feature(cls, rows: list[list[str]], index: int, name: str, source: str) -> np.ndarray:
        """``[N]`` float64 values of one column; the slow cell-by-cell pass runs only to name a bad cell."""
        cells = [row[index] for row in rows]
        try:
            values = np.asarray(cells, dtype=np.float64)
            if np.isfinite(values).all():
                return values
        except ValueError:
            pass
        return np.asarray([cls._number(cell, name, line, source) for line, cell in enumerate(cells, start=2)])

    @staticmethod
    def _number(cell: str, name: str, line: int, source: str) -> float:
        text = cell.strip()
        if text.lower() in _MISSING:
            raise InputError(f"{source} line {line}: column {name!r} has a missing value",
                             hint="fill or drop rows with missing values before auditing")
        try:
            value = float(text)
        except ValueError:
            raise InputError(f"{source} line {line}: column {name!r} holds {text!r}, not a number",
                             hint="features must be numeric; encode or drop that column (features=…)") from None
        if not math.isfinite(value):
            raise InputError(f"{source} line {line}: column {name!r} holds {text!r}, not a finite number",
                             hint="replace infinite values before auditing")
        return value
