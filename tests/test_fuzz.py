"""Fuzzing: the request parser and the csv dataset plugin fail only with auditkit's own errors.

Whatever bytes or text they are given (random bytes, and CSV-shaped text built from cells that are
numbers, blanks, quotes, NaN spellings and odd Unicode), they either return a well-formed result or
raise an :class:`~auditkit.errors.AuditkitError` with a one-line message and a hint, which the CLI
turns into exit code 2. Anything else would be a traceback in front of the user.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from auditkit.errors import AuditkitError
from auditkit.fsutil import sha256_file
from auditkit.request import parse_request, resolve_request
from auditkit_plugins.datasets.csv_data import CsvDataset
from auditkit_plugins.datasets.sklearn_data import DigitsDataset

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

CELLS = st.one_of(
    st.integers(-3, 12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", " ", "NA", "nan", "None", "null", '"', '""', "1e309", "-0", "0x10", "١", "½", "\ufeff",
                     "digits-0001", "digits-0042", "digits-1796", "id", "label", "train", "validation", "test",
                     "TEST ", "split", "\u00a0", "é"]),
    st.text(max_size=8),
)


def _csv(rows: list[list[str]], separator: str, newline: str, bom: bool) -> bytes:
    quoted = [[f'"{c}"' if ("," in c or "\n" in c) and not c.startswith('"') else c for c in row] for row in rows]
    text = newline.join(separator.join(row) for row in quoted)
    return (("\ufeff" if bom else "") + text).encode("utf-8", errors="surrogatepass")


TABLES = st.builds(
    _csv,
    st.lists(st.lists(CELLS, min_size=1, max_size=5), max_size=12),
    st.sampled_from([",", ";", ", ", "\t"]),
    st.sampled_from(["\n", "\r\n", "\r", "\n\n"]),
    st.booleans(),
)
INPUTS = st.one_of(st.binary(max_size=600), TABLES)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def digits():
    return DigitsDataset().load()


def _write(folder, data: bytes):
    path = folder / "input.csv"
    path.write_bytes(data)
    return path


def _expected(exc: AuditkitError) -> None:
    event(f"refused: {exc.hint[:50]}")
    # One printable line each: no line break or control character from the input reaches the terminal.
    assert exc.message.isprintable() and exc.hint and exc.hint.isprintable(), repr(exc)


@FUZZ
@given(data=INPUTS, id_column=st.one_of(st.none(), st.sampled_from(["id", "sample", ""]), st.text(max_size=4)))
def test_request_parser_accepts_or_explains(scratch, digits, data, id_column):
    path = _write(scratch, data)
    try:
        request = parse_request(path, id_column=id_column)
    except AuditkitError as exc:
        _expected(exc)
        return
    assert request.ids and len(set(request.ids)) == len(request.ids)
    assert all(i == i.strip() and i for i in request.ids)
    assert request.sha256 == sha256_file(path)
    try:
        positions = resolve_request(request, digits)
    except AuditkitError as exc:
        _expected(exc)
        return
    assert len(positions) == request.count and (digits.splits[positions] == "train").all()
    event("request resolved")


@FUZZ
@given(data=INPUTS, options=st.fixed_dictionaries({}, optional={
    "id_column": st.sampled_from(["id", "sample", ""]), "label_column": st.sampled_from(["label", "id", "x"]),
    "split_column": st.sampled_from(["split", "label", ""]), "features": st.sampled_from(["", "f1", "f1,,id", "x"]),
    "standardize": st.booleans(), "train_fraction": st.sampled_from([0.0, 0.5, 0.9, 1.0, 1.5]),
}))
def test_csv_dataset_loads_or_explains(scratch, data, options):
    path = _write(scratch, data)
    try:
        samples = CsvDataset(path=str(path), **options).load()
    except AuditkitError as exc:
        _expected(exc)
        return
    n = len(samples.ids)
    assert n == samples.features.shape[0] == len(samples.labels) == len(samples.splits) and n > 0
    assert len(set(samples.ids.tolist())) == n
    assert np.isfinite(samples.features.numpy()).all()
    labels = samples.labels.numpy()
    assert labels.min() >= 0 and labels.max() < samples.num_classes and len(np.unique(labels)) >= 2
    assert set(samples.splits.tolist()) == {"train", "validation", "test"}
    event("table loaded")


@FUZZ
@given(rows=st.lists(st.tuples(st.text(min_size=1, max_size=6), st.integers(0, 3),
                               st.floats(allow_nan=False, allow_infinity=False, width=32)),
                     min_size=1, max_size=40))
def test_well_formed_tables_load_every_row(scratch, rows):
    """The other side: a clean table (unique IDs, integer labels, finite numbers) keeps every row as written."""
    seen, body = set(), []
    for sample_id, label, value in rows:
        sample_id = "".join(c for c in sample_id if c.isalnum()) or "x"
        if sample_id in seen:
            continue
        seen.add(sample_id)
        body.append(f"{sample_id},{label},{value!r}")
    path = _write(scratch, ("id,label,f1\n" + "\n".join(body) + "\n").encode("utf-8"))
    try:
        samples = CsvDataset(path=str(path), standardize=False).load()
    except AuditkitError as exc:  # too few rows or classes for three splits: refused, with a reason
        _expected(exc)
        return
    assert samples.ids.tolist() == [line.split(",")[0] for line in body]
    assert all(math.isclose(float(line.split(",")[2]), x, rel_tol=1e-6, abs_tol=1e-30)
               for line, x in zip(body, samples.features[:, 0].tolist()))
