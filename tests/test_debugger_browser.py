"""The live event debugger in a real headless Chromium: a bot builder opens the page, runs a
flow through the real Segment block, and watches the events arrive without reloading;
filters them, opens one, copies its payload; and a trait holding markup is shown as text.

Needs Debian's `chromium` (installed by .ci/run) and the `playwright` package (the `test`
extra). Playwright's own browser download is never used: the machine may have no internet.
Without chromium the tests skip, except under CI=true, where a missing browser is a failure.
A screenshot of the page is written to $QUICKBOT_TEST_ARTIFACTS (else the test's tmp_path).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from segment.analytics.request import post as library_post
from support import WORKSPACE, WRITE_KEY

from quickbot_segment_plugin.block import SegmentBlock
from quickbot_segment_plugin.collector.service import Collector
from quickbot_segment_plugin.collector.store import EventStore
from quickbot_segment_plugin.core.timestamps import segment_timestamp as format_iso8601

pytestmark = [pytest.mark.browser, pytest.mark.integration]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Read at import: the autouse fixture in conftest.py removes QUICKBOT_* variables during each test.
ARTIFACTS = os.environ.get("QUICKBOT_TEST_ARTIFACTS")
FLOW = json.loads((Path(__file__).resolve().parent.parent / "examples" / "onboarding-flow.json").read_text("utf-8"))
XSS = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'
WAIT_MS = 20_000  # generous: the page polls every 500 ms; this only bounds a broken run
# Records Content-Security-Policy violations, so a page that broke its own policy fails the test.
WATCH_POLICY = (
    "window.__policyViolations = [];"
    "document.addEventListener('securitypolicyviolation',"
    " (e) => window.__policyViolations.push(e.violatedDirective + ' ' + e.blockedURI));"
)


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.access(CHROMIUM, os.X_OK):
        reason = f"{CHROMIUM} is missing (apt-get install chromium; .ci/run installs it when run as root)"
        if _in_ci():
            pytest.fail(f"CI is set, so the browser test must run, but {reason}.")
        pytest.skip(f"browser test skipped: {reason}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the playwright package is missing: install the test extra (pip install '.[test]').")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield launched
        launched.close()


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    folder = Path(ARTIFACTS) if ARTIFACTS else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class DebuggerPage:
    """The page as a bot builder uses it, plus what the test needs to watch it honestly."""

    def __init__(self, browser: Any, url: str) -> None:
        self.context = browser.new_context(viewport={"width": 1440, "height": 900}, color_scheme="light")
        self.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=url.rstrip("/"))
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.loads = 0
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("load", lambda _: self._loaded())
        self.page.add_init_script(WATCH_POLICY)
        self.page.goto(url)
        self.until("document.getElementById('status').classList.contains('live')")
        self.page.evaluate("window.__sameDocument = 'opened before the flow ran'")

    def until(self, condition: str) -> None:
        """Waits for a JavaScript condition. Passed as a function: an expression would be run
        through eval, which the page's own Content-Security-Policy (rightly) refuses."""
        self.page.wait_for_function("() => " + condition, timeout=WAIT_MS)

    def settle(self) -> None:
        """Lets the arrival highlight and the "Copied" confirmation fade, for a clean screenshot."""
        self.until("!document.querySelector('#rows tr.fresh, .button.done')")

    def _loaded(self) -> None:
        self.loads += 1

    def wait_for_rows(self, count: int) -> None:
        self.until(f"document.querySelectorAll('#rows tr').length >= {count}")

    def visible_rows(self) -> list[dict[str, str]]:
        rows: list[dict[str, str]] = self.page.evaluate(
            """() => [...document.querySelectorAll('#rows tr')].filter((tr) => !tr.hidden).map((tr) => ({
                type: tr.children[1].textContent, name: tr.children[2].textContent,
                user: tr.children[3].textContent, flags: tr.children[4].textContent}))"""
        )
        return rows

    def open_row(self, name: str) -> None:
        """Clicks the newest visible row whose event / name cell is exactly `name`."""
        index = [row["name"] for row in self.visible_rows()].index(name)
        self.page.locator("#rows tr:not([hidden])").nth(index).click()
        self.until("!document.getElementById('detail-body').hidden")

    def text(self, selector: str) -> str:
        return str(self.page.locator(selector).text_content())

    def assert_healthy(self) -> None:
        assert self.errors == []
        assert self.page.evaluate("window.__policyViolations") == []
        assert self.loads == 1, "the page reloaded"
        assert self.page.evaluate("window.__sameDocument") == "opened before the flow ran"

    def close(self) -> None:
        self.context.close()


def run_block(block: SegmentBlock, token: str, options: dict[str, Any], execution_id: str) -> None:
    context = {
        "workspace_id": WORKSPACE,
        "credentials": token,
        "variables": FLOW["variables"],
        "bot_id": FLOW["bot_id"],
        "block_id": execution_id,
        "execution_id": execution_id,
    }
    result = block.execute(options, context)
    assert result["status"] in ("queued", "skipped"), result["logs"]


