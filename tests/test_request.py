"""Deletion requests: CSV parsing rules, the file hash, and every refusal against the dataset."""

from __future__ import annotations

import csv
import hashlib
import io
import os
import tempfile
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditkit.data import SampleSet
from auditkit.errors import InputError
from auditkit.registry import Registry
from auditkit.request import parse_request, resolve_request

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "request.csv"


@pytest.fixture(scope="module")
def digits() -> SampleSet:
    return Registry.default().create("datasets", "digits").load()


def write(tmp_path, data: bytes | str, name: str = "request.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def train_ids(data: SampleSet, count: int) -> list[str]:
    return data.ids[data.indices("train")][:count].tolist()


def test_id_column_with_bom_whitespace_blank_lines_and_crlf(tmp_path):
    raw = "\ufeffname,id\r\nA, digits-0001 \r\n\r\n  ,  \r\nB,digits-0002\r\n".encode("utf-8")
    request = parse_request(write(tmp_path, raw))
    assert request.ids == ("digits-0001", "digits-0002") and request.count == 2
    assert request.id_column == "id" and request.sha256 == hashlib.sha256(raw).hexdigest()
    assert request.warnings() == []


def test_single_column_without_header_and_a_named_column(tmp_path):
    assert parse_request(write(tmp_path, "digits-0005\ndigits-0006")).ids == ("digits-0005", "digits-0006")
    request = parse_request(write(tmp_path, "sample,other\ndigits-0007,x\n"), id_column="sample")
    assert request.ids == ("digits-0007",) and request.id_column == "sample"
    assert parse_request(write(tmp_path, "ID\ndigits-0008\n")).ids == ("digits-0008",)


def test_duplicates_are_dropped_with_a_warning(tmp_path):
    request = parse_request(write(tmp_path, "id\na\nb\na\na\nc\nb\n"))
    assert request.ids == ("a", "b", "c") and request.duplicates_dropped == 3
    assert request.duplicate_examples == ("a", "b")
    assert "3 duplicate row(s)" in request.warnings()[0]


@pytest.mark.parametrize(
    ("data", "options", "message"),
    [
        (b"", {}, "is empty"),
        (b"\n \n\n", {}, "is empty"),
        (b"\xef\xbb\xbf", {}, "is empty"),
        (b"id\n", {}, "has a header but no IDs"),
        (b"name,label\nx,1\n", {}, "no 'id' column; columns found: 'name', 'label'"),
        (b"id,name\n,x\n", {}, "line 2 has no ID"),
        (b"id\ndigits-0001\ncaf\xe9\n", {}, "is not UTF-8 text (line 3)"),
        (b"id\n\"unclosed\n", {}, "not valid CSV"),
        (b"sample\nx\n", {"id_column": "sample_id"}, "no column 'sample_id'; columns found: 'sample'"),
    ],
)
def test_malformed_requests_are_one_line_errors(tmp_path, data, options, message):
    with pytest.raises(InputError) as caught:
        parse_request(write(tmp_path, data), **options)
    assert message in caught.value.message and caught.value.hint and "\n" not in caught.value.message


# Any text but line breaks (csv.writer leaves a bare \r unquoted, which every reader takes as a line end).
clean_ids = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r\n"), min_size=1,
                    max_size=12).filter(lambda s: s.strip() == s and s)


@settings(max_examples=60, deadline=None)
@given(ids=st.lists(clean_ids, min_size=1, max_size=20), bom=st.booleans(), crlf=st.booleans())
def test_any_ids_written_by_a_csv_writer_come_back_in_order_without_duplicates(ids, bom, crlf):
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\r\n" if crlf else "\n")
    writer.writerow(["id", "note"])
    writer.writerows([sample_id, "x"] for sample_id in ids)
    data = (b"\xef\xbb\xbf" if bom else b"") + text.getvalue().encode("utf-8")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "request.csv"
        path.write_bytes(data)
        request = parse_request(path)
    assert request.ids == tuple(dict.fromkeys(ids))
    assert request.duplicates_dropped == len(ids) - len(set(ids))
    assert request.sha256 == hashlib.sha256(data).hexdigest()


