"""The bad-input matrix: every malformed request, checkpoint, dataset, output folder, name and option
combination, through the real CLI (in-process ``run_cli``, the console script's exit-code mapping).

Every failing case must give the documented exit code (2 bad input or usage, 3 runtime or plugin
error), exactly one ``error:`` line naming the problem and one ``hint:`` line naming the fix, no
traceback, and leave the workspace byte-identical: no input changed, no output folder, trail, lock or
temporary file left. A few inputs look odd but are valid (a BOM, blank lines, duplicate IDs): those
must succeed and do what ``auditkit.request`` documents.
"""

from __future__ import annotations

import json
import os
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from auditkit.fsutil import sha256_file
from reliability_helpers import (
    FORGET,
    REQUEST_SIZE,
    assert_clean_failure,
    digits_ids,
    fresh_workspace,
    run_cli_here,
    snapshot,
)

RUN = [*FORGET, "--out", "runs/new"]
# Without fast.toml, whose [method] table would say how the audited checkpoint was unlearned.
AUDIT = ["audit", "--ids", "request.csv", "--checkpoint", "model.pt", "--original", "model.pt", "--out", "runs/new"]
MARKER = "pwned.txt"


@dataclass
class Case:
    """One row of the matrix: files to create, the command, and what must come out."""

    name: str
    args: list[str]
    code: int | None = 2  # None: 0 or 1, whichever the audit decides
    problem: str = ""
    hint: str = ""
    setup: Callable[[Path], None] = lambda _: None
    check: Callable[[Path, object], None] | None = None  # valid inputs: what the run must have done
    marks: list = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


def _write(name: str, data: str | bytes) -> Callable[[Path], None]:
    def setup(ws: Path) -> None:
        (ws / name).parent.mkdir(parents=True, exist_ok=True)
        (ws / name).write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return setup


def _requested(ws: Path) -> list[str]:
    return (ws / "request.csv").read_text(encoding="utf-8").split()[1:]


def _request_variant(transform: Callable[[list[str]], str | bytes]) -> Callable[[Path], None]:
    """Rewrite request.csv from the 20 training IDs it holds."""
    def setup(ws: Path) -> None:
        data = transform(_requested(ws))
        (ws / "request.csv").write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return setup


# ---------------------------------------------------------------- checkpoints


def _payload(ws: Path) -> dict:
    return torch.load(ws / "model.pt", map_location="cpu", weights_only=True)