def run_onboarding_flow(block: SegmentBlock, token: str) -> int:
    """The example flow's blocks, as QuickBot would run them; returns how many were sent."""
    sent = 0
    for flow_block in FLOW["blocks"]:
        result = block.execute(
            flow_block["options"],
            {
                "workspace_id": WORKSPACE,
                "credentials": token,
                "variables": FLOW["variables"],
                "bot_id": FLOW["bot_id"],
                "block_id": flow_block["id"],
                "execution_id": flow_block["id"],
            },
        )
        assert result["status"] in ("queued", "skipped"), result["logs"]
        sent += result["status"] == "queued"
    return sent


def test_a_flow_shows_up_live_and_can_be_filtered_inspected_and_copied(
    browser: Any, block: SegmentBlock, token: str, local_segment: Collector, artifacts: Path
) -> None:
    debugger = DebuggerPage(browser, local_segment.debugger_url)
    try:
        assert debugger.text("#empty-endpoint") == f"QUICKBOT_SEGMENT_ENDPOINT={local_segment.url}"

        # The bot runs after the page is open: the events must arrive by themselves.
        sent = run_onboarding_flow(block, token)
        run_block(
            block,
            token,
            {"action": "page", "name": "Welcome", "anonymousId": "{{Session ID}}"},
            "anonymous-welcome",
        )
        block.shutdown(5.0)
        # Another sender on the same collector (the block itself refuses this trait): a reserved
        # trait of the wrong type, which Segment accepts and flags in its debugger.
        response = library_post(
            WRITE_KEY,
            host=local_segment.url,
            timeout=5,
            batch=[
                {
                    "type": "identify",
                    "messageId": str(uuid.uuid4()),
                    "userId": "user-1042",
                    "traits": {"age": "thirty", "email": "zoe@example.com"},
                }
            ],
        )
        assert response.status_code == 200
        retried = SegmentBlock()  # a host that restarted and ran the same execution again
        run_block(retried, token, FLOW["blocks"][-2]["options"], "qualified-lead")
        retried.shutdown(5.0)
        expected = sent + 3
        assert local_segment.wait_for(expected, timeout=10.0)
        debugger.wait_for_rows(expected)

        rows = debugger.visible_rows()
        stored = local_segment.events(limit=100)
        assert len(rows) == len(stored) == expected
        assert [row["type"] for row in rows] == [event["type"] for event in stored]  # newest first
        assert rows[0]["name"] == "Lead Qualified"
        assert rows[0]["flags"] == "duplicate"
        assert rows[1]["flags"] == "⚠ 1 warning"
        assert {row["type"] for row in rows} == {"alias", "identify", "group", "page", "screen", "track"}
        assert next(row for row in rows if row["name"] == "Welcome")["user"] == "anon anon-7f3a"
        debugger.until(f"document.getElementById('total').textContent === '{expected}'")
        assert debugger.text("#total-duplicates") == "1"
        assert debugger.text("#total-warnings") == "1"
        assert debugger.page.locator("#chart rect.seg").count() >= 1
        assert debugger.text("#type-counts li[data-type=track] .count") == "2"
        assert debugger.text("#type-counts li[data-type=identify] .count") == "2"

        # Filters: type, user, event name, free text, each narrowing the same list without a fetch.
        debugger.page.select_option("#filter-type", "track")
        assert {row["type"] for row in debugger.visible_rows()} == {"track"}
        assert debugger.text("#shown") == f"Showing 2 of {expected}"
        debugger.page.select_option("#filter-type", "")
        debugger.page.fill("#filter-user", "anon-7f3a")
        assert [row["name"] for row in debugger.visible_rows()] == ["Welcome"]
        debugger.page.fill("#filter-user", "")
        debugger.page.fill("#filter-event", "pric")
        assert [row["name"] for row in debugger.visible_rows()] == ["Pricing"]
        debugger.page.fill("#filter-event", "")
        debugger.page.fill("#filter-text", "LYON")  # address.city, case-insensitive
        assert [row["type"] for row in debugger.visible_rows()] == ["identify"]
        debugger.page.fill("#filter-text", "")
        debugger.page.check("#filter-flagged")
        assert [row["flags"] for row in debugger.visible_rows()] == ["duplicate", "⚠ 1 warning"]
        debugger.page.uncheck("#filter-flagged")
        assert len(debugger.visible_rows()) == expected

        # The detail pane: the full payload, pretty-printed, and the raw batch it came in.
        first_sent = next(index for index, row in enumerate(stored) if row["type"] == "track" and not row["duplicate"])
        debugger.page.locator("#rows tr").nth(first_sent).click()
        debugger.until("!document.getElementById('detail-body').hidden")
        event = stored[first_sent]
        assert event["message"]["event"] == "Lead Qualified"
        assert "selected" in str(debugger.page.locator("#rows tr").nth(first_sent).get_attribute("class"))
        assert json.loads(debugger.text("#d-payload")) == event["message"]
        assert debugger.text("#d-payload") == json.dumps(event["message"], indent=2, ensure_ascii=False)
        debugger.until("document.getElementById('d-batch-meta').textContent !== ''")
        batch = json.loads(debugger.text("#d-batch"))
        assert event["message_id"] in [item["messageId"] for item in batch["batch"]]
        assert "writeKey" not in debugger.text("#d-batch")
        assert debugger.text("#d-batch-meta").startswith("POST /v1/batch · ")
        assert event["message_id"] in debugger.text("#d-meta")

        debugger.page.click("#copy-payload")
        debugger.until("document.getElementById('copy-payload').textContent === 'Copied'")
        assert json.loads(debugger.page.evaluate("navigator.clipboard.readText()")) == event["message"]
        debugger.page.click("#copy-batch")
        debugger.until("document.getElementById('copy-batch').textContent === 'Copied'")
        assert json.loads(debugger.page.evaluate("navigator.clipboard.readText()")) == batch

        debugger.open_row("age, email")
        assert "traits.age is a reserved trait and must be a number" in debugger.text("#d-flags")
        debugger.assert_healthy()
        debugger.settle()
        debugger.page.screenshot(path=str(artifacts / "debugger.png"))
    finally:
        debugger.close()


