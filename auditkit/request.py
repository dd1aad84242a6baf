"""The deletion request: which sample IDs to forget, parsed from a CSV file and checked against the data.

Format: UTF-8 (with or without a BOM), one ID per row, either in a column named ``id`` (or the column
given as ``id_column``) of a CSV with a header line, or as the only column of a file without a header.
Surrounding whitespace is trimmed and blank lines are ignored. Duplicate IDs are not an error: a
request that names a sample twice still means "forget it", so duplicates are dropped (first occurrence
kept) and reported as a warning. The file is read as a stream, so a request of many megabytes costs
only the memory of its distinct IDs; a line longer than :data:`MAX_LINE` characters (a file with no line
breaks, a binary file) is refused as soon as that much has been read, and a cell longer than the csv
module's field limit (131,072 characters) likewise.

The request must be a regular file: it is evidence, hashed into the record and re-readable by an auditor,
so ``-`` (standard input), a named pipe and a device such as ``/dev/zero`` are refused (never opened or
read, so nothing hangs).

Nothing is modified before a request has passed :func:`resolve_request`.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from auditkit.data import SampleSet
from auditkit.errors import InputError
from auditkit.fsutil import not_a_file_error, open_regular_file
from auditkit.lookalikes import likely_intended
from auditkit.messages import bare, shown

_CHUNK = 1 << 20
_SHOWN = 10
_LIST_BUDGET = 150  # characters of IDs in one message; the rest is counted
MAX_LINE = 1 << 20
"""The longest line (in characters) a request may hold; a 100 kB ID fits, a 2 GB file without line breaks does not."""
IDS_COMMAND = "auditkit ids --split train"
"""How the CLI lists the training IDs a request may name (the hints point there)."""


@dataclass(frozen=True)
class ForgetRequest:
    """A parsed deletion request.

    Attributes:
        ids: the distinct requested IDs in file order (kept out of reports unless asked for).
        sha256: hex SHA-256 of the file's bytes, recorded in every run and report.
        path: the file it came from.
        id_column: the column the IDs were read from (``None`` for a single column without header).
        duplicates_dropped: how many rows repeated an earlier ID and were dropped.
        duplicate_examples: up to 10 of the repeated IDs, for the warning.
    """

    ids: tuple[str, ...]
    sha256: str
    path: Path
    id_column: str | None
    duplicates_dropped: int = 0
    duplicate_examples: tuple[str, ...] = ()

    @property
    def count(self) -> int:
        """Number of distinct IDs requested."""
        return len(self.ids)

    def warnings(self) -> list[str]:
        """Human-readable notes about the request that did not stop it (the CLI prints them)."""
        if not self.duplicates_dropped:
            return []
        return [f"{self.duplicates_dropped} duplicate row(s) in {shown(self.path)} were ignored "
                f"(e.g. {_list(list(self.duplicate_examples))}); each ID is forgotten once"]


def _list(ids: list[str]) -> str:
    """Up to ten IDs (as many as fit in ~150 characters) and how many more there are, for one-line messages.

    An ID with a line break or control character (a quoted CSV cell can hold any) is shown as a Python
    literal, so it cannot split the error line or send escape codes to the terminal; a long one is elided
    with its length.
    """
    parts: list[str] = []
    for sample_id in ids[:_SHOWN]:
        part = bare(sample_id, limit=40)
        if parts and sum(map(len, parts)) + len(part) > _LIST_BUDGET:
            break
        parts.append(part)
    rest = len(ids) - len(parts)
    return ", ".join(parts) + (f", … ({rest} more)" if rest else "")


class _HashingReader(io.RawIOBase):
    """A binary stream that feeds every byte it reads into a SHA-256 digest (one pass over the file)."""

    def __init__(self, handle: BinaryIO, digest: hashlib._Hash) -> None:
        self._handle = handle
        self._digest = digest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = self._handle.readinto(buffer)
        self._digest.update(memoryview(buffer)[:count])
        return count


def check_request_file(path: str | Path, *, role: str = "request file") -> None:
    """Refuse, without opening it, a request path that is ``-``, missing, a folder, a pipe or a device."""
    if str(path) == "-":
        # Standard input cannot be hashed again by an auditor, nor named in the record.
        alternative = "; to read a file named '-', pass ./-" if Path("-").is_file() else ""
        raise InputError("--ids - (standard input) is not supported: the request is evidence, hashed into the "
                         "record, so it must be a file", hint=f"save the IDs to a file first, e.g. `{IDS_COMMAND} > "
                         f"request.csv`, and pass --ids request.csv{alternative}")
    error = not_a_file_error(path, role=role, hint="pass a CSV of sample IDs with --ids")
    if error is not None:
        raise error


def parse_request(path: str | Path, *, id_column: str | None = None) -> ForgetRequest:
    """Read a deletion request CSV; raises :class:`InputError` with a fix for every malformed file."""
    file = Path(path)
    name = str(file)
    check_request_file(file, role="deletion request")
    digest = hashlib.sha256()
    with open_regular_file(file, role="deletion request", hint="pass a CSV of sample IDs with --ids") as raw:
        # utf-8-sig drops a leading BOM, which spreadsheet programs like to write.
        text = io.TextIOWrapper(io.BufferedReader(_HashingReader(raw, digest), _CHUNK), encoding="utf-8-sig",
                                newline="")
        ids, column, header_seen, duplicates, examples = _read_ids(
            csv.reader(_bounded_lines(text, name), strict=True), id_column, name)
    if not ids:
        what = "has a header but no IDs" if header_seen else "is empty"
        raise InputError(f"deletion request {shown(name)} {what}", hint="list one sample ID per line")
    return ForgetRequest(ids=tuple(ids), sha256=digest.hexdigest(), path=file, id_column=column,
                         duplicates_dropped=duplicates, duplicate_examples=tuple(examples))


def _bounded_lines(text: io.TextIOBase, name: str) -> Iterator[str]:
    """The lines of ``text``, refusing one longer than :data:`MAX_LINE` after reading only that much.

    Iterating the stream directly would read a line of any length whole (a 2 GB file without line
    breaks took 4.5 GB and a minute before it could be refused).
    """
    number = 0
    while line := text.readline(MAX_LINE + 1):
        number += 1
        if len(line) > MAX_LINE and not line.endswith(("\n", "\r")):
            raise InputError(f"deletion request {shown(name)} line {number} is longer than {MAX_LINE:,} characters "
                             "(no line break found)", hint="a request lists one sample ID per line; check that this "
                                                           "is the right file")
        yield line


def _read_ids(rows, id_column: str | None, name: str) -> tuple[dict[str, None], str | None, bool, int, list[str]]:
    """Distinct IDs in order, the ID column, whether a header was read, and the duplicates seen."""
    index: int | None = None
    column: str | None = None
    header_seen = False
    seen: dict[str, None] = {}
    duplicates = 0
    duplicate_examples: list[str] = []
    try:
        for row in rows:
            cells = [cell.strip() for cell in row]
            if not any(cells):
                continue
            if index is None:
                index, column, header_seen = _locate_column(cells, id_column, name)
                if header_seen:
                    continue
            if index >= len(cells) or not cells[index]:
                raise InputError(f"deletion request {shown(name)} line {rows.line_num} has no ID",
                                 hint=f"fill in the {column or 'ID'} column or delete the line")
            sample_id = cells[index]
            if sample_id in seen:
                duplicates += 1
                if len(duplicate_examples) < _SHOWN and sample_id not in duplicate_examples:
                    duplicate_examples.append(sample_id)
                continue
            seen[sample_id] = None
    except UnicodeDecodeError:
        raise InputError(f"deletion request {shown(name)} is not UTF-8 text (line {_first_undecodable_line(name)})",
                         hint="save it as UTF-8, e.g. 'CSV UTF-8' in a spreadsheet program") from None
    except csv.Error as exc:
        if "field limit" in str(exc):
            raise InputError(f"deletion request {shown(name)} line {rows.line_num} holds a value longer than "
                             f"{csv.field_size_limit():,} characters", hint="a request lists sample IDs; check that "
                                                                           "this is the right file") from None
        raise InputError(f"deletion request {shown(name)} is not valid CSV near line {rows.line_num}: {exc}",
                         hint="check the quoting on that line") from None
    return seen, column, header_seen, duplicates, duplicate_examples


def _first_undecodable_line(path: str) -> int:
    """The 1-based line holding the first byte that is not UTF-8 (a second pass, only on error)."""
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return 0


def _locate_column(cells: list[str], id_column: str | None, name: str) -> tuple[int, str | None, bool]:
    """From the first non-blank row: the ID column's index, its name, and whether the row is a header."""
    found = ", ".join(shown(c, limit=30) for c in cells[:5]) + (f", … ({len(cells) - 5} more)" if len(cells) > 5 else "")
    if id_column is not None:
        if id_column not in cells:
            raise InputError(f"deletion request {shown(name)} has no column {shown(id_column)}; columns found: {found}",
                             hint="pass the header's name of the ID column to --id-column")
        return cells.index(id_column), id_column, True
    lowered = [c.lower() for c in cells]
    if "id" in lowered:
        position = lowered.index("id")
        return position, cells[position], True
    if len(cells) == 1:
        return 0, None, False
    raise InputError(f"deletion request {shown(name)} has no 'id' column; columns found: {found}",
                     hint="name the column 'id' or pass --id-column NAME")


