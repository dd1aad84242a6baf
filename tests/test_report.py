"""The HTML report: a deterministic, escaped, self-contained view of a record."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from auditkit.errors import InputError
from auditkit.evidence.report import MAX_EXPOSED_IDS, render_report, write_report
from test_record import sample_record

HOSTILE = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def hostile_html() -> str:
    record = sample_record(hostile=HOSTILE)
    record.method["settings"]["note"] = HOSTILE
    record.dataset["options"]["path"] = f'"/><img src=x onerror=alert(1)>{HOSTILE}'
    return render_report(record)


def test_every_untrusted_string_is_escaped(hostile_html):
    assert "<script" not in hostile_html and "onerror=alert" not in hostile_html.replace("onerror=alert(1)&gt;", "")
    assert "<img" not in hostile_html
    # the hostile ID, attack name, plugin source and request file all show up, escaped, as text
    assert hostile_html.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 4


def test_report_is_self_contained(hostile_html):
    # No element that could fetch anything: no scripts, links, external images, imports or url()s.
    for pattern in (r"<script", r"<link", r"<iframe", r"\ssrc=", r"@import", r"url\((?!#)", r"<img"):
        assert not re.search(pattern, hostile_html), pattern
    # The only http(s) strings are SVG/XLink namespace names, which browsers never request.
    urls = set(re.findall(r"https?://[^\s\"'<>]+", hostile_html))
    assert urls <= {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}, urls
    assert hostile_html.count("<svg") == 3  # ROC, loss histograms, history


def test_log_axis_ticks_are_plain_numbers(plain_html):
    # Mathtext is off (a "$" in a plugin name must print as typed), so the default log tick labels
    # would show their raw source, e.g. "$\mathdefault{10^{-3}}$".
    assert "mathdefault" not in plain_html and "10^{" not in plain_html
    assert re.search(r">0\.01<", plain_html)


@pytest.fixture(scope="module")
def plain_html() -> str:
    return render_report(sample_record())


def test_same_record_gives_the_same_bytes_across_processes(tmp_path, plain_html):
    record_path = tmp_path / "record.json"
    sample_record().write(record_path)
    here = plain_html
    script = ("import sys; from auditkit.evidence.record import RunRecord; from auditkit.evidence.report import render_report; "
              "sys.stdout.write(render_report(RunRecord.load(sys.argv[1])))")
    there = subprocess.run([sys.executable, "-c", script, str(record_path)], capture_output=True, text=True,
                           check=True, encoding="utf-8").stdout
    assert here == there


@pytest.mark.parametrize("outcome, banner", [("passed", "PASSED"), ("failed", "FAILED"),
                                             ("inconclusive", "INCONCLUSIVE"), (None, "NOT AUDITED")])
def test_banner_follows_the_verdict(outcome, banner, plain_html):
    html = plain_html if outcome == "passed" else render_report(sample_record(outcome=outcome))
    assert re.search(rf'<div class="verdict">{banner}</div>', html)
    if outcome == "inconclusive":
        # Why, what would make it conclusive, the power, and the main caveat are all in the banner.
        banner_html = html.split('id="verdict"', 1)[1].split("</section>", 1)[0]
        for fragment in ("no attack detects membership leakage", "What would make it conclusive",
                         "attacks with reference models", "Power:", "AUC ≥ 0.610", "not resolvable"):
            assert fragment in banner_html, fragment
    if outcome is None:
        assert "Membership-inference attacks" not in html and html.count("<svg") == 1  # history only


def test_content_an_auditor_needs(plain_html):
    record = sample_record()
    html = plain_html
    for text in ("a" * 64, "b" * 64, "c" * 64, "Utility", "ROC curves", "Loss distributions", "Unlearning over epochs",
                 "Most exposed forgotten samples", "Privacy of the retained samples", "Method and settings",
                 "Provenance", "Hayes et al., 2024", "false sense of privacy", record.provenance["torch"]):
        assert text in html, text
    exposed = record.audit["exposures"]
    assert exposed[MAX_EXPOSED_IDS - 1]["id"] in html and exposed[MAX_EXPOSED_IDS]["id"] not in html
    assert "3 of 60 are flagged" in html


def test_an_incomplete_record_is_an_input_error_not_a_traceback(tmp_path):
    record = sample_record(outcome=None)
    del record.dataset["sizes"]
    with pytest.raises(InputError, match="sizes"):
        render_report(record)
    assert not (tmp_path / "r.html").exists()
    with pytest.raises(InputError):
        write_report(record, tmp_path / "r.html")
    assert list(tmp_path.iterdir()) == []


def test_write_report_is_atomic_and_complete(tmp_path):
    target = Path(tmp_path / "report.html")
    write_report(sample_record(outcome=None), target)
    text = target.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


def test_a_long_history_is_sampled_in_the_table_but_kept_in_the_record():
    record = sample_record()
    record.history = [{**record.history[0], "epoch": e} for e in range(1, 97)]
    html = render_report(record)
    table = html.split("Unlearning over epochs", 1)[1].split("</table>", 1)[0]
    assert table.count("<tr>") == 1 + 20  # header + 20 epochs, the first and the last among them
    assert ">96<" in table and ">1<" in table
    assert "20 of 96 epochs shown" in html


def test_tiny_losses_keep_their_digits():
    # Well-fit samples have losses of ~1e-5: fixed decimals showed "0.0000".
    record = sample_record()
    record.audit["exposures"][0]["original_loss"] = 3.2e-05
    html = render_report(record)
    assert '<td class="n">3.200e-05</td>' in html


def test_the_exposed_id_table_shows_losses_and_says_what_the_flag_means(plain_html):
    table = plain_html.split("Most exposed forgotten samples", 1)[1].split("</table>", 1)[0]
    assert "Loss, original" in table and "Loss, unlearned" in table and "Score" not in table
    assert "only 1 % of the test samples exceed" in table and "(≈ 0.6 of 60 by chance)" in table


def test_abstentions_are_shown_and_the_retrained_model_has_one_name():
    record = sample_record()
    attack = next(a for a in record.audit["attacks"] if (a["attack"], a["model"]) == ("lr-loss", "unlearned"))
    attack.update(abstained="its 10-split cross-validation needs at least 10 members", headline_value=None,
                  headline_ci=None, metrics=None)
    verdict = record.audit["verdicts"][0]
    verdict.update(status="abstained", value=None, ci=None, reason="abstained: its 10-split cross-validation needs")
    html = render_report(record)
    row = html.split("<strong>lr-loss</strong>", 1)[1].split("</tr>", 1)[0]
    assert row.count(">abstained<") == 2 and "cross-validation needs" in row  # the unlearned cell and the verdict
    detail = html.split("Detail (unlearned model)", 1)[1].split("</table>", 1)[0]
    assert "no threshold metrics" in detail
    assert "Reference" not in html and "<th class=\"n\">retrained</th>" in html

