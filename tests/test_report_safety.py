"""The evidence is safe to open and hard to forge.

Report safety: a real run on a user's CSV table whose sample IDs, column names, file and folder names,
attack plugin name and output folder are hostile strings (a script tag, an attribute break-out with an
``onerror`` image, a template expression). Every one must reach report.html escaped, never as markup
and never evaluated, and the report must load nothing from the network.

Tampering, through `auditkit verify` and its exit code (tests/test_trail.py already checks every
single-line edit, deletion, insertion and reorder of a trail at the API level): an output that no
longer matches its record, a record whose output list was emptied or pointed elsewhere, a record
rewritten to match swapped outputs, a truncated trail, and a keyed trail whose last line was
re-chained by someone without the key.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from html.parser import HTMLParser

import numpy as np
import pytest
from markupsafe import escape

from auditkit.fsutil import sha256_file
from reliability_helpers import fast_config, run_cli_here, shared_run

SCRIPT = "<script>alert(1)</script>"
BREAKOUT = '"><img src=x onerror=alert(1)>'
TEMPLATE = "{{7*7}}"
MATH = "$\\frac{$"
HOSTILE = (SCRIPT, BREAKOUT, TEMPLATE)

ATTACK = f'''
import numpy as np
from auditkit.interfaces import Attack, AttackOutput

class HostileLoss(Attack):
    PLUGIN_NAME = {BREAKOUT + MATH!r}
    DESCRIPTION = {SCRIPT!r}

    def score(self, data):
        return AttackOutput(scores=-np.asarray(data.target.loss, dtype=np.float64))
'''
FAST = fast_config(seed=1, attacks=None)


def _hostile_table(path) -> list[str]:
    """300 rows, 3 Gaussian classes, 6 features; IDs carry the hostile strings. Returns the IDs."""
    rng = np.random.default_rng(0)
    labels = np.arange(300) % 3
    features = rng.normal(size=(300, 6)) + labels[:, None] * 0.8
    ids = [f"{HOSTILE[i % 3]}{i}" for i in range(300)]
    path.parent.mkdir(parents=True)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([TEMPLATE, SCRIPT, *(f"f{j}" for j in range(6))])  # ID and label columns named hostilely
        writer.writerows([i, y, *(f"{x:.4f}" for x in row)] for i, y, row in zip(ids, labels, features))
    return ids


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    """(workspace, out folder, forget result) of a full audited run on the hostile table."""
    ws = tmp_path_factory.mktemp("hostile")
    # Folder names cannot hold "/", so the script tag spans two of them: the path ends <script>alert(1)</script>.csv
    table = ws / BREAKOUT / TEMPLATE / "<script>alert(1)<" / "script>.csv"
    _hostile_table(table)
    (ws / "hostile_attack.py").write_text(ATTACK, encoding="utf-8")
    (ws / "fast.toml").write_text(FAST, encoding="utf-8")
    options = ["--dataset-option", f"path={table}", "--dataset-option", f"id_column={TEMPLATE}",
               "--dataset-option", f"label_column={SCRIPT}"]
    trained = run_cli_here(["-q", "train", "--dataset", "csv", *options, "--epochs", "30", "--out", "model.pt"], cwd=ws)
    assert trained.code == 0, trained.err

    from auditkit_plugins.datasets.csv_data import CsvDataset

    data = CsvDataset(path=str(table), id_column=TEMPLATE, label_column=SCRIPT).load()
    train = data.ids[data.indices("train")].tolist()
    request = ws / TEMPLATE / "request.csv"
    request.parent.mkdir()
    with open(request, "w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows([["id"], *([i] for i in train[:30])])
    out = ws / "runs" / f"{TEMPLATE}{BREAKOUT}"
    result = run_cli_here(["forget", "--ids", request, "--checkpoint", "model.pt", "--config", "fast.toml",
                           "--plugins", "hostile_attack.py", "--attacks", f"loss,{BREAKOUT + MATH}", "--include-ids",
                           "--out", out], cwd=ws)
    assert result.code in (0, 1, 4), result.err
    return ws, out, result


def test_hostile_strings_reach_the_report_escaped_and_unevaluated(hostile_run):
    _, out, _ = hostile_run
    html = (out / "report.html").read_text(encoding="utf-8")
    record = json.loads((out / "record.json").read_text(encoding="utf-8"))
    for value in (SCRIPT, BREAKOUT):
        assert value not in html
    for value in HOSTILE:
        assert str(escape(value)) in html, value
    assert "<img" not in html and not re.search(r"<script", html, re.IGNORECASE)
    assert TEMPLATE in html  # shown as typed: data is never rendered as a template
    # Where each kind of hostile string came from, as the record shows it:
    exposed = [e["id"] for e in record["audit"]["exposures"]]
    assert any(SCRIPT in i or BREAKOUT in i or TEMPLATE in i for i in exposed)  # sample IDs
    assert str(escape(exposed[0])) in html
    assert BREAKOUT + MATH in {a["attack"] for a in record["audit"]["attacks"]}  # a plugin name
    assert str(escape(BREAKOUT + MATH)) in html
    assert f"{SCRIPT}.csv" in record["dataset"]["options"]["path"]  # a dataset path
    assert record["dataset"]["options"]["id_column"] == TEMPLATE  # config values
    assert record["dataset"]["options"]["label_column"] == SCRIPT


class _Elements(HTMLParser):
    """Every element and attribute the browser would see (escaped text stays text)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.styles: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, {name: value or "" for name, value in attrs}))
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.styles.append(data)