def test_missing_file_folder_pipe_device_and_stdin(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        parse_request(tmp_path / "nope.csv")
    with pytest.raises(InputError, match="is a folder"):
        parse_request(tmp_path)
    os.mkfifo(tmp_path / "fifo")  # opening it for reading would block until a writer came
    with pytest.raises(InputError, match=r"is a named pipe \(FIFO\), not a file"):
        parse_request(tmp_path / "fifo")
    with pytest.raises(InputError, match="is a character device, not a file"):
        parse_request("/dev/zero")
    with pytest.raises(InputError, match=r"standard input\) is not supported"):
        parse_request("-")


def test_resolve_returns_sorted_training_positions(tmp_path, digits):
    wanted = train_ids(digits, 5)[::-1]
    positions = resolve_request(parse_request(write(tmp_path, "id\n" + "\n".join(wanted))), digits)
    assert positions.dtype == np.int64 and (np.diff(positions) > 0).all()
    assert sorted(digits.ids[positions].tolist()) == sorted(wanted)


def test_unknown_ids_show_ten_and_the_count(tmp_path, digits):
    ids = train_ids(digits, 2) + [f"nope-{i}" for i in range(12)]
    with pytest.raises(InputError) as caught:
        resolve_request(parse_request(write(tmp_path, "id\n" + "\n".join(ids))), digits)
    message = caught.value.message
    assert message.startswith("12 of the 14 IDs in") and "nope-9" in message and "nope-10" not in message
    assert "(2 more)" in message


def test_a_header_mistaken_for_an_id_gets_a_hint(tmp_path, digits):
    request = parse_request(write(tmp_path, "sample_id\n" + "\n".join(train_ids(digits, 3))))
    with pytest.raises(InputError) as caught:
        resolve_request(request, digits)
    assert "looks like a header" in caught.value.hint


def test_validation_and_test_ids_were_never_learned(tmp_path, digits):
    held_out = [digits.ids[digits.indices("test")[0]], digits.ids[digits.indices("validation")[0]]]
    request = parse_request(write(tmp_path, "id\n" + "\n".join(train_ids(digits, 1) + held_out)))
    with pytest.raises(InputError, match=r"2 ID\(s\) in .* are in the validation/test split and were never learned"):
        resolve_request(request, digits)


def test_whole_training_set_and_too_little_left(tmp_path, digits):
    everything = write(tmp_path, "id\n" + "\n".join(train_ids(digits, 179)))
    with pytest.raises(InputError, match="all 179 training samples"):
        resolve_request(parse_request(everything), digits)
    almost = write(tmp_path, "id\n" + "\n".join(train_ids(digits, 170)))
    with pytest.raises(InputError, match="leaves only 9, fewer than the 20 needed"):
        resolve_request(parse_request(almost), digits, min_retain=20)
    few = write(tmp_path, "id\n" + "\n".join(train_ids(digits, 3)))
    with pytest.raises(InputError, match="359 validation samples; at least 400"):
        resolve_request(parse_request(few), digits, min_validation=400)


def test_a_50_mb_request_is_streamed(tmp_path, digits):
    """50,000 rows with a long note column: parsed with far less memory than the file's size."""
    note = "x" * 990
    rows = "".join(f"{i},{note}\n" for i in digits.ids[digits.indices("train")].tolist()).encode()
    path = tmp_path / "big.csv"
    with open(path, "wb") as handle:
        handle.write(b"id,note\n")
        for _ in range(50_000_000 // len(rows)):
            handle.write(rows)
    assert path.stat().st_size > 49_000_000
    tracemalloc.start()
    try:
        request = parse_request(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10_000_000, f"parsing a 50 MB request peaked at {peak / 1e6:.0f} MB"
    assert request.count == 179 and request.duplicates_dropped > 49_000
    with pytest.raises(InputError, match="all 179 training samples"):
        resolve_request(request, digits)


def test_the_bundled_example_request_resolves_against_the_default_digits(digits):
    request = parse_request(EXAMPLE)
    positions = resolve_request(request, digits)
    assert request.count == len(positions) == 27  # 15 % of the 179 default training images
    assert request.duplicates_dropped == 0
