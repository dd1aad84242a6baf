"""The run record (record.json): what was forgotten, how, what the audit found, and the provenance.

The record is the source of truth: the HTML report is rendered from it alone, and the audit trail
stores its SHA-256. It is deterministic for the same inputs and seed apart from the UTC timestamps in
``provenance`` (and the host name), so two runs can be compared with a diff.
"""

from __future__ import annotations

import json
import math
import os
import platform
import socket
import sys
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from auditkit import __version__
from auditkit.errors import InputError
from auditkit.fsutil import atomic_write_text, sha256_file

RECORD_SCHEMA_VERSION = 2
RECORD_KINDS = ("forget", "audit")
#: Fields a record may lack: added after schema_version 1 was first written.
_OPTIONAL_FIELDS = ("trail",)


def utc_now() -> str:
    """The current UTC time as ``YYYY-MM-DDTHH:MM:SSZ``."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def to_json_value(value: Any) -> Any:
    """``value`` made strict-JSON safe: numpy scalars/arrays become Python values, tuples lists, and
    non-finite floats ``None`` (JSON has no NaN; the report shows ``None`` as a dash)."""
    if isinstance(value, dict):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_value(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_json_value(value.tolist())
    if isinstance(value, np.generic):
        return to_json_value(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


@dataclass
class RunRecord:
    """One run of ``auditkit forget`` or ``auditkit audit``.

    Attributes:
        kind: ``"forget"`` or ``"audit"``.
        summary: the headline (``outcome``: ``"passed"``/``"failed"``/``"inconclusive"``, or None when not
            audited, with ``outcome_reason``; ``passed``: True/False for passed/failed, None otherwise; the
            request, original and unlearned SHA-256; method; dataset), mirrored in the audit-trail line and
            ``--json``.
        request: the deletion request: ``sha256``, ``count``, ``file`` and ``ids`` (only with
            ``--include-ids``; the report never lists more than the most exposed ones).
        dataset: plugin name, options and split sizes.
        checkpoints: ``original`` (path, sha256, manifest) and ``unlearned`` (file, sha256) or, for
            ``auditkit audit``, the audited checkpoint (and the retrained model, if any).
        method: name, options, the settings it resolved and the op backend that ran (None for audits).
        history: per-epoch dicts from the method (epoch, tau, alpha, lr, forget_loss, retain_loss,
            forget_below_tau, test_accuracy, mia).
        audit: the :class:`auditkit.audit.results.AuditResult` as a dict (None with ``--no-audit``).
        provenance: versions, plugins, seed, config hash, host, UTC start/end, input hashes.
        outputs: SHA-256 of every file the run wrote beside the record (``model.pt``, ``report.html``).
        trail: the audit trail that logged the run: ``{"id", "index", "file"}`` (the trail's ID, the
            0-based line, and the trail's path relative to the run folder), written under the trail's
            lock; None in records written before trails had IDs.
    """

    kind: str
    summary: dict[str, Any]
    request: dict[str, Any]
    dataset: dict[str, Any]
    checkpoints: dict[str, Any]
    method: dict[str, Any] | None
    history: list[dict[str, Any]]
    audit: dict[str, Any] | None
    provenance: dict[str, Any]
    outputs: dict[str, str] = field(default_factory=dict)
    schema_version: int = RECORD_SCHEMA_VERSION
    trail: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return to_json_value(asdict(self))

    def to_json(self) -> str:
        """Pretty, key-sorted, strict JSON (the bytes whose SHA-256 the audit trail stores)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write the record atomically."""
        atomic_write_text(path, self.to_json())

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "record") -> RunRecord:
        """Validate a parsed record; a wrong shape is an :class:`InputError` naming what is wrong."""
        hint = "pass the record.json written by `auditkit forget` or `auditkit audit`"
        if not isinstance(data, dict):
            raise InputError(f"{source} is not a JSON object", hint=hint)
        version = data.get("schema_version")
        if version != RECORD_SCHEMA_VERSION:
            raise InputError(f"{source} has schema_version {version!r}; this auditkit reads {RECORD_SCHEMA_VERSION}",
                             hint="render it with the auditkit version that wrote it (see provenance.auditkit)")
        names = [f.name for f in fields(cls)]
        missing = [name for name in names if name not in data and name not in _OPTIONAL_FIELDS]
        if missing:
            raise InputError(f"{source} lacks the fields {', '.join(missing)}", hint=hint)
        if data["kind"] not in RECORD_KINDS:
            raise InputError(f"{source} has an unknown kind {data['kind']!r}", hint=hint)
        return cls(**{name: data[name] for name in names if name in data})

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> RunRecord:
        """Read and validate ``record.json``."""
        file = Path(path)
        try:
            text = file.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise InputError(f"record {str(file)!r} does not exist",
                             hint="pass the record.json inside a run folder (runs/<time>/record.json)") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read record {str(file)!r}: {exc}", hint="pass a record.json file") from None
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise InputError(f"record {str(file)!r} is not valid JSON ({exc})",
                             hint="pass the record.json written by auditkit, unmodified") from None
        return cls.from_dict(data, source=f"record {str(file)!r}")


def _distribution_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def collect_provenance(
    *,
    seed: int,
    backend: str | None,
    plugins: list[dict[str, str]],
    config_sha256: str | None,
    inputs: dict[str, str],
    started: str,
    finished: str,
    processes: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The provenance block of a record.

    Args:
        seed: the run's seed.
        backend: the op backend that actually ran (``"cpu"``, ``"cuda"``, ``"reference"``), or None.
        plugins: one ``{"kind", "name", "source", "version"}`` per plugin the run used.
        config_sha256: SHA-256 of the auditkit.toml used, or None.
        inputs: SHA-256 of every input file, keyed by role (``checkpoint``, ``request``, ``plugin:<path>``).
        started, finished: UTC times from :func:`utc_now`.
        processes: how many processes shared the run (:func:`auditkit.distributed.describe`); default one.
    """
    import torch  # local: keeps `import auditkit.evidence.record` light for `auditkit verify`

    return {
        "auditkit": __version__,
        "python": platform.python_version(),
        "python_implementation": sys.implementation.name,
        "platform": platform.platform(terse=True),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scikit_learn": _distribution_version("scikit-learn"),
        "cuda": torch.version.cuda,
        "torch_threads": torch.get_num_threads(),
        "op_backend": backend,
        "plugins": sorted(plugins, key=lambda p: (p["kind"], p["name"])),
        "seed": seed,
        "config_sha256": config_sha256,
        "host": socket.gethostname(),
        "started_utc": started,
        "finished_utc": finished,
        "inputs": dict(sorted(inputs.items())),
        "processes": processes or {"world_size": 1, "local_world_size": 1, "nodes": 1, "backend": None},
    }


@dataclass
class RecordCheck:
    """Result of :func:`verify_record_files`: every output file's expected and found SHA-256."""

    path: str
    problems: list[str]
    checked: dict[str, str]

    @property
    def ok(self) -> bool:
        return not self.problems


#: The files every run writes beside its record, by kind: a record that drops one from ``outputs``
#: would otherwise verify as intact.
RECORD_OUTPUTS = {"forget": ("model.pt", "report.html"), "audit": ("report.html",)}


def verify_record_files(path: str | os.PathLike[str]) -> RecordCheck:
    """Check that every file listed in the record's ``outputs`` exists beside it with that SHA-256,
    and that the outputs its kind always writes (:data:`RECORD_OUTPUTS`) are listed."""
    record = RunRecord.load(path)
    folder = Path(path).parent
    problems = [f"the record lists no SHA-256 for {name}" for name in RECORD_OUTPUTS[record.kind]
                if name not in record.outputs]
    checked: dict[str, str] = {}
    for name, expected in sorted(record.outputs.items()):
        if Path(name).name != name or name in (".", ".."):  # a path could make verify read any file
            problems.append(f"output {name!r} is not a file name beside the record")
            continue
        file = folder / name
        if not file.is_file():
            problems.append(f"{name} is missing from {folder}")
            continue
        found = sha256_file(file)
        checked[name] = found
        if found != expected:
            problems.append(f"{name} has SHA-256 {found[:16]}…, the record says {expected[:16]}…")
    return RecordCheck(path=str(path), problems=problems, checked=checked)