def resolve_request(
    request: ForgetRequest, data: SampleSet, *, min_retain: int = 2, min_validation: int = 2,
    ids_command: str = IDS_COMMAND,
) -> np.ndarray:
    """Check a request against the data; returns the sorted ``[k]`` int64 positions of the forget set.

    Refuses IDs the dataset does not know (naming the dataset ID an unknown one was likely meant to be
    when they differ only by Unicode normalization or look-alike characters), IDs outside the training
    split (never learned, so there is nothing to forget), a request covering the whole training set, and
    requests that leave fewer than ``min_retain`` training samples or a validation split smaller than
    ``min_validation`` (∇τ takes τ from the validation loss). ``ids_command`` is the command the hints
    name for listing the training IDs.
    """
    lookup = data.position_of()
    name = str(request.path)
    unknown = [i for i in request.ids if i not in lookup]
    if unknown:
        hint = (f"check that the request is for this dataset and its options (IDs are case-sensitive; "
                f"`{ids_command}` lists the IDs that can be forgotten)")
        if request.id_column is None and unknown == [request.ids[0]]:
            hint = f"the first line {shown(request.ids[0])} looks like a header: name the column 'id' or pass --id-column"
        lookalike = likely_intended(unknown, lookup)
        if lookalike:
            hint = lookalike
        verb = "is" if len(unknown) == 1 else "are"
        raise InputError(f"{len(unknown)} of the {request.count} IDs in {shown(name)} {verb} not in dataset "
                         f"{shown(data.name)}: {_list(unknown)}", hint=hint)
    positions = np.sort(np.fromiter((lookup[i] for i in request.ids), dtype=np.int64, count=request.count))
    splits = data.splits[positions]
    held_out = positions[splits != "train"]
    if len(held_out):
        ids = data.ids[held_out].tolist()
        which = "/".join(sorted(set(data.splits[held_out].tolist()), key=["validation", "test", "unused"].index))
        raise InputError(f"{len(ids)} ID(s) in {shown(name)} are in the {which} split and were never learned: "
                         f"{_list(ids)}", hint=f"remove them from the request; only training samples can be forgotten "
                                              f"(`{ids_command}` lists them)")
    train_count = len(data.indices("train"))
    left = train_count - len(positions)
    if left == 0:
        raise InputError(f"{shown(name)} asks to forget all {train_count} training samples; nothing would remain",
                         hint="retrain from scratch instead, or request fewer IDs")
    if left < min_retain:
        raise InputError(f"forgetting {len(positions)} of {train_count} training samples leaves only {left}, "
                         f"fewer than the {min_retain} needed", hint="request fewer IDs or retrain from scratch")
    validation = len(data.indices("validation"))
    if validation < min_validation:
        raise InputError(f"dataset {shown(data.name)} has {validation} validation samples; at least {min_validation} "
                         "are needed to compute τ", hint="give the dataset a larger validation split")
    return positions
