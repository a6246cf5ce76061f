#!/usr/bin/env python3
"""The web console in a real browser: headless Chromium from Debian's packages, driven by Playwright.

Runs the console's flow against a server and fails on any browser console error, page error, failed
request or unexpected error answer. Screenshots of each page go to target/console-screenshots/<mode>/.

  --mode local   starts target/debug/event-hooks-local (admin token set, free loopback port) and runs
                 the whole flow: sign in, create a webhook (a field error for a bad URL first), see it
                 listed, test and ping it, emit an event with the API and watch the delivery in the
                 log, resend it, disable and delete it, a lambda hook whose Lua syntax error shows at
                 the editor, the dead letters page (one dead letter made and redriven), the overview's
                 charts, and the hooks page at phone width.
  --mode remote  runs the flow the admin function can serve against --base (started by
                 tests/integration/console_lambda.rs: the admin-api and probe Lambda binaries behind an
                 HTTP front, on moto): everything but the delivery log and dead letters, which need
                 the dispatch function.
  --mode stack   runs the flow against --base with --token: the simulated AWS stack's gateway
                 (tests/simstack, where the dispatch function runs too): everything but the dead
                 letters, which only the local server lists.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from playwright.sync_api import Page, expect, sync_playwright
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "console-test-token"
# Upper bound for anything the page waits for (a delivery to show up, a page to render).
WAIT_MS = 20_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Receiver:
    """A webhook target on 127.0.0.1 (pytest-httpserver) that records what it gets; 410 on /gone."""

    def __init__(self) -> None:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
        self.received: list[tuple[str, str]] = []
        self.server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
        self.server.expect_request(re.compile(".*"), method="POST").respond_with_handler(self._post)
        self.server.start()
        self.url = f"http://127.0.0.1:{self.server.port}"

    def _post(self, request: Request) -> Response:
        self.received.append((request.path, request.get_data(as_text=True)))
        status = 410 if request.path.startswith("/gone") else 200
        return Response(b'{"received": true, "by": "console-test receiver"}', status=status,
                        content_type="application/json")

    def close(self) -> None:
        self.server.stop()


def api(base: str, method: str, path: str, body=None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("Kong-Admin-Token", TOKEN)
    if data is not None:
        request.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read().decode()
            return response.status, json.loads(text) if text else {}
    except urllib.error.HTTPError as err:
        text = err.read().decode()
        return err.code, json.loads(text) if text else {}


class Watch:
    """Fails the run on browser console errors, page errors, failed requests, and error answers
    other than those a step expects (`expect_error`)."""

    def __init__(self, page: Page) -> None:
        self.problems: list[str] = []
        self.allowed: list[tuple[int, str, str]] = []  # (status, method, path prefix)
        self.seen_allowed: list[str] = []
        page.on("console", self.on_console)
        page.on("pageerror", lambda err: self.problems.append(f"page error: {err}"))
        page.on("requestfailed", self.on_failed)
        page.on("response", self.on_response)

    def expect_error(self, status: int, method: str, path: str) -> None:
        self.allowed.append((status, method, path))

    def clear_expected(self) -> None:
        self.allowed.clear()

    def is_allowed(self, status: int, method: str, url: str) -> bool:
        path = "/" + url.split("/", 3)[3] if url.count("/") >= 3 else url
        return any(s == status and m == method and path.startswith(p) for s, m, p in self.allowed)

    def on_console(self, message) -> None:
        if message.type not in ("error", "warning"):
            return
        text = message.text
        url = (message.location or {}).get("url", "")
        # Chromium logs every error answer as "Failed to load resource"; those the flow expects
        # are checked by on_response instead.
        if text.startswith("Failed to load resource: the server responded with a status of"):
            status = int(text.split("status of ")[1].split()[0])
            if any(s == status and p in url for s, _, p in self.allowed):
                return
        self.problems.append(f"console {message.type}: {text} ({url})")

    def on_failed(self, request) -> None:
        self.problems.append(f"request failed: {request.method} {request.url}: {request.failure}")

    def on_response(self, response) -> None:
        if response.status < 400:
            return
        method = response.request.method
        if self.is_allowed(response.status, method, response.url):
            self.seen_allowed.append(f"{response.status} {method} {response.url}")
            return
        self.problems.append(f"unexpected answer {response.status} to {method} {response.url}")

    def check(self, step: str) -> None:
        if self.problems:
            raise AssertionError(f"after {step}: " + "; ".join(self.problems))


class Flow:
    def __init__(self, page: Page, base: str, shots: Path, receiver: Receiver, mode: str,
                 docs: Path | None = None) -> None:
        self.page, self.base, self.shots, self.receiver = page, base, shots, receiver
        # The delivery log needs a dispatcher; the dead letters page, the local server.
        self.with_deliveries = mode in ("local", "stack")
        self.with_dead_letters = mode == "local"
        self.docs = docs
        self.watch = Watch(page)
        self.steps: list[str] = []

    def shot(self, name: str, locator=None) -> None:
        target = locator if locator is not None else self.page
        target.screenshot(path=str(self.shots / f"{name}.png"), **({} if locator is not None else {"full_page": True}))

    def step(self, name: str) -> None:
        self.watch.check(name)
        self.steps.append(name)
        print(f"  ok  {name}", flush=True)

    def heading(self, text: str, focused: bool = True):
        heading = self.page.get_by_role("heading", level=1, name=text)
        expect(heading).to_be_visible(timeout=WAIT_MS)
        if focused:
            # Each page moves focus to its heading, for keyboard and screen-reader users.
            expect(heading).to_be_focused()
        return heading

    def nav(self, name: str) -> None:
        self.page.get_by_role("navigation", name="Main").get_by_role("link", name=name, exact=True).click()

    def all_controls_labelled(self) -> None:
        unlabelled = self.page.evaluate(
            """() => [...document.querySelectorAll('main input, main select, main textarea')]
                 .filter((c) => c.type !== 'hidden' && !(c.labels && c.labels.length) && !c.getAttribute('aria-label'))
                 .map((c) => c.outerHTML.slice(0, 80))"""
        )
        assert not unlabelled, f"controls without a label: {unlabelled}"

    def run(self) -> None:
        page = self.page
        # Signing in: the console loads without a token; the API answers 401 until it has one.
        self.watch.expect_error(401, "GET", "/event-hooks?size=1")
        page.goto(self.base + "/")
        assert page.url.endswith("/console/index.html"), page.url
        self.heading("Sign in", focused=False)
        self.shot("sign-in")
        token = page.get_by_label("Admin token")
        expect(token).to_be_focused()
        token.fill("wrong-token")
        token.press("Enter")
        expect(page.locator(".field-error")).to_contain_text("Invalid RBAC credentials", timeout=WAIT_MS)
        expect(token).to_have_attribute("aria-invalid", "true")
        token.fill(TOKEN)
        page.get_by_role("button", name="Sign in").click()
        self.heading("Overview")
        self.watch.clear_expected()
        assert page.evaluate("sessionStorage.getItem('event-hooks.admin-token')") == TOKEN
        self.step("sign in (a wrong token shown at the field first)")

        # A webhook through the form: a bad URL gets the server's error at the URL field.
        # While the form is incomplete the live preview gets 400s too: expected.
        self.watch.expect_error(400, "POST", "/event-hooks")
        self.nav("New hook")
        self.heading("New hook")
        self.all_controls_labelled()
        # Live preview off: the field error must come from the create itself.
        page.get_by_label("Preview as I type").uncheck()
        page.get_by_label("Name").fill("orders-webhook")
        page.get_by_label("Source").fill("crud")
        page.get_by_label("Source").dispatch_event("change")
        page.get_by_label("Event", exact=True).select_option("consumers")
        page.get_by_label("URL").fill("not a url")
        page.get_by_role("button", name="Create hook").click()
        expect(page.locator("#status")).to_contain_text("Not saved: schema violation", timeout=WAIT_MS)
        url_error = page.locator('[data-field="config.url"]').locator("xpath=..").locator(".field-error")
        expect(url_error).to_have_text("missing scheme in url", timeout=WAIT_MS)
        expect(page.get_by_label("URL")).to_have_attribute("aria-invalid", "true")
        expect(page.get_by_label("URL")).to_be_focused()
        self.shot("new-hook-field-error")
        self.step("field error for a bad URL, at the URL field")

        page.get_by_label("URL").fill(self.receiver.url + "/hook")
        # The secret is masked until revealed, and masked again on a second press.
        secret = page.get_by_label("Secret", exact=True)
        secret.fill("console-secret")
        expect(secret).to_have_attribute("type", "password")
        reveal = page.get_by_role("button", name="Reveal")
        reveal.click()
        expect(secret).to_have_attribute("type", "text")
        expect(page.get_by_role("button", name="Hide")).to_have_attribute("aria-pressed", "true")
        page.get_by_role("button", name="Hide").click()
        expect(secret).to_have_attribute("type", "password")
        page.get_by_role("button", name="Preview now").click()
        expect(page.get_by_label("Preview result")).to_contain_text(self.receiver.url + "/hook", timeout=WAIT_MS)
        page.get_by_role("button", name="Create hook").click()
        self.heading("orders-webhook")
        self.watch.clear_expected()
        hook_id = page.url.rsplit("/", 1)[1]
        status, hook = api(self.base, "GET", f"/event-hooks/{hook_id}")
        assert status == 200 and hook["config"]["url"] == self.receiver.url + "/hook", hook
        self.step("webhook created through the form (with a live preview of its request)")

        self.nav("Hooks")
        self.heading("Hooks")
        expect(page.get_by_role("link", name="orders-webhook")).to_be_visible()
        # Filters: a source that matches nothing, then the handler filter.
        page.get_by_label("Source").fill("balancer")
        page.get_by_role("button", name="Apply filters").click()
        expect(page.get_by_text("No hooks match.")).to_be_visible(timeout=WAIT_MS)
        page.get_by_role("link", name="Clear").click()
        # Each render replaces the page: wait for the new one before using its form.
        expect(page.get_by_role("link", name="orders-webhook")).to_be_visible(timeout=WAIT_MS)
        page.get_by_label("Handler").select_option("webhook")
        page.get_by_label("State").select_option("false")
        page.get_by_role("button", name="Apply filters").click()
        expect(page.get_by_role("link", name="orders-webhook")).to_have_count(0, timeout=WAIT_MS)
        expect(page.get_by_text("No hooks match.")).to_be_visible(timeout=WAIT_MS)
        expect(page.get_by_label("State")).to_have_value("false")
        page.get_by_label("State").select_option("true")
        page.get_by_role("button", name="Apply filters").click()
        expect(page.get_by_role("link", name="orders-webhook")).to_be_visible(timeout=WAIT_MS)
        assert "handler=webhook" in page.url and "enabled=true" in page.url, page.url
        self.all_controls_labelled()
        self.shot("hooks")
        if self.docs:
            page.locator("main").screenshot(path=str(self.docs / "console-hooks.png"))
        self.step("listed, and found through the filters")

        page.get_by_role("link", name="orders-webhook").click()
        self.heading("orders-webhook")
        before = len(self.receiver.received)
        page.get_by_role("button", name="Send test").click()
        expect(page.get_by_role("heading", name="Test result")).to_be_visible(timeout=WAIT_MS)
        expect(page.locator("pre").filter(has_text='"status": 200')).to_have_count(1)
        assert any(path == "/hook" for path, _ in self.receiver.received[before:]), self.receiver.received
        page.get_by_role("button", name="Ping").click()
        expect(page.get_by_role("heading", name="Ping sent")).to_be_visible(timeout=WAIT_MS)
        expect(page.locator("pre").filter(has_text='"event": "ping"')).to_have_count(1)
        self.shot("hook-test-and-ping")
        self.step("test and ping, request and response shown")

        if self.with_deliveries:
            self.delivery_log(hook_id)

        # Disable, then delete with a confirmation (cancelled once).
        page.get_by_role("button", name="Disable").click()
        expect(page.get_by_role("button", name="Enable")).to_be_visible(timeout=WAIT_MS)
        assert api(self.base, "GET", f"/event-hooks/{hook_id}")[1]["enabled"] is False
        page.get_by_role("button", name="Delete").click()
        dialog = page.get_by_role("dialog")
        expect(dialog).to_be_visible()
        page.keyboard.press("Escape")
        expect(dialog).to_have_count(0)
        assert api(self.base, "GET", f"/event-hooks/{hook_id}")[0] == 200
        page.get_by_role("button", name="Delete").click()
        self.shot("delete-confirmation")
        page.get_by_role("dialog").get_by_role("button", name="Delete hook").click()
        self.heading("Hooks")
        expect(page.get_by_role("link", name="orders-webhook")).to_have_count(0)
        assert api(self.base, "GET", f"/event-hooks/{hook_id}")[0] == 404
        self.step("disabled, then deleted after a confirmation (Escape cancels)")

        # A lambda hook with a Lua syntax error: the error shows at the editor.
        self.watch.expect_error(400, "POST", "/event-hooks")
        self.nav("New hook")
        self.heading("New hook")
        page.get_by_label("Preview as I type").uncheck()
        page.get_by_label("Source").fill("crud")
        page.get_by_label("Handler").select_option("lambda")
        editor = page.get_by_label("Function 1 (Lua)")
        editor.fill("return function(data)\n  return { op = data.operation \nend")
        page.get_by_role("button", name="Create hook").click()
        expect(page.locator("#status")).to_contain_text("Not saved: schema violation", timeout=WAIT_MS)
        error = editor.locator("xpath=..").locator(".field-error")
        expect(error).to_contain_text("Error parsing function", timeout=WAIT_MS)
        expect(editor).to_have_attribute("aria-invalid", "true")
        self.shot("lambda-syntax-error")
        editor.fill("return function(data)\n  return { op = data.operation }\nend")
        page.get_by_role("button", name="Preview now").click()
        expect(page.get_by_label("Preview result")).to_contain_text('"op": "sample operation"', timeout=WAIT_MS)
        expect(page.locator(".field-error")).to_have_count(0)
        self.shot("lambda-preview")
        self.watch.clear_expected()
        self.step("lambda hook: syntax error at the editor, then a live preview of its result")

        self.sources()

        if self.with_dead_letters:
            self.dead_letters()

        self.nav("Overview")
        self.heading("Overview")
        expect(page.locator("svg.chart")).to_have_count(4)
        self.step("overview charts")

        # Phone width: nothing wider than the screen but the scrolling tables.
        page.set_viewport_size({"width": 390, "height": 844})
        self.nav("Hooks")
        self.heading("Hooks")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the page is {width}px wide at 390px"
        self.shot("hooks-phone")
        # Keyboard: the skip link is the first stop and moves to the content; links follow.
        first = page.evaluate("""() => [...document.querySelectorAll('a[href], button, input, select, textarea')]
            .find((el) => !el.disabled && !el.hidden && el.tabIndex >= 0).textContent""")
        assert first == "Skip to content", first
        page.get_by_role("link", name="Skip to content").focus()
        page.keyboard.press("Enter")
        expect(page.locator("main")).to_be_focused()
        self.heading("Hooks", focused=False)
        page.keyboard.press("Tab")
        expect(page.get_by_role("link", name="+ New hook")).to_be_focused()
        page.keyboard.press("Enter")
        self.heading("New hook")
        self.step("phone width and keyboard")

    def delivery_log(self, hook_id: str) -> None:
        page = self.page
        status, accepted = api(self.base, "POST", "/events", {
            "source": "crud", "event": "consumers", "data": {"operation": "create", "entity": {"id": "c-1"}},
        })
        assert status == 202, (status, accepted)
        log = page.locator("#deliveries")
        row = log.locator("tr", has_text="crud consumers")
        for _ in range(300):
            log.get_by_role("button", name="Refresh").click()
            if row.filter(has_text="delivered").count():
                break
            page.wait_for_timeout(200)
        expect(row.filter(has_text="delivered")).to_have_count(1)
        delivery = row.get_attribute("data-delivery")
        expect(log.locator(f'tr[data-delivery="{delivery}"]')).to_have_count(1)
        expect(row).to_contain_text("200")
        expect(row).to_contain_text("console-test receiver")
        self.shot("delivery-log", log)
        self.shot("hook")
        self.step("event emitted with the API, its delivery in the log")

        log.get_by_role("button", name=f"Resend delivery {delivery}").click()
        expect(page.locator("#status")).to_contain_text("attempt 2", timeout=WAIT_MS)
        attempts = log.locator(f'tr[data-delivery="{delivery}"]')
        for _ in range(300):
            log.get_by_role("button", name="Refresh").click()
            if attempts.count() == 2:
                break
            page.wait_for_timeout(200)
        expect(attempts).to_have_count(2)
        log.get_by_label("Status").select_option("failed")
        expect(attempts).to_have_count(0)
        log.get_by_label("Status").select_option("delivered")
        expect(attempts).to_have_count(2)
        self.shot("delivery-log-resent", log)
        if self.docs:
            log.screenshot(path=str(self.docs / "console-delivery-log.png"))
        self.step("resent: the second attempt in the log; status filter")

        # The overview counts them (while the hook exists: the series is read per hook).
        self.nav("Overview")
        self.heading("Overview")
        expect(page.locator("svg.chart")).to_have_count(4)
        attempts = page.locator(".tile").filter(has_text="Attempts").locator(".value")
        assert int(attempts.inner_text()) >= 3, attempts.inner_text()  # ping, event, resend
        assert page.locator("svg.chart rect.bar").count() == 3 * 60
        assert page.locator("svg.chart circle").count() >= 2  # p50 and p99 of a minute
        self.shot("overview")
        self.step("overview: attempts and latency of the last hour as charts")
        page.go_back()
        self.heading("orders-webhook")

    def sources(self) -> None:
        page = self.page
        self.nav("Sources")
        self.heading("Sources")
        self.all_controls_labelled()
        # A unique field that is not a field: the server's error at the Unique field.
        self.watch.expect_error(400, "PUT", "/event-hooks/sources/shop/order-paid")
        self.watch.expect_error(405, "PUT", "/event-hooks/sources/crud/")
        page.get_by_label("Source", exact=True).fill("shop")
        page.get_by_label("Event", exact=True).fill("order-paid")
        page.get_by_label("Fields", exact=True).fill("order_id, amount")
        page.get_by_label("Unique", exact=True).fill("nope")
        page.get_by_role("button", name="Register event").click()
        unique = page.get_by_label("Unique", exact=True)
        expect(unique).to_have_attribute("aria-invalid", "true", timeout=WAIT_MS)
        unique.fill("order_id")
        page.get_by_label("Description", exact=True).fill("An order was paid")
        page.get_by_role("button", name="Register event").click()
        row = page.locator("main tbody tr", has_text="order-paid")
        expect(row).to_contain_text("An order was paid", timeout=WAIT_MS)
        expect(page.locator("details.source summary").filter(has_text="shop")).to_contain_text("custom")
        status, spec = api(self.base, "GET", "/event-hooks/sources/shop/order-paid")
        assert status == 200 and spec["data"]["unique"] == ["order_id"], spec
        # Built-in sources are read-only.
        page.get_by_label("Source", exact=True).fill("crud")
        page.get_by_label("Event", exact=True).fill("mine")
        page.get_by_role("button", name="Register event").click()
        expect(page.locator(".field-error")).to_have_text("built-in sources are read-only", timeout=WAIT_MS)
        self.shot("sources")
        row.get_by_role("button", name="Remove shop order-paid").click()
        page.get_by_role("dialog").get_by_role("button", name="Remove event").click()
        expect(row).to_have_count(0, timeout=WAIT_MS)
        assert api(self.base, "GET", "/event-hooks/sources/shop/order-paid")[0] == 404
        self.watch.clear_expected()
        self.step("sources: a custom event registered (its error at the field first), then removed")

    def dead_letters(self) -> None:
        page = self.page
        # A hook whose target answers 410 Gone is disabled, and its next delivery dead-lettered
        # ("hook disabled"): one dead letter to inspect and redrive.
        status, gone = api(self.base, "POST", "/event-hooks", {
            "source": "balancer", "event": "health", "handler": "webhook",
            "config": {"url": self.receiver.url + "/gone"},
        })
        assert status == 201, gone
        for _ in range(2):
            assert api(self.base, "POST", "/events", {"source": "balancer", "event": "health", "data": {}})[0] == 202
        self.nav("Dead letters")
        self.heading("Dead letters")
        rows = page.locator("main tbody tr")
        for _ in range(100):
            if rows.count():
                break
            page.wait_for_timeout(200)
            page.reload()
            self.heading("Dead letters")
        expect(rows.first).to_be_visible()
        first = rows.first
        first.get_by_text("Inspect").click()
        expect(first.locator("pre")).to_be_visible()
        self.shot("dead-letters")
        total = rows.count()
        first.get_by_role("button", name="Redrive").click()
        expect(page.locator("#status")).to_contain_text("1 message(s) back", timeout=WAIT_MS)
        assert api(self.base, "GET", "/dead-letters")[1]["total"] <= total
        api(self.base, "DELETE", f"/event-hooks/{gone['id']}")
        self.step("dead letters listed with reasons, inspected, one redriven")


def start_local(tmp: Path) -> tuple[subprocess.Popen, str]:
    binary = ROOT / "target" / "debug" / "event-hooks-local"
    port = free_port()
    log = open(tmp / "server.log", "w")
    process = subprocess.Popen(
        [str(binary), "--listen", f"127.0.0.1:{port}", "--data-dir", str(tmp / "data"),
         "--admin-token", TOKEN, "--retry-schedule", "1s,1s", "--workers", "2"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            with urllib.request.urlopen(base + "/status", timeout=1):
                return process, base
        except OSError:
            if process.poll() is not None:
                raise SystemExit(f"the server exited: {(tmp / 'server.log').read_text()}") from None
            time.sleep(0.05)
    raise SystemExit("the server did not answer")


def main() -> int:
    global TOKEN  # --token replaces the default for every call the flow makes
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["local", "remote", "stack"], default="local")
    parser.add_argument("--base", help="the console's server (remote and stack modes)")
    parser.add_argument("--token", default=TOKEN, help="the admin token (the stack's is generated)")
    parser.add_argument("--docs", type=Path, help="also save the README's screenshots there (docs/)")
    args = parser.parse_args()
    TOKEN = args.token
    chromium = shutil.which("chromium")
    if not chromium:
        raise SystemExit("chromium is missing: run scripts/system-deps.sh")
    shots = ROOT / "target" / "console-screenshots" / args.mode
    shots.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    receiver = Receiver()
    process = None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            if args.mode == "local":
                process, base = start_local(Path(tmp))
            else:
                base = args.base
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
                context = browser.new_context(viewport={"width": 1280, "height": 900})
                page = context.new_page()
                page.set_default_timeout(WAIT_MS)
                flow = Flow(page, base, shots, receiver, args.mode, docs=args.docs)
                try:
                    flow.run()
                finally:
                    browser.close()
        finally:
            receiver.close()
            if process is not None:
                process.terminate()
                process.wait(timeout=10)
    print(f"console {args.mode}: {len(flow.steps)} steps passed in {time.monotonic() - started:.1f}s; "
          f"screenshots in {shots.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
