"""`auditkit adopt` and the Python API on a model defined and trained by a script that never imports auditkit.

The script, the CLI commands and the API calls are the README's own examples, run as written; the CLI
run and the API run of the same inputs must give the same record apart from times.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from auditkit.errors import InputError
from reliability_helpers import assert_clean_failure, fast_config, run_cli_here

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_block(marker: str) -> str:
    """The code between ``<!-- marker -->`` and ``<!-- /marker -->`` in the README, fences removed."""
    text = README.read_text(encoding="utf-8")
    block = text.split(f"<!-- {marker} -->", 1)[1].split(f"<!-- /{marker} -->", 1)[0].strip()
    return block.split("\n", 1)[1].rsplit("```", 1)[0]


def cli_lines(block: str) -> list[list[str]]:
    """The commands of a bash block: continuation lines joined, split on whitespace."""
    return [line.split() for line in block.replace("\\\n", " ").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def trained_elsewhere(tmp_path_factory) -> Path:
    """net.py run in a fresh interpreter: data.pt, weights.pt, request.csv; auditkit never imported."""
    root = tmp_path_factory.mktemp("trained-elsewhere")
    (root / "net.py").write_text(readme_block("adopt-example-train"), encoding="utf-8")
    check = ("import runpy, sys; runpy.run_path('net.py', run_name='__main__'); "
             "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('auditkit', 'auditkit_plugins')); "
             "assert not loaded, loaded")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # on busy shared cores one thread is 2x faster here
    subprocess.run([sys.executable, "-c", check], cwd=root, check=True, timeout=300, env=env)
    assert {"data.pt", "weights.pt", "request.csv"} <= {p.name for p in root.iterdir()}
    return root


def _copy(source: Path, target: Path) -> Path:
    target.mkdir()
    for name in ("net.py", "data.pt", "weights.pt", "request.csv"):
        shutil.copy(source / name, target / name)
    return target


def _comparable(record: dict) -> dict:
    """The record without what differs between two runs of the same inputs: times, the report's hash and
    the trail (a random ID) that logged the run."""
    record = json.loads(json.dumps(record))
    for key in ("started_utc", "finished_utc", "duration_seconds"):
        record["provenance"].pop(key, None)
    record["outputs"].pop("report.html")
    record.pop("trail")
    return record


def test_readme_flow_cli_and_api_give_the_same_run(trained_elsewhere, tmp_path, monkeypatch):
    import auditkit

    cli_dir, api_dir = _copy(trained_elsewhere, tmp_path / "cli"), _copy(trained_elsewhere, tmp_path / "api")
    commands = cli_lines(readme_block("adopt-example-cli"))
    assert commands[0] == ["python", "net.py"]  # already run: the fixture ran it in a fresh interpreter
    for folder in (cli_dir, api_dir):  # a short ∇τ run and few bootstrap rounds, for both
        (folder / "fast.toml").write_text(fast_config(seed=0, attacks=["loss", "lr-loss"]), encoding="utf-8")
    fast = ["--config", "fast.toml"]
    for command in commands[1:]:
        assert command[0] == "auditkit"
        extra = fast if command[1] == "forget" else []
        result = run_cli_here(["-q", *command[1:], *extra], cwd=cli_dir)
        assert result.code in (0, 1), result.err
    manifest = torch.load(cli_dir / "adopted.pt", weights_only=True)["manifest"]
    assert manifest["model_options"]["factory"] == "net.py:Net" and manifest["recipe"]["epochs"] == 60
    assert manifest["adopted_from"]["file"] == "weights.pt" and manifest["train_count"] == 300
    assert manifest["metrics"]["test_accuracy"] > 0.6  # the script's own model, fitted: well above chance 1/3

    # The README's Python block, with the same short run as the CLI's.
    code = readme_block("api-example").replace('out="runs/request-1", threads=1)',
                                               'out="runs/request-1", threads=1, config="fast.toml")')
    assert 'config="fast.toml"' in code
    monkeypatch.chdir(api_dir)
    namespace: dict = {}
    exec(compile(code, "README api-example", "exec"), namespace)
    assert (api_dir / "adopted.pt").read_bytes() == (cli_dir / "adopted.pt").read_bytes()
    cli_record = json.loads((cli_dir / "runs/request-1/record.json").read_text())
    assert _comparable(namespace["record"].to_dict()) == _comparable(cli_record)
    assert (api_dir / "runs/request-1/model.pt").read_bytes() == (cli_dir / "runs/request-1/model.pt").read_bytes()
    assert isinstance(namespace["model"], torch.nn.Module) and not namespace["model"].training
    assert (api_dir / "runs/request-2.request.csv").read_text() == "id\nrow-0000\nrow-0010\nrow-0020\n"
    assert namespace["again"].summary["passed"] is None and auditkit.load is auditkit.api.load


def _adopt(cwd: Path, *extra: str):
    return run_cli_here(["adopt", "--state-dict", "weights.pt", "--model", "module", "--model-option",
                         "factory=net.py:Net", "--dataset", "tensors", "--dataset-option", "path=data.pt", *extra],
                        cwd=cwd)


def test_a_state_dict_that_does_not_fit_lists_the_keys_and_writes_nothing(trained_elsewhere, tmp_path):
    work = _copy(trained_elsewhere, tmp_path / "w")
    narrow = _adopt(work, "--model-option", 'kwargs={"hidden": 32}', "--out", "a.pt")
    assert_clean_failure(narrow, code=2, problem=r"3 of another shape: layers\.0\.weight \[64, 20\] in the file, "
                                                 r"\[32, 20\] in the model", hint="--model-option")
    state = torch.load(work / "weights.pt", weights_only=True)
    torch.save({f"module.{k}": v for k, v in state.items()}, work / "weights.pt")
    wrapped = _adopt(work, "--out", "a.pt")
    assert_clean_failure(wrapped, code=2, problem=r"4 missing: layers\.0\.weight, .*; 4 unexpected: module\.layers",
                         hint=r"module\.state_dict\(\)")
    torch.save({f"extra.{i}": torch.zeros(1) for i in range(8)} | state, work / "weights.pt")
    elided = _adopt(work, "--out", "a.pt")
    assert_clean_failure(elided, code=2, problem=r"8 unexpected: extra\.0, extra\.1, extra\.2, extra\.3, extra\.4 "
                                                 r"and 3 more", hint="--model")
    torch.save({"epoch": 3, "state_dict": state}, work / "weights.pt")
    nested = _adopt(work, "--out", "a.pt")
    assert_clean_failure(nested, code=2, problem="2 entries that are not tensors", hint=r"under 'state_dict'")
    assert not (work / "a.pt").exists()


def test_without_a_recipe_retraining_is_refused_before_the_data_loads(trained_elsewhere, tmp_path, monkeypatch):
    from auditkit_plugins.datasets.tensor_file import TensorFileDataset

    work = _copy(trained_elsewhere, tmp_path / "w")
    adopted = _adopt(work, "--out", "adopted.pt")
    assert adopted.code == 0 and "no training recipe recorded" in adopted.err, adopted.err
    assert torch.load(work / "adopted.pt", weights_only=True)["manifest"]["recipe"] is None

    def no_loading(self):
        raise AssertionError("the dataset was loaded")

    monkeypatch.setattr(TensorFileDataset, "load", no_loading)
    forget = ["forget", "--ids", "request.csv", "--checkpoint", "adopted.pt"]
    for extra, named in ((["--method", "retrain"], "--method retrain"), (["--retrain-reference"], "--retrain-reference"),
                         (["--attacks", "loss,lira-offline"], r"lira-offline \(8 reference models\)")):
        result = run_cli_here([*forget, *extra, "--out", "runs/x"], cwd=work)
        assert_clean_failure(result, code=2, problem=f"records no training recipe .*which {named} needs",
                             hint="--recipe-option epochs=N")
    assert not (work / "runs").exists()
    partial = _adopt(work, "--recipe-option", "epochs=5", "--out", "b.pt")
    assert_clean_failure(partial, code=2, problem="lacks batch_size, lr", hint="--recipe-option batch_size=")


def test_train_ids_define_the_training_split(trained_elsewhere, tmp_path, monkeypatch):
    from auditkit.checkpoint import load_checkpoint, load_dataset
    from auditkit.registry import Registry

    work = _copy(trained_elsewhere, tmp_path / "w")
    monkeypatch.chdir(work)  # the manifest names net.py and data.pt as given: relative to this folder
    # Trained on rows 0-249 (train) and 300-309 (validation in the file); rows 250-299 were not used.
    listed = [f"row-{i:04d}" for i in [*range(250), *range(300, 310)]]
    (work / "ids.csv").write_text("id\n" + "\n".join(listed) + "\n")
    result = _adopt(work, "--train-ids", "ids.csv", "--out", "adopted.pt")
    assert result.code == 0, result.err
    registry = Registry.default()
    with_registry = load_checkpoint(work / "adopted.pt", registry=registry)
    assert with_registry.manifest.train_count == 260 and len(with_registry.manifest.train_ids) == 260
    data = load_dataset(with_registry.manifest, registry=registry)
    assert sorted(data.ids[data.indices("train")]) == sorted(listed)
    assert data.ids[data.indices("unused")].tolist() == [f"row-{i:04d}" for i in range(250, 300)]
    assert len(data.indices("validation")) == 90 and len(data.indices("test")) == 200
    (work / "unused.csv").write_text("id\nrow-0260\n")
    refused = run_cli_here(["forget", "--ids", "unused.csv", "--checkpoint", "adopted.pt", "--out", "r"], cwd=work)
    assert_clean_failure(refused, code=2, problem="in the unused split and were never learned: row-0260",
                         hint="only training samples")
    (work / "bad.csv").write_text("id\nrow-0001\nno-such-row\n")
    unknown = _adopt(work, "--train-ids", "bad.csv", "--out", "c.pt")
    assert_clean_failure(unknown, code=2, problem=r"1 of the 2 training IDs in 'bad\.csv' are not in dataset "
                                                  "'tensors': no-such-row", hint="IDs of this dataset")
    everything = [f"row-{i:04d}" for i in range(600)]
    with pytest.raises(InputError, match="cover every validation sample"):
        import auditkit

        auditkit.adopt(work / "weights.pt", model="module", model_options={"factory": str(work / "net.py") + ":Net"},
                       dataset="tensors", dataset_options={"path": str(work / "data.pt")}, train_ids=everything,
                       out=work / "d.pt")
