"""The command line end to end on real digits: train, forget, audit, report, verify, plugins, doctor.

Everything runs in-process through ``run_cli`` (the console script's own exit-code mapping), with a
small recipe and a short unlearning run so the module stays within a few tens of seconds on 2 cores.
"""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import numpy as np
import pytest

from auditkit.audit import battery
from auditkit.cli import cli
from auditkit.cli.app import run_cli
from auditkit.evidence.record import RunRecord
from auditkit.evidence.report import render_report
from auditkit.fsutil import sha256_file
from reliability_helpers import fast_config

HOSTILE = "<script>alert(1)</script>"
FAST_CONFIG = fast_config(seed=3, attacks=["loss", "lr-loss"])
HOSTILE_PLUGIN = f'''
import numpy as np
from auditkit.interfaces import Attack, AttackOutput

class HostileNamedAttack(Attack):
    PLUGIN_NAME = {HOSTILE!r}
    DESCRIPTION = "a loss attack whose name is markup"

    def score(self, data):
        return AttackOutput(scores=-np.asarray(data.target.loss, dtype=np.float64))
'''


def invoke(capsys, *args: str) -> tuple[int, str, str]:
    """Run the CLI like the console script does; returns (exit code, stdout, stderr)."""
    code = run_cli(cli, list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A folder with a small trained digits checkpoint, a request for 20 training IDs and a fast config."""
    root = tmp_path_factory.mktemp("cli")
    code = run_cli(cli, ["-q", "train", "--epochs", "60", "--out", str(root / "runs" / "digits-mlp.pt")])
    assert code == 0
    from auditkit_plugins.datasets.sklearn_data import DigitsDataset

    data = DigitsDataset().load()
    ids = np.random.default_rng(0).choice(data.ids[data.indices("train")], size=20, replace=False)
    (root / "request.csv").write_text("id\n" + "\n".join(sorted(ids)) + "\n", encoding="utf-8")
    (root / "auditkit.toml").write_text(FAST_CONFIG, encoding="utf-8")
    (root / "hostile.py").write_text(HOSTILE_PLUGIN, encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def first_run(workspace):
    """One `auditkit forget` with the defaults the demo uses (checkpoint, out, trail) plus the config."""
    import contextlib
    import io
    import os

    cwd = os.getcwd()
    os.chdir(workspace)
    stdout, stderr = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = run_cli(cli, ["forget", "--ids", "request.csv", "--out", "runs/first", "--json",
                                 "--plugins", "hostile.py", "--attacks", f"loss,lr-loss,{HOSTILE}"])
    finally:
        os.chdir(cwd)
    return code, stdout.getvalue(), stderr.getvalue()


def test_forget_writes_model_record_report_and_trail(workspace, first_run):
    code, out, err = first_run
    run = workspace / "runs" / "first"
    summary = json.loads(out)  # stdout holds only the JSON summary; humans read stderr
    record = RunRecord.load(run / "record.json")
    assert code == summary["exit_code"] == {"passed": 0, "failed": 1, "inconclusive": 4}[record.summary["outcome"]]
    assert summary["outcome"] == record.audit["outcome"] and summary["outcome_reason"]
    assert summary["report"] == "runs/first/report.html" and "report: runs/first/report.html" in err
    assert sorted(p.name for p in run.iterdir()) == ["model.pt", "record.json", "report.html"]
    assert not [p for p in (workspace / "runs").iterdir() if p.name.startswith(".")]  # no staging left

    assert record.kind == "forget" and record.request["count"] == 20 and record.request["ids"] is None
    assert record.request["sha256"] == sha256_file(workspace / "request.csv")
    assert record.checkpoints["original"]["sha256"] == sha256_file(workspace / "runs" / "digits-mlp.pt")
    assert record.outputs["model.pt"] == sha256_file(run / "model.pt") == record.summary["unlearned_sha256"]
    assert record.method["name"] == "nabla-tau" and record.method["settings"]["epochs"] == 2  # from auditkit.toml
    assert len(record.history) == 2 and {"tau", "mia", "forget_loss"} <= set(record.history[0])
    assert {a["attack"] for a in record.audit["attacks"]} == {"loss", "lr-loss", HOSTILE}
    prov = record.provenance
    assert prov["seed"] == 3 and prov["op_backend"] == "reference"
    assert prov["config_sha256"] == sha256_file(workspace / "auditkit.toml")
    assert {p["name"] for p in prov["plugins"]} >= {"nabla-tau", "digits", "mlp", HOSTILE}
    assert any(key.startswith("plugin-file:") for key in prov["inputs"])

    trail = workspace / "runs" / "audit-trail.jsonl"
    genesis, line = (json.loads(text) for text in trail.read_text(encoding="utf-8").splitlines())
    entry = line["entry"]  # line 1 is the trail's genesis (its ID and keys)
    assert genesis["entry"]["event"] == "genesis" and record.trail == {
        "id": genesis["entry"]["trail_id"], "index": 1, "file": "../audit-trail.jsonl"}
    assert entry["record"] == "first/record.json" and entry["record_sha256"] == sha256_file(run / "record.json")


def test_report_is_a_pure_view_of_the_record(workspace, first_run, capsys):
    run = workspace / "runs" / "first"
    html = (run / "report.html").read_text(encoding="utf-8")
    assert render_report(RunRecord.load(run / "record.json")) == html  # same record, same bytes
    assert HOSTILE not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html

    out_file = workspace / "again.html"
    code, _, _ = invoke(capsys, "report", str(run / "record.json"), "-o", str(out_file))
    assert code == 0 and out_file.read_text(encoding="utf-8") == html
    code, _, err = invoke(capsys, "report", str(run / "record.json"), "-o", str(out_file))
    assert code == 2 and "already exists" in err


def test_verify_accepts_intact_outputs_and_names_tampering(workspace, first_run, capsys):
    run = workspace / "runs" / "first"
    trail = workspace / "runs" / "audit-trail.jsonl"
    assert invoke(capsys, "verify", str(trail))[0] == 0
    code, out, _ = invoke(capsys, "--json", "verify", str(run / "record.json"))
    assert code == 0 and json.loads(out)["ok"]

    copy = workspace / "tampered"
    copy.mkdir()
    for name in ("model.pt", "record.json", "report.html"):
        (copy / name).write_bytes((run / name).read_bytes())
    with open(copy / "model.pt", "r+b") as handle:
        handle.seek(200)
        handle.write(b"\x00\x01\x02")
    code, _, err = invoke(capsys, "verify", str(copy / "record.json"))
    assert code == 1 and "MISMATCH: model.pt has SHA-256" in err

    bad_trail = copy / "trail.jsonl"
    lines = trail.read_text(encoding="utf-8").splitlines()
    lines.insert(0, lines[0])
    bad_trail.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, out, err = invoke(capsys, "verify", "--json", str(bad_trail))
    assert code == 1 and json.loads(out)["bad_line"] == 2 and "TAMPERED: line 2" in err


def test_same_seed_gives_the_same_model_and_record(workspace, first_run, capsys, monkeypatch):
    monkeypatch.chdir(workspace)
    code, _, _ = invoke(capsys, "-q", "forget", "--ids", "request.csv", "--out", "runs/second", "--plugins",
                        "hostile.py", "--attacks", f"loss,lr-loss,{HOSTILE}")
    assert code == first_run[0]
    first, second = (RunRecord.load(workspace / "runs" / name / "record.json").to_dict() for name in ("first", "second"))
    assert first["summary"]["unlearned_sha256"] == second["summary"]["unlearned_sha256"]
    for record in (first, second):
        for key in ("started_utc", "finished_utc"):
            record["provenance"].pop(key)
        record["outputs"].pop("report.html")  # the report shows the run's times
        record.pop("trail")  # the trail line each run was logged on
    assert first == second
    assert invoke(capsys, "verify", "runs/audit-trail.jsonl")[0] == 0  # two chained lines


def test_audit_command_audits_a_checkpoint_against_the_original_and_a_retrained_model(
        workspace, first_run, capsys, monkeypatch):
    monkeypatch.chdir(workspace)
    code, _, _ = invoke(capsys, "-q", "forget", "--ids", "request.csv", "--method", "retrain", "--no-audit",
                        "--out", "runs/retrained")
    assert code == 0
    before = sha256_file("runs/first/model.pt")
    code, out, err = invoke(capsys, "--json", "audit", "--checkpoint", "runs/first/model.pt", "--ids", "request.csv",
                            "--retrained", "runs/retrained/model.pt", "--out", "runs/audited")
    record = RunRecord.load("runs/audited/record.json")
    assert code == {"passed": 0, "failed": 1, "inconclusive": 4}[record.summary["outcome"]] == json.loads(out)["exit_code"]
    assert record.kind == "audit" and record.method is None and record.history == []
    assert record.checkpoints["audited"]["sha256"] == before == sha256_file("runs/first/model.pt")
    assert record.checkpoints["retrained"]["sha256"] == sha256_file("runs/retrained/model.pt")
    assert [row["model"] for row in record.audit["utility"]] == ["original", "unlearned", "retrained"]
    judged = {v["attack"]: v for v in record.audit["verdicts"]}
    assert judged["loss"]["retrained_value"] is not None  # verdicts are judged against the retrained model
    assert record.checkpoints["original"]["path"] == str(Path("runs") / "digits-mlp.pt")
    assert "Unlearning over epochs" not in Path("runs/audited/report.html").read_text(encoding="utf-8")


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--out", "runs/first"], "already exists"),
        (["--method", "nabla-ta"], "did you mean 'nabla-tau'"),
        (["--attacks", "loss,los"], "did you mean 'loss'"),
        (["--option", "tau=1"], "has no option 'tau'"),
        (["--option", "nonsense"], "is not key=value"),
        (["--checkpoint", "missing.pt"], "does not exist"),
        (["--dataset", "breast-cancer"], "was trained on dataset 'digits'"),
        (["--ids", "unknown.csv"], "not in dataset"),
        (["--config", "broken.toml"], "2 problems"),
        (["--out", "runs", "--force"], "would replace"),
        (["--trail", "runs/never/trail.jsonl"], "would replace"),
        (["--out", "runs/first", "--force"], "recorded on line 2 of the audit trail"),
        (["--retrain-reference", "--retrained", "runs/digits-mlp.pt"], "both name the retrained reference"),
        (["--retrain-reference", "--no-audit"], "cannot be combined with --no-audit"),
        (["--attacks", "lr-loss"], "exposure attack 'loss' is not in the battery"),
        (["--attack-option", "lira-offline.references=2"], "which is not in the battery"),
        (["--attacks", "loss", "--attack-option", "loss.nope=1"], "has no option 'nope'"),
        (["--attack-option", "references=2"], "does not name its attack"),
    ],
)
def test_bad_input_exits_2_with_a_hint_and_changes_nothing(workspace, first_run, capsys, monkeypatch, args, fragment):
    monkeypatch.chdir(workspace)
    (workspace / "unknown.csv").write_text(f"id\ndigits-0001\n{HOSTILE}\n", encoding="utf-8")
    (workspace / "broken.toml").write_text("sed = 1\nattacks = 3\n", encoding="utf-8")
    before = _snapshot(workspace)
    base = ["forget", "--ids", "request.csv", "--out", "runs/never"]
    code, out, err = invoke(capsys, *base, *args)
    assert code == 2, err
    assert fragment in err and "hint:" in err and "Traceback" not in err and out == ""
    assert _snapshot(workspace) == before
    if "unknown.csv" in args:
        assert HOSTILE in err  # an untrusted ID is printed verbatim, never interpreted as rich markup


def test_retrain_reference_trains_writes_and_judges_against_the_retrained_model(workspace, first_run, capsys,
                                                                                  monkeypatch):
    monkeypatch.chdir(workspace)
    code, _, err = invoke(capsys, "forget", "--ids", "request.csv", "--out", "runs/with-reference",
                          "--retrain-reference")
    run = Path("runs/with-reference")
    record = RunRecord.load(run / "record.json")
    assert code in (0, 1, 4), err
    assert sorted(p.name for p in run.iterdir()) == ["model.pt", "record.json", "report.html", "retrained.pt"]
    assert record.checkpoints["retrained"] == {"path": "retrained.pt", "sha256": sha256_file(run / "retrained.pt")}
    assert record.outputs["retrained.pt"] == record.checkpoints["retrained"]["sha256"]
    assert record.method["retrained"]["name"] == "retrain"
    assert {u["model"] for u in record.audit["utility"]} == {"original", "unlearned", "retrained"}
    judged = [v for v in record.audit["verdicts"] if v["attack"] in {"loss", "lr-loss"}]
    assert judged and all(v["retrained_value"] is not None for v in judged)
    # The retrained model audits as a model of the same dataset and split, and the run verifies.
    assert invoke(capsys, "audit", "--checkpoint", str(run / "retrained.pt"), "--ids", "request.csv",
                  "--out", "runs/audit-of-retrained")[0] in (0, 1, 4)
    assert invoke(capsys, "verify", str(run / "record.json"))[0] == 0
    assert "The retrained model (<code>retrained.pt</code>)" in (run / "report.html").read_text(encoding="utf-8")


def test_attack_options_reach_the_attack_and_the_record(workspace, first_run, capsys, monkeypatch):
    monkeypatch.chdir(workspace)
    code, _, err = invoke(capsys, "forget", "--ids", "request.csv", "--out", "runs/lr-splits", "--attacks",
                          "loss,lr-loss", "--attack-option", "lr-loss.n_splits=5")
    assert code in (0, 1, 4), err
    plugins = RunRecord.load("runs/lr-splits/record.json").provenance["plugins"]
    lr = next(p for p in plugins if p["kind"] == "attacks" and p["name"] == "lr-loss")
    assert lr["options"] == {"n_splits": 5, "draws": 5}


def test_interrupt_exits_130_and_leaves_no_output(workspace, first_run, capsys, monkeypatch):
    monkeypatch.chdir(workspace)

    def interrupted(*_, **__):
        raise KeyboardInterrupt

    monkeypatch.setattr(battery, "complete_audit", interrupted)  # after unlearning, before any output
    before = _snapshot(workspace)
    code, _, err = invoke(capsys, "forget", "--ids", "request.csv", "--out", "runs/interrupted")
    assert code == 130 and "interrupted; nothing was written" in err
    assert _snapshot(workspace) == before
    assert not [p for p in (workspace / "runs").iterdir() if p.name.startswith(".")]


def test_no_audit_still_writes_everything_and_says_so(workspace, first_run, capsys, monkeypatch):
    monkeypatch.chdir(workspace)
    ids = Path("request.csv").read_text(encoding="utf-8").split()[1:]
    Path("twice.csv").write_text("id\n" + "\n".join(ids + ids[:2]) + "\n", encoding="utf-8")
    code, _, err = invoke(capsys, "forget", "--ids", "twice.csv", "--out", "runs/unaudited", "--no-audit",
                          "--include-ids")
    assert "warning: 2 duplicate row(s)" in err
    record = RunRecord.load("runs/unaudited/record.json")
    assert code == 0 and record.audit is None and record.summary["passed"] is None and "audit skipped" in err
    assert record.request["ids"] == sorted(ids) and record.request["duplicates_dropped"] == 2
    assert "NOT AUDITED" in Path("runs/unaudited/report.html").read_text(encoding="utf-8")


def test_plugins_list_shows_sources_and_escapes_names(workspace, capsys):
    code, out, err = invoke(capsys, "plugins", "list", "--json", "--plugins", str(workspace / "hostile.py"))
    assert code == 0
    listed = {(p["kind"], p["name"]): p for p in json.loads(out)["plugins"]}
    assert listed[("methods", "nabla-tau")]["source"].startswith("auditkit-unlearn (entry point ")
    assert listed[("attacks", HOSTILE)]["source"].startswith("file ")
    assert listed[("models", "mlp")]["options"] == {"widths": [256]}
    assert listed[("attacks", "lira-offline")]["options"]["references"] == 8

    code, out, err = invoke(capsys, "plugins", "list", "--plugins", str(workspace / "hostile.py"))
    assert code == 0 and err == ""  # the listing is the output: stdout, so `| grep` sees it
    rows = {tuple(line.split("\t")[:2]): line.split("\t") for line in out.splitlines()}
    assert rows[("attacks", HOSTILE)][2] == "a loss attack whose name is markup"  # literal, never markup
    mlp = rows[("models", "mlp")]
    assert mlp[2] == "multi-layer perceptron with configurable hidden widths" and mlp[3] == "widths=[256]"
    assert mlp[-2].startswith("auditkit-unlearn ") and mlp[-1] == "ok"


def test_plugins_list_shows_a_broken_plugin_file_and_skips_it(workspace, capsys, tmp_path):
    """As the README says: a --plugins file that fails to import is listed with its error, and the rest work."""
    broken = tmp_path / "broken.py"
    broken.write_text("import numpy\nraise RuntimeError('half-finished plugin')\n", encoding="utf-8")
    code, out, err = invoke(capsys, "plugins", "list", "--plugins", str(broken), "--plugins",
                            str(workspace / "hostile.py"))
    assert code == 0, err
    row = next(line.split("\t") for line in out.splitlines() if line.startswith("file\t"))
    assert row[1] == str(broken)
    assert row[-1] == f"error: plugin file {str(broken)!r} failed to import: RuntimeError: half-finished plugin"
    assert any(line.startswith(f"attacks\t{HOSTILE}\t") for line in out.splitlines())  # the good file still loads
    code, out, _ = invoke(capsys, "plugins", "list", "--json", "--plugins", str(broken))
    assert code == 0 and [p["error"] for p in json.loads(out)["plugins"] if p["kind"] is None] == [row[-1][7:]]


def test_plugins_list_on_a_terminal_is_a_table_with_descriptions(workspace, capsys, monkeypatch):
    import io

    from rich.console import Console

    plugins_cli = importlib.import_module("auditkit.cli.plugins")  # the package attribute is the click group

    screen = io.StringIO()
    monkeypatch.setattr(plugins_cli, "Console", lambda **kw: Console(file=screen, force_terminal=True, width=200, **kw))
    code, out, err = invoke(capsys, "plugins", "list", "--kind", "models")
    text = screen.getvalue()
    assert code == 0 and "options (defaults)" in text and "widths=[256]" in text and "multi-layer perceptron" in text


def test_doctor_reports_torch_and_the_op(capsys):
    code, out, err = invoke(capsys, "doctor", "--json")
    report = json.loads(out)
    assert code == (3 if report["problems"] else 0)
    assert report["torch"] and "reference" in report["op"]["available_backends"] and "fused op:" in err


def test_usage_errors_exit_2_without_traceback(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no stray auditkit.toml or runs/ from the working directory
    for args in (["forget"], ["nonsense"], ["train", "--epochs", "many"], ["forget", "--ids", "x.csv", "--backend", "gpu"]):
        code, out, err = invoke(capsys, *args)
        assert code == 2 and err.startswith("error: ") and "Traceback" not in err and out == ""


def test_json_mode_reports_failures_on_stdout_too(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = invoke(capsys, "--json", "forget", "--ids", "missing.csv")
    failure = json.loads(out)
    assert code == failure["exit_code"] == 2 and failure["error"] in err and failure["hint"]


def test_the_first_build_is_one_line_with_its_time(capsys, monkeypatch, tmp_path):
    """The op's first compile (15-60 s) says what it is doing: through `doctor --build` and through a run,
    one line without a terminal (its message first, then how it ended, on the same line)."""
    from auditkit import ops

    compiled = []
    monkeypatch.setenv("AUDITKIT_CACHE_DIR", str(tmp_path / "cache"))  # an empty cache: a first run
    monkeypatch.setattr(ops, "_loaded_plan", None)
    monkeypatch.setattr(ops, "_build_error", None)
    monkeypatch.setattr(ops, "_python_parts_registered", True)
    monkeypatch.setattr(ops, "_compile", lambda plan, verbose: compiled.append(plan))
    code, out, err = invoke(capsys, "doctor", "--build")
    assert re.fullmatch(r"building the fused op \(first run only\)… built in \d+\.\d s", err.splitlines()[0]), err
    assert len(compiled) == 1 and code in (0, 3)

    monkeypatch.setattr(ops, "_loaded_plan", None)  # the same through `forget`: built before the output check
    monkeypatch.chdir(tmp_path)
    Path("request.csv").write_text("id\ndigits-0001\n", encoding="utf-8")
    Path("runs/taken").mkdir(parents=True)
    Path("model.pt").write_bytes(b"")
    code, out, err = invoke(capsys, "forget", "--ids", "request.csv", "--checkpoint", "model.pt", "--backend", "cpu",
                            "--out", "runs/taken")
    lines = err.splitlines()
    assert code == 2 and len(compiled) == 2 and len(lines) == 3, err
    assert re.fullmatch(r"building the fused op \(first run only\)… built in \d+\.\d s", lines[0])
    assert lines[1] == "error: output 'runs/taken' already exists"


def test_a_wait_shows_a_live_timer_on_a_terminal_and_stays_one_line():
    import io

    from rich.console import Console

    from auditkit.cli.app import Application
    from auditkit.progress import Progress

    screen = io.StringIO()
    app = Application(console=Console(file=screen, force_terminal=True, width=100))
    with app.progress() as report:
        report(Progress("fused op", 0, 1, "building the fused op (first run only)…", wait=True))
        report(Progress("fused op", 1, 1, "built in 21.3 s", wait=True))
    text = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", screen.getvalue())  # without the terminal's colour codes
    assert "building the fused op (first run only)… ━" in text and "0:00:0" in text  # a live bar and timer
    assert "building the fused op (first run only)… built in 21.3 s\n" in text  # then one permanent line

    quiet = io.StringIO()
    app = Application(verbosity=-1, console=Console(file=quiet, force_terminal=False))
    with app.progress() as report:
        report(Progress("fused op", 0, 1, "building the fused op (first run only)…", wait=True))
        report(Progress("fused op", 1, 1, "built in 21.3 s", wait=True))
    assert quiet.getvalue() == ""  # -q


def test_progress_renders_bars_on_a_terminal_and_stays_silent_otherwise():
    import io

    from rich.console import Console

    from auditkit.cli.app import Application
    from auditkit.progress import Progress

    terminal = io.StringIO()
    app = Application(console=Console(file=terminal, force_terminal=True, width=100))
    with app.progress() as report:
        for step in range(1, 4):
            report(Progress("unlearn", step, 3, message="[bold red]epoch[/]"))
    assert "[bold red]epoch[/]" in terminal.getvalue()  # messages are shown literally, never as markup

    piped = io.StringIO()
    app = Application(console=Console(file=piped, force_terminal=False))
    with app.progress() as report:
        report(Progress("unlearn", 3, 3))
    assert piped.getvalue() == ""
    with app.progress() as report:
        report(Progress("reference-models", 0, 8, message="8 to train"))
    assert piped.getvalue() == "reference-models: 8 to train\n"  # costs are announced even in CI
    piped.truncate(0)
    piped.seek(0)
    app.verbosity = 1
    with app.progress() as report:
        report(Progress("unlearn", 1, 3))
        report(Progress("unlearn", 3, 3))
    assert piped.getvalue().strip() == "unlearn: done (3)"


def test_a_trail_key_in_the_environment_demands_hmacs(workspace, first_run, capsys, monkeypatch):
    monkeypatch.setenv("AUDITKIT_TRAIL_KEY", "s3cret")
    code, _, err = invoke(capsys, "verify", str(workspace / "runs" / "audit-trail.jsonl"))
    assert code == 1 and "line 1 has no HMAC although AUDITKIT_TRAIL_KEY is set" in err