def _truncated(ws: Path) -> None:
    data = (ws / "model.pt").read_bytes()
    (ws / "bad.pt").write_bytes(data[: len(data) // 2])


def _bare_state_dict(ws: Path) -> None:
    torch.save(_payload(ws)["state_dict"], ws / "bad.pt")


class _CreatesMarker:
    """Unpickling this calls open(MARKER, "w"): code execution, if the loader allowed it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _pickled_code(protocol: int) -> Callable[[Path], None]:
    """A real checkpoint with one object whose unpickling would run code (torch.save's protocol is 2)."""
    def setup(ws: Path) -> None:
        payload = _payload(ws)
        payload["manifest"]["note"] = _CreatesMarker(str(ws / MARKER))
        torch.save(payload, ws / "bad.pt", pickle_protocol=protocol)
        assert not (ws / MARKER).exists()
    return setup


def _other_architecture(ws: Path) -> None:
    from auditkit_plugins.models.mlp import MlpModel

    payload = _payload(ws)
    narrow = MlpModel(widths=(32,)).build(input_shape=(64,), num_classes=10)
    payload["state_dict"] = narrow.state_dict()  # the manifest still says widths=[256]
    torch.save(payload, ws / "bad.pt")


def _other_dataset(ws: Path) -> None:
    result = run_cli_here(["-q", "train", "--dataset", "breast-cancer", "--epochs", "1", "--out", "bc.pt"], cwd=ws)
    assert result.code == 0, result.err


def _retrained_on_the_retain_set(ws: Path) -> None:
    """A checkpoint whose manifest says it was trained on exactly train minus the request (as one retrained
    elsewhere would say); the weights are the original's, which the run only uses as a reference."""
    from auditkit.checkpoint import ids_sha256

    payload = _payload(ws)
    retain = sorted(set(digits_ids("train")) - set(_requested(ws)))
    payload["manifest"].update(train_ids_sha256=ids_sha256(retain), train_count=len(retain))
    torch.save(payload, ws / "retrained.pt")


def _with_reference(ws: Path, result) -> None:
    record = json.loads((ws / "runs" / "new" / "record.json").read_text(encoding="utf-8"))
    assert record["checkpoints"]["retrained"]["sha256"] == sha256_file(ws / "retrained.pt")
    assert {a["model"] for a in record["audit"]["attacks"]} == {"original", "unlearned", "retrained"}


def _other_split(ws: Path) -> None:
    result = run_cli_here(["-q", "train", "--dataset-option", "split_seed=3", "--epochs", "1", "--out", "split3.pt"],
                          cwd=ws)
    assert result.code == 0, result.err


# ---------------------------------------------------------------- csv datasets

CSV_TRAIN = ["train", "--dataset", "csv", "--dataset-option", "path=data.csv", "--epochs", "1", "--out", "csv.pt"]


def _table(cell: Callable[[int], str] = lambda i: f"{i % 7 * 0.5}", label: Callable[[int], int] = lambda i: i % 2
           ) -> str:
    rows = [f"row-{i},{label(i)},{cell(i)},{i * 0.1:.1f}" for i in range(60)]
    return "id,label,f1,f2\n" + "\n".join(rows) + "\n"


# ---------------------------------------------------------------- valid but unusual requests


def _succeeded_with(count: int, duplicates: int = 0) -> Callable[[Path, object], None]:
    def check(ws: Path, result) -> None:
        record = json.loads((ws / "runs" / "new" / "record.json").read_text(encoding="utf-8"))
        request = record["request"]
        assert request["count"] == count and request["duplicates_dropped"] == duplicates
        assert request["sha256"] == sha256_file(ws / "request.csv")  # the file as given, BOM and all
        warnings = result.lines("warning: ")
        if duplicates:  # request.py: duplicates are dropped and reported as a warning
            assert len(warnings) == 1 and f"{duplicates} duplicate row(s)" in warnings[0], result.err
        else:
            assert not warnings, result.err
    return check


def _fifty_megabytes(ws: Path) -> None:
    line_count = 50 * 2**20 // 16
    ids = np.char.add("unknown-", np.char.zfill(np.arange(line_count).astype(str), 7))
    (ws / "request.csv").write_text("id\n" + "\n".join(ids.tolist()) + "\n", encoding="utf-8")
    assert (ws / "request.csv").stat().st_size >= 50 * 2**20


def _record(ws: Path) -> None:
    from test_record import sample_record  # a complete record, as test_record.py builds it

    sample_record().write(ws / "record.json")


def _broken_plugin(ws: Path) -> None:
    (ws / "broken.py").write_text("import numpy\nraise RuntimeError('half-finished plugin')\n", encoding="utf-8")


def _previous_run_holding_the_checkpoint(ws: Path) -> None:
    (ws / "runs" / "old").mkdir(parents=True)
    (ws / "runs" / "old" / "model.pt").write_bytes((ws / "model.pt").read_bytes())


def _fifo(name: str) -> Callable[[Path], None]:
    return lambda ws: os.mkfifo(ws / name)


def _manifest(**fields) -> Callable[[Path], None]:
    """The shared checkpoint with manifest fields replaced (as a hand edit or other software might)."""
    def setup(ws: Path) -> None:
        payload = _payload(ws)
        payload["manifest"].update(fields)
        torch.save(payload, ws / "bad.pt")
    return setup


def _weight(value: float) -> Callable[[Path], None]:
    """The shared checkpoint with one weight set to NaN or infinity (a model that diverged before saving)."""
    def setup(ws: Path) -> None:
        payload = _payload(ws)
        first = next(iter(payload["state_dict"].values()))
        first.view(-1)[7] = value
        torch.save(payload, ws / "bad.pt")
    return setup


def _lookalike(transform: Callable[[str], str]) -> Callable[[Path], None]:
    """A request naming a training ID written otherwise (``transform``): another normalization, look-alike
    letters, fullwidth digits."""
    return _request_variant(lambda ids: "id\n" + "\n".join([*ids[1:], transform(ids[0])]) + "\n")


def _with_cyrillic_i(sample_id: str) -> str:
    return sample_id.replace("i", "\u0456", 1)  # CYRILLIC SMALL LETTER BYELORUSSIAN-UKRAINIAN I


def _fullwidth_digits(sample_id: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if c.isdigit() else c for c in sample_id)


CAFE_TABLE = "id,label,split,f1\n" + "".join(
    f"café-{i:02d},{i % 2},{'train' if i < 40 else 'validation' if i < 50 else 'test'},{i % 7 * 0.5}\n"
    for i in range(60))
CAFE_FORGET = ["forget", "--ids", "lookalike.csv", "--checkpoint", "cafe.pt", "--config", "fast.toml", "--out",
               "runs/new"]


def _cafe(requested: str) -> Callable[[Path], None]:
    """A csv dataset whose IDs are composed 'café-NN' (NFC), trained, and a request for one of its IDs."""
    def setup(ws: Path) -> None:
        (ws / "cafe.csv").write_text(CAFE_TABLE, encoding="utf-8")
        result = run_cli_here(["-q", "train", "--dataset", "csv", "--dataset-option", "path=cafe.csv", "--epochs", "1",
                               "--out", "cafe.pt"], cwd=ws)
        assert result.code == 0, result.err
        (ws / "lookalike.csv").write_text("id\ncafé-01\n" + requested + "\n", encoding="utf-8")
    return setup


ALL_AT_ONCE = """\
atacks = ["loss"]
attacks = ["lr-los"]
backend = "gpu"

[recipe]
lr = "fast"

[policy]
confidence = "high"
"""

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="on a CUDA machine --backend cuda is valid")

CASES = [
    # the deletion request
    Case("request-missing", [*RUN[:2], "nope.csv", *RUN[3:]], problem=r"request file 'nope.csv' does not exist",
         hint="--ids"),
    Case("request-is-a-folder", [*RUN[:2], ".", *RUN[3:]], problem=r"request file '\.' is a folder", hint="--ids"),
    Case("request-empty", RUN, problem=r"request\.csv' is empty", hint="one sample ID per line",
         setup=_write("request.csv", b"")),
    Case("request-header-only", RUN, problem="has a header but no IDs", hint="one sample ID per line",
         setup=_write("request.csv", "id\n")),
    Case("request-wrong-column", RUN, problem=r"no 'id' column; columns found: 'sample', 'reason'",
         hint="--id-column", setup=_write("request.csv", "sample,reason\ndigits-0001,gdpr\n")),
    Case("request-id-column-absent", [*RUN, "--id-column", "sample"],
         problem=r"has no column 'sample'; columns found: 'id'", hint="--id-column"),
    Case("request-not-utf8", RUN, problem=r"is not UTF-8 text \(line 3\)", hint="UTF-8",
         setup=_request_variant(lambda ids: ("id\n" + ids[0] + "\n").encode() + b"caf\xe9\n")),
    Case("request-bom-crlf", RUN + ["--no-audit"], code=0, check=_succeeded_with(REQUEST_SIZE),
         setup=_request_variant(lambda ids: "\ufeffid\r\n" + "\r\n".join(ids) + "\r\n")),
    Case("request-blank-lines-and-spaces", RUN + ["--no-audit"], code=0, check=_succeeded_with(REQUEST_SIZE),
         setup=_request_variant(lambda ids: "\n\nid\n\n" + "\n\n".join(f"  {i}\t" for i in ids) + "\n\n\n")),
    Case("request-duplicate-ids", RUN + ["--no-audit"], code=0,
         check=_succeeded_with(REQUEST_SIZE, duplicates=REQUEST_SIZE),
         setup=_request_variant(lambda ids: "id\n" + "\n".join(ids + ids[::-1]) + "\n")),
    Case("request-unknown-ids", RUN, problem=r"3 of the 23 IDs in 'request\.csv' are not in dataset 'digits'",
         hint="IDs are case-sensitive",
         setup=_request_variant(lambda ids: "id\n" + "\n".join(ids + ["digits-9999", "DIGITS-0001", "x"]) + "\n")),
    Case("request-test-split-ids", RUN,
         problem=r"3 ID.{0,3} in 'request\.csv' are in the test split and were never learned",
         hint=r"only training samples can be forgotten \(`auditkit ids --checkpoint model\.pt --split train` lists them\)",
         setup=_request_variant(lambda ids: "id\n" + "\n".join(ids + digits_ids("test")[:3].tolist()) + "\n")),
    Case("request-whole-training-set", RUN, problem=r"asks to forget all 179 training samples",
         hint="retrain from scratch",
         setup=lambda ws: _write("request.csv", "id\n" + "\n".join(digits_ids("train")))(ws)),
    Case("request-50-mb-unknown", RUN, problem=r"3276800 of the 3276800 IDs in 'request\.csv' are not in dataset "
         r"'digits': unknown-0000000, .*, unknown-0000009, … \(3276790 more\)$", hint="IDs are case-sensitive",
         setup=_fifty_megabytes),
    # a request file with no line break is refused after 1 MiB, not read whole (2 GB took 4.5 GB and 58 s)
    Case("request-no-line-break", RUN, problem=r"'request\.csv' line 1 is longer than 1,048,576 characters",
         hint="one sample ID per line", setup=_write("request.csv", "x" * (3 * 2**20))),
    Case("request-100-kb-id", RUN,
         problem=r"1 of the 21 IDs in 'request\.csv' is not in dataset 'digits': 'y{20,40}…y{10,20}' "
                 r"\(100,000 characters\)$", hint="IDs are case-sensitive",
         setup=_request_variant(lambda ids: "id\n" + "\n".join(ids + ["y" * 100_000]) + "\n")),
    Case("request-fifo", [*RUN[:2], "fifo.csv", *RUN[3:]], problem=r"request file 'fifo\.csv' is a named pipe \(FIFO\)",
         hint="save it to a regular file", setup=_fifo("fifo.csv")),
    Case("request-dev-zero", [*RUN[:2], "/dev/zero", *RUN[3:]],
         problem=r"request file '/dev/zero' is a character device, not a file", hint="save it to a regular file"),
    Case("request-dev-urandom", [*RUN[:2], "/dev/urandom", *RUN[3:]],
         problem=r"request file '/dev/urandom' is a character device, not a file", hint="save it to a regular file"),
    Case("request-stdin", [*RUN[:2], "-", *RUN[3:]], problem=r"--ids - \(standard input\) is not supported",
         hint=r"auditkit ids --split train > request\.csv"),
    # IDs written otherwise than the dataset's: the hint names the one meant
    Case("request-cyrillic-lookalike", RUN, problem="1 of the 20 IDs in 'request.csv' is not in dataset 'digits'",
         hint=r"did you mean 'digits-\d{4}'\? .*U\+0456 CYRILLIC SMALL LETTER BYELORUSSIAN-UKRAINIAN I",
         setup=_lookalike(_with_cyrillic_i)),
    Case("request-fullwidth-digits", RUN, problem="1 of the 20 IDs in 'request.csv' is not in dataset 'digits'",
         hint=r"did you mean 'digits-\d{4}'\? .*fullwidth digits \(NFKC\): U\+FF1\d FULLWIDTH DIGIT",
         setup=_lookalike(_fullwidth_digits)),
    Case("request-decomposed-accent", CAFE_FORGET, problem=r"1 of the 2 IDs in 'lookalike\.csv' is not in dataset 'csv'",
         hint=r"did you mean 'café-07'\? .*Unicode normalization .*U\+0301 COMBINING ACUTE ACCENT",
         setup=_cafe(unicodedata.normalize("NFD", "café-07"))),
    Case("request-cyrillic-a", CAFE_FORGET, problem=r"1 of the 2 IDs in 'lookalike\.csv' is not in dataset 'csv'",
         hint=r"did you mean 'café-07'\? .*U\+0430 CYRILLIC SMALL LETTER A", setup=_cafe("c\u0430fé-07")),
    # the checkpoint
    Case("checkpoint-missing", [*RUN, "--checkpoint", "nope.pt"], problem="checkpoint file 'nope.pt' does not exist",
         hint="auditkit train"),
    Case("checkpoint-truncated", [*RUN, "--checkpoint", "bad.pt"], problem=r"'bad\.pt' is not a readable torch file",
         hint="truncated or not a checkpoint", setup=_truncated),
    Case("checkpoint-is-a-csv", [*RUN, "--checkpoint", "bad.pt"],
         problem=r"'bad\.pt' is not a readable torch file \(Unsupported operand 105\)",
         hint="truncated or not a checkpoint", setup=_write("bad.pt", "id,label\n1,2\n")),
    Case("checkpoint-bare-state-dict", [*RUN, "--checkpoint", "bad.pt"],
         problem=r"is a bare state dict \(no manifest\)",
         hint="save_checkpoint", setup=_bare_state_dict),
    Case("checkpoint-pickled-code", [*RUN, "--checkpoint", "bad.pt"], problem="contains pickled code or objects",
         hint="save only tensors", setup=_pickled_code(2)),
    # torch's safe unpickler stops at protocol 4's first FRAME opcode, before it sees the code: still refused
    Case("checkpoint-pickled-code-protocol-4", [*RUN, "--checkpoint", "bad.pt"],
         problem=r"'bad\.pt' is not a readable torch file \(Unsupported operand 149\)",
         hint="truncated or not a checkpoint", setup=_pickled_code(4)),
    Case("manifest-model-options-not-a-table", [*RUN, "--checkpoint", "bad.pt"],
         problem=r"manifest has 1 malformed field: model_options is 'x' \(must be a table of options\)",
         hint="re-create the checkpoint with `auditkit train`", setup=_manifest(model_options="x")),
    Case("manifest-dataset-options-a-list", [*RUN, "--checkpoint", "bad.pt"],
         problem=r"dataset_options is \[1\] \(must be a table of options\)", hint="re-create the checkpoint",
         setup=_manifest(dataset_options=[1])),
    Case("manifest-num-classes-a-string", [*RUN, "--checkpoint", "bad.pt"],
         problem=r"num_classes is '10' \(must be an integer of at least 2\)", hint="re-create the checkpoint",
         setup=_manifest(num_classes="10")),
    Case("manifest-recipe-a-number", [*RUN, "--checkpoint", "bad.pt"],
         problem=r"recipe is 5 \(must be a table of training settings, or null\)", hint="re-create the checkpoint",
         setup=_manifest(recipe=5)),
    Case("manifest-recipe-lr-a-word", [*RUN, "--checkpoint", "bad.pt"],
         problem=r"recipe: training recipe fields of the wrong type: lr='fast'", hint="re-create the checkpoint",
         setup=_manifest(recipe={"epochs": 20, "lr": "fast"})),
    Case("manifest-model-a-number", [*RUN, "--checkpoint", "bad.pt"],
         problem=r"manifest has 2 malformed fields: model is 5 \(must be a plugin name\); num_classes is 1",
         hint="re-create the checkpoint", setup=_manifest(model=5, num_classes=1)),
    Case("checkpoint-nan-weight", [*RUN, "--checkpoint", "bad.pt"],
         problem=r"checkpoint 'bad\.pt' holds non-finite weights: 1 of the [\d,]+ values of '[\w.]+' are NaN or infinite",
         hint=r"diverged before it was saved.*use an earlier checkpoint, or retrain it", setup=_weight(float("nan"))),
    Case("checkpoint-inf-weight", ["audit", "--ids", "request.csv", "--checkpoint", "model.pt", "--original", "bad.pt",
                                   "--config", "fast.toml", "--out", "runs/new"],
         problem=r"checkpoint 'bad\.pt' holds non-finite weights", hint="use an earlier checkpoint",
         setup=_weight(float("-inf"))),
    Case("checkpoint-other-architecture", [*RUN, "--checkpoint", "bad.pt"],
         problem=r"does not fit the architecture its manifest names, mlp \(widths=\[256\]\).*of another shape",
         hint="different model", setup=_other_architecture),
    Case("checkpoint-other-dataset", [*RUN, "--checkpoint", "bc.pt"],
         problem=r"20 of the 20 IDs in 'request\.csv' are not in dataset 'breast-cancer'",
         hint="request is for this dataset", setup=_other_dataset),
    Case("audit-original-other-dataset", ["audit", "--ids", "request.csv", "--checkpoint", "model.pt", "--original",
                                          "bc.pt", "--config", "fast.toml", "--out", "runs/new"],
         problem="the original checkpoint is for dataset 'breast-cancer', the audited one for 'digits'",
         hint="same dataset", setup=_other_dataset),
    Case("retrained-on-the-retain-set", [*RUN, "--retrained", "retrained.pt"], code=None, check=_with_reference,
         setup=_retrained_on_the_retain_set),
    Case("retrained-other-dataset", [*RUN, "--retrained", "bc.pt"],
         problem=r"--retrained 'bc\.pt': the checkpoint was trained on dataset 'breast-cancer', not 'digits'",
         hint="--dataset breast-cancer", setup=_other_dataset),
    Case("retrained-other-split", [*RUN, "--retrained", "split3.pt"],
         problem=r"--retrained 'split3\.pt': dataset 'digits' has a different training split", hint="split_seed",
         setup=_other_split),
    Case("audit-original-other-split", ["audit", "--ids", "request.csv", "--checkpoint", "model.pt", "--original",
                                        "split3.pt", "--config", "fast.toml", "--out", "runs/new"],
         problem=r"--original 'split3\.pt': dataset 'digits' has a different training split", hint="split_seed",
         setup=_other_split),
    # a user's CSV dataset
    Case("csv-missing-values", CSV_TRAIN, problem=r"line 5: column 'f1' has a missing value", hint="fill or drop",
         setup=_write("data.csv", _table(cell=lambda i: "NA" if i == 3 else "1.5"))),
    Case("csv-text-in-numeric-column", CSV_TRAIN, problem=r"line 9: column 'f1' holds 'seven', not a number",
         hint="features must be numeric", setup=_write("data.csv", _table(cell=lambda i: "seven" if i == 7 else "2"))),
    Case("csv-single-class", CSV_TRAIN, problem=r"has a single class \(0\)", hint="at least two classes",
         setup=_write("data.csv", _table(label=lambda i: 0))),
    Case("train-negative-lr", ["train", "--lr", "-1", "--out", "x.pt"],
         problem=r"training recipe out of range: lr=-1\.0", hint="lr >= 0"),
    Case("train-zero-epochs", ["train", "--epochs", "0", "--out", "x.pt"],
         problem=r"training recipe out of range: epochs=0", hint="epochs >= 1"),
    Case("train-zero-batch", ["train", "--batch-size", "0", "--out", "x.pt"],
         problem=r"training recipe out of range: batch_size=0", hint="batch_size >= 1"),
    Case("train-zero-width-model", ["train", "--model-option", "widths=0", "--out", "x.pt"],
         problem=r"mlp widths must be positive, not \[0\]", hint="widths=256"),
    # the output folder and the trail
    Case("out-exists", RUN, problem=r"output 'runs/new' already exists", hint="--force",
         setup=_write("runs/new/keep.txt", "a previous run\n")),
    Case("out-is-a-file", [*FORGET, "--out", "notes.txt", "--force"],
         problem=r"--out 'notes\.txt' is a file, not a run folder",
         hint="choose another --out", setup=_write("notes.txt", "not a run folder\n")),
    Case("out-is-the-request", [*FORGET, "--out", "request.csv"], problem=r"--out 'request\.csv' is a file",
         hint="choose another --out"),
    Case("out-under-a-file", [*FORGET, "--out", "notes.txt/run"],
         problem=r"--out 'notes\.txt/run' lies under 'notes\.txt', which is a file",
         hint="choose another --out", setup=_write("notes.txt", "not a folder\n")),
    Case("out-not-writable", [*FORGET, "--out", "/proc/auditkit-run", "--trail", "trail.jsonl"],
         problem=r"cannot write into '/proc'", hint="choose a writable --out"),
    Case("trail-not-writable", [*RUN, "--trail", "/proc/audit-trail.jsonl"], problem=r"cannot write into '/proc'",
         hint="choose a writable --trail"),
    Case("train-out-not-writable", ["train", "--epochs", "1", "--out", "/proc/model.pt"],
         problem=r"cannot write into '/proc'", hint="choose a writable --out"),
    Case("report-output-not-writable", ["report", "record.json", "-o", "/proc/report.html"],
         problem=r"cannot write '/proc/report\.html'", hint="writable folder", setup=_record),
    Case("report-output-under-a-file", ["report", "record.json", "-o", "request.csv/report.html"],
         problem=r"cannot write 'request\.csv/report\.html' \(Not a directory\)", hint="writable folder",
         setup=_record),
    Case("trail-tampered", [*RUN, "--trail", "trail.jsonl"], code=3, problem=r"audit trail 'trail\.jsonl' is broken",
         hint="auditkit verify trail.jsonl", setup=_write("trail.jsonl", '{"index": 0}\n')),
    # names: the closest one is suggested
    Case("unknown-method", [*RUN, "--method", "nabla_tau"], problem="unknown method 'nabla_tau'",
         hint="did you mean 'nabla-tau'"),
    Case("unknown-attack", [*RUN, "--attacks", "lr-los"], problem="unknown attack 'lr-los'",
         hint="did you mean 'lr-loss'"),
    Case("unknown-dataset", ["train", "--dataset", "digit", "--out", "x.pt"], problem="unknown dataset 'digit'",
         hint="did you mean 'digits'"),
    Case("unknown-model", ["train", "--model", "mpl", "--out", "x.pt"], problem="unknown model 'mpl'",
         hint="did you mean 'mlp'"),
    Case("unknown-method-option", [*RUN, "--option", "alpah=0.1"], problem="nabla-tau has no option 'alpah'",
         hint="did you mean 'alpha'"),
    Case("method-option-negative-lr", [*RUN, "--option", "lr=-1"], problem=r"out of range: lr=-1,",
         hint="use lr >= 0"),
    Case("method-option-nan-weight-decay", [*RUN, "--option", "weight_decay=nan"],
         problem=r"out of range: .*weight_decay=nan", hint="weight_decay >= 0"),
    Case("method-option-lr-end-factor", [*RUN, "--option", "lr_end_factor=5"],
         problem=r"out of range: .*lr_end_factor=5", hint="0 <= lr_end_factor <= 1"),
    Case("plugin-file-missing", [*RUN, "--plugins", "nope.py"], problem="plugin file 'nope.py' does not exist",
         hint="--plugins"),
    Case("plugin-file-fifo", [*RUN, "--plugins", "fifo.py"], problem=r"plugin file 'fifo\.py' is a named pipe",
         hint="save it to a regular file", setup=_fifo("fifo.py")),
    Case("plugin-file-broken", [*RUN, "--plugins", "broken.py"], code=3,
         problem=r"plugin file 'broken\.py' failed to import: RuntimeError: half-finished plugin",
         hint="fix the error in the plugin file", setup=_broken_plugin),
    # conflicting or malformed options
    Case("no-audit-with-attacks", [*RUN, "--no-audit", "--attacks", "loss"],
         problem="--attacks cannot be combined with --no-audit", hint="drop --no-audit to audit, or drop --attacks"),
    Case("out-would-replace-the-checkpoint", [*FORGET, "--checkpoint", "runs/old/model.pt", "--out", "runs/old",
                                              "--force"],
         problem=r"--out 'runs/old' would replace 'runs/old/model\.pt', which this run reads",
         hint="choose an --out folder of its own",
         setup=_previous_run_holding_the_checkpoint),
    Case("backend-cuda-without-gpu", [*RUN, "--backend", "cuda"], problem="backend 'cuda' cannot run",
         hint="--backend auto", marks=[NO_CUDA]),
    Case("seed-not-a-number", [*RUN, "--seed", "abc"], problem=r"Invalid value for '--seed'", hint="--help"),
    Case("seed-negative", [*RUN, "--seed=-1"], problem=r"'--seed': -1 is not in the range 0<=x<=4294967295",
         hint="--help"),
    Case("seed-too-large", [*RUN, "--seed", str(2**70)], problem=r"'--seed': \d+ is not in the range", hint="--help"),
    Case("config-seed-too-large", [*RUN, "--config", "big.toml"],
         problem=r"seed must be an integer from 0 to 2\*\*32 - 1, not 1099511627776",
         hint=r"fix them in big\.toml", setup=_write("big.toml", f"seed = {2**40}\n")),
    # auditkit.toml and the environment
    Case("config-deeply-nested", [*RUN, "--config", "deep.toml"],
         problem=r"config file 'deep\.toml' nests arrays or tables too deeply to read", hint="nesting",
         setup=_write("deep.toml", "x = " + "[" * 100_000 + "]" * 100_000 + "\n")),
    Case("config-deeply-nested-found-implicitly", ["forget", "--ids", "request.csv", "--checkpoint", "model.pt",
                                                   "--out", "runs/new"],
         problem=r"config file 'auditkit\.toml' nests arrays or tables too deeply to read", hint="nesting",
         setup=_write("auditkit.toml", "x = " + "{a = " * 5000 + "1" + "}" * 5000 + "\n")),
    Case("config-10-mb", [*RUN, "--config", "big.toml"], problem=r"config file 'big\.toml' is larger than 1 MiB",
         hint="the right file", setup=_write("big.toml", "".join(f"key{i} = 1\n" for i in range(800_000)))),
    Case("config-fifo", [*RUN, "--config", "fifo.toml"],
         problem=r"config file 'fifo\.toml' is a named pipe \(FIFO\), not a file", hint="save it to a regular file",
         setup=_fifo("fifo.toml")),
    Case("train-recipe-lr-a-word", ["train", "--config", "bad.toml", "--out", "x.pt"],
         problem=r"bad\.toml has 1 problem: \(1\) training recipe fields of the wrong type: lr='fast'",
         hint=r"fix them in bad\.toml", setup=_write("bad.toml", '[recipe]\nlr = "fast"\n')),
    Case("config-every-problem-at-once", [*RUN, "--config", "bad.toml"],
         problem=r"bad\.toml has 5 problems: \(1\) unknown key 'atacks' \(did you mean 'attacks'\?\); "
                 r"\(2\) unknown attack 'lr-los' \(did you mean 'lr-loss'\?\); \(3\) training recipe fields of the "
                 r"wrong type: lr='fast'; .*and 2 more$", hint=r"fix them in bad\.toml \(--json lists them all\)",
         setup=_write("bad.toml", ALL_AT_ONCE)),
    Case("threads-env-huge", RUN, problem=r"99999999999 is not in the range 1<=x<=1024", hint="--help",
         env={"AUDITKIT_THREADS": "99999999999"}),
    Case("audit-without-checkpoint", ["audit", "--ids", "request.csv", "--out", "runs/new"],
         problem="needs --checkpoint", hint="--help"),
    # u-lira: refused before any shadow is trained
    Case("ulira-odd-shadows", [*RUN, "--attacks", "loss,u-lira", "--attack-option", "u-lira.shadows=5"],
         problem=r"u-lira option shadows=5 must be an even number of at least 4", hint="u-lira.shadows=16"),
    Case("ulira-too-few-shadows", [*RUN, "--attacks", "loss,u-lira", "--attack-option", "u-lira.shadows=2"],
         problem=r"u-lira option shadows=2 must be an even number of at least 4", hint="u-lira.shadows=16"),
    Case("ulira-variance-unknown", [*RUN, "--attacks", "loss,u-lira", "--attack-option", "u-lira.variance=fixed"],
         problem=r"u-lira option variance='fixed' is not one of global, per-example", hint="variance=global"),
    Case("ulira-checkpoint-without-recipe", [*RUN[:4], "bad.pt", *RUN[5:], "--method", "finetune", "--attacks",
                                             "loss,u-lira"],
         problem=r"records no training recipe .* which u-lira \(16 shadow models\) needs", hint="--recipe-option",
         setup=_manifest(recipe=None)),
    Case("audit-ulira-without-method", [*AUDIT, "--attacks", "loss,u-lira"],
         problem=r"u-lira unlearns shadow models with the audited run's method, and none was given",
         hint=r"--method NAME"),
    Case("audit-method-without-ulira", [*AUDIT, "--method", "nabla-tau"],
         problem=r"--method and --option say how the audited checkpoint was unlearned, which only u-lira uses",
         hint="add u-lira to --attacks"),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name, marks=c.marks) for c in CASES])