def test_markup_in_event_data_is_shown_as_text_and_never_runs(
    browser: Any, block: SegmentBlock, token: str, local_segment: Collector, artifacts: Path
) -> None:
    debugger = DebuggerPage(browser, local_segment.debugger_url)
    try:
        run_block(
            block,
            token,
            {
                "action": "identify",
                "userId": "{{User ID}}",
                "email": "{{Email}}",
                "traits": [{"key": "bio", "value": XSS}],
            },
            "identify-with-markup",
        )
        run_block(block, token, {"action": "track", "event": XSS, "userId": XSS}, "track-with-markup")
        block.shutdown(5.0)
        debugger.wait_for_rows(2)

        # In the list: the event name and the user id cells hold the markup as literal text.
        rows = debugger.visible_rows()
        assert rows[0]["name"] == XSS
        assert rows[0]["user"] == XSS
        # In the detail pane: the trait, JSON-escaped exactly as JSON.stringify writes it.
        debugger.open_row("bio, email")
        assert f'"bio": {json.dumps(XSS)}' in debugger.text("#d-payload")
        assert "<script>window.__xss=2</script>" in debugger.page.locator("#d-payload").inner_text()
        debugger.until("document.getElementById('d-batch-meta').textContent !== ''")
        assert json.loads(debugger.text("#d-batch"))["batch"][0]["traits"]["bio"] == XSS

        assert debugger.page.evaluate("window.__xss") is None  # neither onerror nor the script ran
        assert debugger.page.evaluate("document.querySelectorAll('body img[src=\"x\"], main script').length") == 0
        debugger.page.fill("#filter-text", "<script>")  # searching for it is searching text
        assert len(debugger.visible_rows()) == 2
        debugger.assert_healthy()
        debugger.settle()
        debugger.page.screenshot(path=str(artifacts / "debugger-markup.png"))
    finally:
        debugger.close()


def test_a_tracking_plan_violation_gets_its_badge_and_a_stopped_collector_is_reported(
    browser: Any, tmp_path: Path
) -> None:
    path = tmp_path / "kept.sqlite3"
    store = EventStore(path)
    store.add(
        [{"type": "track", "event": "Lead Qualifed", "userId": "user-1042", "messageId": str(uuid.uuid4())}],
        [[]],
        received_at=format_iso8601(datetime.now(UTC)),
        batch_id="seeded",
        write_key_fingerprint="sha256:000000000000",
        violations=[["event 'Lead Qualifed' is not in the tracking plan (did you mean 'Lead Qualified'?)"]],
    )
    store.close()
    collector = Collector(path).start()
    try:
        debugger = DebuggerPage(browser, collector.debugger_url)
        try:
            debugger.wait_for_rows(1)
            assert debugger.visible_rows()[0]["flags"] == "✕ 1 violation"
            debugger.until("document.getElementById('total-violations').textContent === '1'")
            debugger.open_row("Lead Qualifed")
            assert "is not in the tracking plan" in debugger.text("#d-flags")

            # Clearing the collector empties the page; what arrives next shows up as usual.
            assert requests.delete(collector.url + "/events", timeout=5).status_code == 200
            debugger.until("document.querySelectorAll('#rows tr').length === 0")
            assert debugger.page.locator("#empty").is_visible()
            assert debugger.page.locator("#detail-body").is_hidden()
            event = {"type": "track", "event": "After Clear", "userId": "u-2", "messageId": str(uuid.uuid4())}
            assert library_post(WRITE_KEY, host=collector.url, timeout=5, batch=[event]).status_code == 200
            debugger.wait_for_rows(1)
            assert [row["name"] for row in debugger.visible_rows()] == ["After Clear"]

            collector.stop()
            debugger.until("document.getElementById('status').classList.contains('down')")
            assert debugger.text("#status-text") == "Collector unreachable, retrying…"
            assert debugger.errors == []
        finally:
            debugger.close()
    finally:
        collector.stop()