def test_the_report_loads_nothing_from_the_network(hostile_run):
    html = (hostile_run[1] / "report.html").read_text(encoding="utf-8")
    page = _Elements()
    page.feed(html)
    names = {tag for tag, _ in page.tags}
    assert names & {"script", "link", "iframe", "object", "embed", "img", "image", "base", "frame", "audio",
                    "video", "source"} == set(), names
    for tag, attrs in page.tags:
        assert not (set(attrs) & {"src", "srcset", "action", "formaction", "background", "poster"}), (tag, attrs)
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)  # no event handler anywhere
        for name in ("href", "xlink:href"):
            assert attrs.get(name, "#").startswith("#"), (tag, attrs)  # in-page anchors only
        assert not (tag == "meta" and attrs.get("http-equiv", "").lower() == "refresh")
        assert "url(" not in attrs.get("style", "").replace("url(#", "")
    css = " ".join(page.styles)
    assert "@import" not in css and not re.search(r"url\(\s*['\"]?(?!#)", css)
    urls = set(re.findall(r"https?://[^\s\"'<>]+", html))
    assert urls <= {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}, urls  # namespace names only


def test_the_terminal_shows_hostile_names_literally(hostile_run):
    _, out, result = hostile_run
    # Rich wraps long lines; compared without whitespace. Markup is off, so nothing in brackets was eaten.
    assert "".join(f"report: {out / 'report.html'}".split()) in "".join(result.err.split())


def test_re_rendering_the_report_is_byte_identical(hostile_run):
    ws, out, _ = hostile_run
    result = run_cli_here(["report", out / "record.json", "-o", "again.html"], cwd=ws)
    assert result.code == 0, result.err
    assert (ws / "again.html").read_bytes() == (out / "report.html").read_bytes()


# ---------------------------------------------------------------- tampering


@pytest.fixture
def run_copy(tmp_path_factory, tmp_path):
    """A private copy of the session's finished run: runs/first/{model.pt,record.json,report.html} + trail."""
    shutil.copytree(shared_run(tmp_path_factory), tmp_path / "ws")
    return tmp_path / "ws"


def _verify(ws, *args):
    return run_cli_here(["verify", *args], cwd=ws)


def test_an_intact_run_verifies(run_copy):
    assert _verify(run_copy, "runs/first/record.json").code == 0
    assert _verify(run_copy, "runs/audit-trail.jsonl").code == 0


def test_an_edited_report_is_named_by_verify(run_copy):
    report = run_copy / "runs" / "first" / "report.html"
    report.write_text(report.read_text(encoding="utf-8").replace("</footer>", " Approved.</footer>"),
                      encoding="utf-8")
    result = _verify(run_copy, "runs/first/record.json")
    assert result.code == 1 and "MISMATCH: report.html has SHA-256" in result.err


def test_a_deleted_model_is_named_by_verify(run_copy):
    (run_copy / "runs" / "first" / "model.pt").unlink()
    result = _verify(run_copy, "runs/first/record.json")
    assert result.code == 1 and "MISMATCH: model.pt is missing" in result.err


