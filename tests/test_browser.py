"""The report in a real headless Chromium: loads without console errors or network requests, renders to a
non-empty screenshot, and shows hostile strings as text.

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: fd 3 carries
commands in, fd 4 events out, NUL-separated JSON), so no port is opened and no extra package is needed.
"""

from __future__ import annotations

import base64
import json
import os
import select
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from auditkit.evidence.report import write_report
from test_record import sample_record

CHROMIUM = Path("/usr/bin/chromium")
HOSTILE = "<script>alert(1)</script>"
LONG_ID = "x" * 100_000
BIDI_ID = "abc\u202egnp.exe"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--remote-debugging-pipe", "--window-size=1100,1400")

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium (apt-get install chromium)")]


class DevTools:
    """A minimal DevTools-protocol client over Chromium's debugging pipe."""

    def __init__(self, profile: Path) -> None:
        commands_read, self._commands = os.pipe()
        self._events, events_write = os.pipe()

        def wire_pipes() -> None:  # Chromium expects the pipe on fds 3 (in) and 4 (out)
            os.dup2(commands_read, 3)
            os.dup2(events_write, 4)

        self.process = subprocess.Popen(
            [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, pass_fds=(3, 4), preexec_fn=wire_pipes,
        )
        os.close(commands_read)
        os.close(events_write)
        self._next_id = 0
        self._buffer = b""
        self.events: list[dict[str, Any]] = []

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self._events], [], [], remaining)[0]:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self._events, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the debugging pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, params: dict[str, Any] | None = None, *, session: str | None = None,
             timeout: float = 30.0) -> dict[str, Any]:
        """Send one command and return its result; events read meanwhile are kept in ``events``."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, event: str, *, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == event for e in self.events):
            self.events.append(self._read_message(deadline))

    def close(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)
        os.close(self._commands)
        os.close(self._events)


@pytest.fixture(scope="module")
def loaded_page(tmp_path_factory):
    """The hostile report opened in Chromium: (devtools, session, page URL)."""
    folder = tmp_path_factory.mktemp("browser")
    record = sample_record(hostile=HOSTILE)
    record.method["settings"]["note"] = HOSTILE
    record.audit["exposures"][1]["id"] = LONG_ID
    record.audit["exposures"][2]["id"] = BIDI_ID
    report = folder / "report.html"
    write_report(record, report)
    tools = DevTools(folder / "profile")
    try:
        target = tools.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = tools.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            tools.send(f"{domain}.enable", session=session)
        url = report.resolve().as_uri()
        tools.send("Page.navigate", {"url": url}, session=session)
        tools.wait_for("Page.loadEventFired")
        yield tools, session, url
    finally:
        tools.close()


def test_page_loads_without_console_errors(loaded_page):
    tools, _, _ = loaded_page
    errors = [e for e in tools.events if e.get("method") == "Runtime.exceptionThrown"
              or (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert"))
              or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")]
    assert errors == []


def test_page_makes_no_network_requests(loaded_page):
    tools, _, url = loaded_page
    requested = [e["params"]["request"]["url"] for e in tools.events if e.get("method") == "Network.requestWillBeSent"]
    assert requested == [url]  # the report itself, nothing else


def test_hostile_strings_show_as_text_and_no_script_runs(loaded_page):
    tools, session, _ = loaded_page
    check = ("JSON.stringify({scripts: document.scripts.length, text: document.body.innerText, "
             "title: document.title, dialogs: typeof window.__alerted})")
    page = json.loads(tools.send("Runtime.evaluate", {"expression": check, "returnByValue": True},
                                 session=session)["result"]["value"])
    assert page["scripts"] == 0
    assert page["text"].count(HOSTILE) >= 4  # the ID, the attack name, the plugin source, the request file
    assert "PASSED" in page["text"] and page["title"].startswith("Unlearning audit")


def test_screenshot_is_a_non_empty_png(loaded_page):
    tools, session, _ = loaded_page
    png = base64.b64decode(tools.send("Page.captureScreenshot", {"format": "png"}, session=session)["data"])
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 20_000


def test_long_and_bidi_ids_keep_the_exposed_id_table_on_the_page(loaded_page):
    """A 100 kB ID used to push the score columns off the page; U+202E showed abc\u202egnp.exe as abcexe.png."""
    tools, session, _ = loaded_page
    check = """(() => {
        const table = [...document.querySelectorAll("table")].find(t => t.innerText.includes("Sample ID"));
        const rows = [...table.querySelectorAll("tbody tr")].slice(0, 3);
        return JSON.stringify({width: document.documentElement.clientWidth,
                               scroll: document.documentElement.scrollWidth,
                               right: Math.max(...rows.map(r => r.lastElementChild.getBoundingClientRect().right)),
                               ids: rows.map(r => r.children[1].innerText)});
    })()"""
    page = json.loads(tools.send("Runtime.evaluate", {"expression": check, "returnByValue": True},
                                 session=session)["result"]["value"])
    assert page["right"] <= page["width"] and page["scroll"] <= page["width"], page  # nothing off the page
    assert page["ids"][1].startswith("x" * 60 + "…") and "(100,000 characters" in page["ids"][1]
    assert page["ids"][2] == "abc\\u202egnp.exe"  # the override is shown, not obeyed
