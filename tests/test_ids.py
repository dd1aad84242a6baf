"""`auditkit ids`: the IDs of a checkpoint's or a dataset's splits as CSV on stdout, through the real CLI,
checked against the dataset plugin's own split, and usable as a deletion request as printed."""

from __future__ import annotations

import csv
import io
import json

from reliability_helpers import (
    FORGET,
    assert_clean_failure,
    digits_ids,
    fresh_workspace,
    run_cli_here,
    shared_workspace,
    snapshot,
)


def _rows(out: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(out)))


def test_a_checkpoints_ids_by_split(tmp_path_factory):
    ws = shared_workspace(tmp_path_factory)
    before = snapshot(ws)
    result = run_cli_here(["ids", "--checkpoint", "model.pt"], cwd=ws)
    assert result.code == 0, result.err
    rows = _rows(result.out)
    for split in ("train", "validation", "test"):  # the split the model was trained with, in dataset order
        assert [r["id"] for r in rows if r["split"] == split] == digits_ids(split).tolist()
    assert result.out.startswith("id,split\n") and result.err.strip() == (
        "1797 IDs listed (179 train, 359 validation, 1259 test) of 1797 in checkpoint model.pt (dataset digits)")
    assert snapshot(ws) == before


def test_filtered_training_ids_make_a_request_that_forget_accepts(tmp_path_factory, tmp_path):
    ws = fresh_workspace(tmp_path_factory, tmp_path / "ws")
    result = run_cli_here(["-q", "ids", "--checkpoint", "model.pt", "--split", "train", "--match", "digits-00*",
                           "--match", "digits-17*", "--limit", "12"], cwd=ws)
    assert result.code == 0 and result.err == ""
    train = digits_ids("train").tolist()
    expected = [i for i in train if i.startswith(("digits-00", "digits-17"))][:12]
    assert [r["id"] for r in _rows(result.out)] == expected and len(expected) == 12
    (ws / "mine.csv").write_text(result.out, encoding="utf-8")
    forget = run_cli_here(["-q", *FORGET[:2], "mine.csv", *FORGET[3:], "--out", "runs/mine", "--no-audit", "--json"],
                          cwd=ws)
    assert forget.code == 0, forget.err
    assert json.loads(forget.out)["request_count"] == 12


def test_a_dataset_plugins_ids_and_json(tmp_path_factory):
    ws = shared_workspace(tmp_path_factory)
    result = run_cli_here(["--json", "ids", "--dataset", "breast-cancer", "--dataset-option", "split_seed=3",
                           "--split", "validation"], cwd=ws)
    assert result.code == 0, result.err
    from auditkit_plugins.datasets.sklearn_data import BreastCancerDataset

    data = BreastCancerDataset(split_seed=3).load()
    listed = json.loads(result.out)
    assert [r["id"] for r in listed["ids"]] == data.ids[data.indices("validation")].tolist()
    assert listed["count"] == len(listed["ids"]) and {r["split"] for r in listed["ids"]} == {"validation"}


def test_ids_with_commas_and_line_breaks_stay_one_cell(tmp_path):
    table = tmp_path / "odd.csv"
    odd = ['a,b', 'say "hi"', "two\nlines"]
    with open(table, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "label", "split", "f"])
        writer.writerows([[odd[i % 3] + str(i), i % 2, "train" if i < 30 else "test" if i < 45 else "validation", i]
                          for i in range(60)])
    result = run_cli_here(["-q", "ids", "--dataset", "csv", "--dataset-option", f"path={table}", "--split", "train"],
                          cwd=tmp_path)
    assert result.code == 0, result.err
    assert [r["id"] for r in _rows(result.out)] == [odd[i % 3] + str(i) for i in range(30)]


def test_bad_ids_invocations_are_two_line_errors(tmp_path_factory):
    ws = shared_workspace(tmp_path_factory)
    for args, problem, hint in (
        (["ids", "--checkpoint", "nope.pt"], r"checkpoint 'nope\.pt' does not exist", "--dataset NAME"),
        (["ids", "--checkpoint", "model.pt", "--dataset", "digits"], "both name the data", "--checkpoint"),
        (["ids", "--dataset-option", "split_seed=1"], "--dataset-option needs --dataset", "--dataset NAME"),
        (["ids", "--dataset", "digitz"], "unknown dataset 'digitz'", "did you mean 'digits'"),
        (["ids", "--checkpoint", "model.pt", "--split", "training"], "Invalid value for '--split'", "--help"),
    ):
        assert_clean_failure(run_cli_here(args, cwd=ws), code=2, problem=problem, hint=hint)