def test_bad_input(case: Case, tmp_path_factory, tmp_path, recwarn, monkeypatch):
    ws = fresh_workspace(tmp_path_factory, tmp_path / "ws")
    case.setup(ws)
    for name, value in case.env.items():
        monkeypatch.setenv(name, value)
    recwarn.clear()
    before = snapshot(ws)
    result = run_cli_here(case.args, cwd=ws)
    # A Python warning would print above the error line in a terminal
    assert not recwarn.list, [f"{w.filename}:{w.lineno}: {w.message}" for w in recwarn]
    assert not (ws / MARKER).exists(), "unpickling ran code"
    if case.check is not None:
        assert result.code == case.code if case.code is not None else result.code in (0, 1, 4), result.err
        assert "Traceback" not in result.err and not result.lines("error: ")
        case.check(ws, result)
        assert {p: h for p, h in snapshot(ws).items() if p in before} == before  # inputs untouched
        return
    assert_clean_failure(result, code=case.code, problem=case.problem, hint=case.hint)
    assert snapshot(ws) == before  # no input changed; no output, trail, lock or temp file left


def test_the_matrix_has_at_least_25_cases():
    assert len(CASES) >= 25 and len({c.name for c in CASES}) == len(CASES)


def test_the_console_script_prints_exactly_the_two_lines(tmp_path_factory, tmp_path):
    """The same contract in a real process: no import-time warning or log line around the error."""
    import subprocess
    import sys

    ws = fresh_workspace(tmp_path_factory, tmp_path / "ws")
    _write("request.csv", "id\n")(ws)
    done = subprocess.run([sys.executable, "-m", "auditkit", *RUN], cwd=ws, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == ["error: deletion request 'request.csv' has a header but no IDs",
                                        "hint: list one sample ID per line"], done.stderr


def test_json_lists_every_config_problem_the_error_line_cannot_hold(tmp_path_factory, tmp_path):
    """Every problem of auditkit.toml at once: the error line lists as many as fit in 300 characters and counts
    the rest; the --json failure object carries all of them."""
    ws = fresh_workspace(tmp_path_factory, tmp_path / "ws")
    _write("bad.toml", "sead = 1\nplugins = [\"gone.py\"]\n" + ALL_AT_ONCE)(ws)  # top-level keys before the tables
    before = snapshot(ws)
    result = run_cli_here(["--json", *RUN, "--config", "bad.toml"], cwd=ws)
    failure = json.loads(result.out)
    assert result.code == failure["exit_code"] == 2 and snapshot(ws) == before
    problems = failure["problems"]
    assert len(problems) == 7 and failure["error"].startswith("bad.toml has 7 problems: (1) unknown key 'sead'")
    for expected in ("unknown key 'sead' (did you mean 'seed'?)", "plugin file 'gone.py' does not exist",
                     "unknown attack 'lr-los' (did you mean 'lr-loss'?)", "training recipe fields of the wrong type",
                     "policy confidence must be a number, got 'high'", "backend 'gpu' is not one of auto, cpu"):
        assert sum(p.startswith(expected) for p in problems) == 1, (expected, problems)
    error = result.lines("error: ")[0]
    assert len(error) <= 300 and error.endswith(" more") and "--json lists them all" in result.lines("hint: ")[0]