def test_a_record_rewritten_to_match_swapped_outputs_is_caught_by_the_trail(run_copy):
    """A forger swaps in another model and fixes the record's hashes: the record alone then agrees with its
    files (the limit of `verify record.json`), but the trail stored the record's original SHA-256."""
    run = run_copy / "runs" / "first"
    shutil.copyfile(run_copy / "model.pt", run / "model.pt")  # the original, never-unlearned model
    record = json.loads((run / "record.json").read_text(encoding="utf-8"))
    record["outputs"]["model.pt"] = record["summary"]["unlearned_sha256"] = sha256_file(run / "model.pt")
    record["summary"]["passed"] = True
    (run / "record.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    assert _verify(run_copy, "runs/first/record.json").code == 0
    result = _verify(run_copy, "--json", "runs/audit-trail.jsonl")
    assert result.code == 1 and json.loads(result.out)["bad_line"] == 2  # line 1 is the trail's genesis
    message = "TAMPERED: line 2 names record first/record.json, whose SHA-256 no longer matches"
    assert message in " ".join(result.err.split())


@pytest.mark.parametrize("outputs, problem", [
    ({}, "the record lists no SHA-256 for model.pt"),  # drop the hashes, and nothing would be checked
    ({"../../model.pt": "0" * 64, "report.html": "0" * 64, "model.pt": "0" * 64},
     "output '../../model.pt' is not a file name beside the record"),  # make verify read another file
])
def test_a_record_with_doctored_outputs_is_not_intact(run_copy, outputs, problem):
    path = run_copy / "runs" / "first" / "record.json"
    record = json.loads(path.read_text(encoding="utf-8"))
    record["outputs"] = outputs
    path.write_text(json.dumps(record), encoding="utf-8")
    result = _verify(run_copy, "runs/first/record.json")
    assert result.code == 1 and f"MISMATCH: {problem}" in " ".join(result.err.split())


def test_a_trail_cut_after_its_last_run_is_caught(run_copy):
    (run_copy / "runs" / "audit-trail.jsonl").write_text("", encoding="utf-8")
    result = _verify(run_copy, "--json", "runs/audit-trail.jsonl")
    assert result.code == 1 and json.loads(result.out)["bad_line"] == 1
    assert "first/record.json is not in the trail" in " ".join(result.err.split())


def test_a_keyed_trail_catches_a_rechained_last_line_only_with_the_key(tmp_path, monkeypatch):
    from auditkit.evidence.ledger import append_entry
    from auditkit.evidence.signing import TrailKeys, canonical_json

    trail = tmp_path / "audit-trail.jsonl"
    for n in range(3):
        append_entry(trail, {"kind": "forget", "passed": n != 2}, keys=TrailKeys(hmac=b"secret"))
    lines = trail.read_text(encoding="utf-8").splitlines()
    last = json.loads(lines[-1])
    last["entry"]["passed"] = True  # a forger without the key keeps the chain but cannot redo the HMAC
    trail.write_text("\n".join([*lines[:-1], canonical_json(last)]) + "\n", encoding="utf-8")

    monkeypatch.delenv("AUDITKIT_TRAIL_KEY", raising=False)
    unkeyed = _verify(tmp_path, "audit-trail.jsonl")
    assert unkeyed.code == 0 and "set AUDITKIT_TRAIL_KEY to check them" in " ".join(unkeyed.err.split())
    monkeypatch.setenv("AUDITKIT_TRAIL_KEY", "secret")
    keyed = _verify(tmp_path, "--json", "audit-trail.jsonl")
    assert keyed.code == 1 and json.loads(keyed.out)["bad_line"] == 4 and "wrong HMAC" in keyed.err


@pytest.mark.parametrize("content, code, problem", [
    (None, 2, "audit trail 'nope.jsonl' does not exist"),
    (b"\xff\xfe garbage", 2, "is not UTF-8 text"),
])
def test_verify_refuses_what_is_not_a_trail(tmp_path, content, code, problem):
    if content is not None:
        (tmp_path / "nope.jsonl").write_bytes(content)
    result = _verify(tmp_path, "nope.jsonl")
    assert result.code == code and problem in result.err and len(result.lines("error: ")) == 1


LONG_ID = "patient-" + "7" * 100_000
BIDI_ID = "abc\u202egnp.exe"  # shown raw, it reads "abcexe.png"
CONTROL_ID = "red\x1b[31mid\nnext"


def test_long_ids_are_elided_and_bidi_and_control_characters_escaped(tmp_path):
    """Through `auditkit report`: the exposed-ID table elides a 100 kB ID (its full value stays in record.json)
    and shows a right-to-left override or a control character as a marked escape, never raw."""
    from test_record import sample_record

    record = sample_record()
    exposures = record.audit["exposures"]
    for exposure, sample_id in zip(exposures, (LONG_ID, BIDI_ID, CONTROL_ID)):
        exposure["id"] = sample_id
    record.dataset["name"] = "digits\u202eevil"  # any string the report prints, not only IDs
    record.write(tmp_path / "record.json")
    result = run_cli_here(["report", "record.json", "-o", "report.html"], cwd=tmp_path)
    assert result.code == 0, result.err
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "\u202e" not in html and "\x1b" not in html
    assert '<span class="esc">\\u202e</span>' in html and "abc<span" in html  # abc\u202egnp.exe, visibly
    assert '<span class="esc">\\x1b</span>[31mid<span class="esc">\\n</span>next' in html
    assert "7" * 100_000 not in html and "7" * 1000 not in html
    assert f"patient-{'7' * 52}…{'7' * 20} <span class=\"muted\">(100,008 characters; the full ID is in record.json)" in html
    assert len(html) < 400_000  # the 100 kB ID is not in the page at all
    saved = json.loads((tmp_path / "record.json").read_text(encoding="utf-8"))
    assert saved["audit"]["exposures"][0]["id"] == LONG_ID  # the full value, as the record keeps it
