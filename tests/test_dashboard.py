"""The dashboard in a real headless Chromium: the walk a new user makes, from a flagged pump to a closed
work order, with a second browser watching the board update live, and the role checks.

Screenshots of every page land in the test's temporary directory (``PMGW_SCREENSHOTS`` copies them
somewhere to look at)."""

from __future__ import annotations

import json
import os
import re
import shutil
import math
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import paho.mqtt.publish as publish
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from gateway.broker import Mosquitto
from tests.conftest import gateway_document, wait_until
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS

PASSWORD = "correct horse battery"
HEALTHY = {"vibration": 2.0, "bearing_temp": 55.0, "flow": 120.0, "pressure": 4.0}


def plant(port: int, tmp_path: Path) -> dict[str, Any]:
    document = gateway_document(port, tmp_path, plant={"name": "North", "timezone": "Europe/Berlin"})
    document["detectors"] = {"warmup_samples": 60, "checkpoint_path": str(tmp_path / "detectors.ckpt")}
    return document


def publish_history(port: int, start: float, fault_at: float) -> None:
    """Five-second samples of three devices up to ``fault_at``, then pump-01's vibration over its 7.1 limit."""
    messages = []
    t = start
    while t < fault_at + 60:
        for device in ("pump-01", "pump-02", "motor-01"):
            metrics = {k: v * (1 + 0.01 * ((int(t) // 5) % 7 - 3)) for k, v in HEALTHY.items()}
            if device == "pump-01" and t >= fault_at:
                metrics["vibration"] = 9.5
            messages.append((f"plant/north/{device}/telemetry", json.dumps({"ts": t, "metrics": metrics}), 1, False))
        t += 5
    for chunk in range(0, len(messages), 500):
        publish.multiple(messages[chunk:chunk + 500], hostname="127.0.0.1", port=port)


def sign_in(page: Page, url: str, username: str) -> None:
    page.goto(f"{url}/")
    page.get_by_label("User").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#who")).to_contain_text(username)


def watched(browser: Browser, url: str, errors: list[str], **context_options: Any) -> Page:
    context = browser.new_context(viewport={"width": 1366, "height": 768}, **context_options)
    page = context.new_page()

    def only_the_gateway(route: Any) -> None:
        if route.request.url.startswith(url) or route.request.url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            errors.append(f"request off the gateway: {route.request.url}")
            route.abort()

    page.route("**/*", only_the_gateway)
    page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
    page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
    return page


def shoot(page: Page, directory: Path, name: str, part: Any = None) -> None:
    """The whole page, or one part of it: a full-page shot resizes the viewport and scrolls, so in the
    middle of filling a form only the part is taken."""
    path = directory / f"{name}.png"
    if part is None:
        page.screenshot(path=str(path), full_page=True)
    else:
        part.screenshot(path=str(path))
    if os.environ.get("PMGW_SCREENSHOTS"):
        Path(os.environ["PMGW_SCREENSHOTS"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(os.environ["PMGW_SCREENSHOTS"]) / path.name)


@pytest.fixture
def running_plant(mosquitto: Mosquitto, tmp_path: Path, start_gateway) -> Any:
    gw = start_gateway(plant(mosquitto.port, tmp_path))
    identities = gw.gateway.identities
    identities.add_user("dora", PASSWORD, "dispatcher")
    identities.add_user("anna", PASSWORD, "technician", engineer_id="eng-mechanical")
    identities.add_user("vic", PASSWORD, "viewer")
    now = time.time()
    fault_at = now - 120
    publish_history(mosquitto.port, now - 900, fault_at)
    orders = wait_until(lambda: gw.items("/work-orders", device_id="pump-01"), timeout=30, what="a work order for pump-01")
    return gw, orders[0], fault_at


def test_walk_from_a_flagged_pump_to_a_closed_work_order(running_plant: Any, tmp_path: Path) -> None:
    gw, order, fault_at = running_plant
    code = order["code"]
    assert order["assigned_engineer_id"] == "eng-mechanical"
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = watched(browser, gw.url, errors)
        sign_in(page, gw.url, "dora")

        # Fleet: the faulty pump is flagged with its open work order; the others are healthy.
        pump = page.locator('tr[data-device="pump-01"]')
        expect(pump).to_have_attribute("data-health", "work_order")
        expect(pump).to_contain_text("work order")
        expect(page.locator('tr[data-device="pump-02"]')).to_have_attribute("data-health", "healthy")
        expect(page.locator('[data-connector="test-broker"]')).to_contain_text("connected")
        expect(page.locator("#clock")).to_contain_text("Europe/Berlin")
        shoot(page, tmp_path, "fleet")

        # Device: the anomaly mark sits on the vibration chart at the fault's time.
        pump.get_by_role("link").first.click()
        chart = page.locator('figure[data-metric="vibration"]')
        expect(chart.locator("canvas")).to_have_count(1)
        marks = chart.locator(".mark.anomaly")
        expect(marks.first).to_be_attached()
        first = min(range(marks.count()), key=lambda i: float(marks.nth(i).get_attribute("data-at")))
        at = float(marks.nth(first).get_attribute("data-at"))
        assert fault_at <= at <= fault_at + 30, (at, fault_at)  # raised within the limit rule's on-delay
        assert marks.nth(first).get_attribute("data-work-order") == code
        expect(page.get_by_text("Calibrated: threshold")).to_be_visible()
        shoot(page, tmp_path, "device")

        # Its work order: why this engineer, every candidate graded, and the chain verified.
        page.get_by_role("link", name=code).first.click()
        expect(page.locator(".explanation")).to_contain_text("scores best")
        candidates = page.locator("table.candidates tbody tr")
        expect(candidates.first).to_contain_text("Anna")
        expect(page.locator(".excluded")).to_contain_text("lacks skill mechanical")
        expect(page.locator('[data-chain="valid"]')).to_be_visible()
        shoot(page, tmp_path, "work-order")
        page.goto(f"{gw.url}/#/board")
        expect(page.locator(f'[data-state="DISPATCHED"] [data-code="{code}"]')).to_be_visible()
        expect(page.locator(f'[data-code="{code}"] .sla')).to_contain_text("%")
        shoot(page, tmp_path, "board")

        # Anna, the assigned engineer, in another browser: accepts and works it to DONE through the forms.
        anna = watched(browser, gw.url, errors)
        sign_in(anna, gw.url, "anna")
        anna.goto(f"{gw.url}/#/work-orders/{code}")
        anna.get_by_role("button", name="Accept").click()
        expect(anna.locator(".timeline")).to_contain_text("accepted")
        for target in ("EN_ROUTE", "ON_SITE", "IN_PROGRESS"):
            anna.locator(f'form[data-target="{target}"] button[type="submit"]').click()
            expect(anna.locator(".state")).to_have_text(target)
        done = anna.locator('form[data-target="DONE"]')
        done.get_by_label("Resolution").fill("replaced the drive-end bearing")
        done.get_by_label("Failure mode").select_option("VIB")
        done.get_by_label("Failure mechanism").select_option("2.4 wear")
        done.get_by_label("Failure cause").select_option("wear and tear")
        done.get_by_label("Maintainable item").select_option("bearing")
        done.get_by_label("Parts (one per line)").fill("bearing 6309-2Z\ngrease")
        done.get_by_label("Labour (hours)").fill("2.5")
        shoot(anna, tmp_path, "work-order-done-form", done)
        done.get_by_role("button", name="Move to DONE").click()
        expect(anna.locator(".state")).to_have_text("DONE")
        expect(anna.locator('[data-chain="valid"]')).to_be_visible()

        # She signs it off with a signature drawn on the pad; the issued report downloads, the very bytes stored.
        sign = anna.locator("form.sign-off")
        expect(sign.get_by_label("Sign as")).to_have_value("engineer")
        box = sign.locator("canvas.signature-pad").bounding_box()
        anna.mouse.move(box["x"] + 20, box["y"] + box["height"] / 2)
        anna.mouse.down()
        for step in range(1, 30):
            anna.mouse.move(box["x"] + 20 + step * 12, box["y"] + box["height"] / 2 + 25 * math.sin(step / 3))
        anna.mouse.up()
        shoot(anna, tmp_path, "sign-off", sign)
        sign.get_by_role("button", name="Sign", exact=True).click()
        expect(anna.locator('.timeline [data-kind="signed"]')).to_contain_text("engineer sign-off by Anna")
        expect(anna.locator("form.sign-off")).to_have_count(0)  # signed once
        expect(anna.locator('[data-signatures="valid"]')).to_contain_text("1 signature")
        with anna.expect_download() as download:
            anna.locator('[data-report="issued"]').click()
        issued = Path(download.value.path()).read_bytes()
        assert issued.startswith(b"%PDF") and issued == gw.http.get(f"/work-orders/{code}/report.pdf").content
        shoot(anna, tmp_path, "work-order-signed")

        # Dora's board moved the card without a reload (the stream).
        expect(page.locator(f'[data-state="DONE"] [data-code="{code}"]')).to_be_visible(timeout=10_000)
        expect(page.locator(f'[data-code="{code}"]')).to_have_count(1)  # and only there
        shoot(page, tmp_path, "board-after")
        browser.close()
    closed = gw.get(f"/work-orders/{code}")
    assert closed["state"] == "DONE" and closed["maintainable_item"] == "bearing"
    assert closed["closure"]["parts"] == ["bearing 6309-2Z", "grease"] and closed["closure"]["labour_hours"] == 2.5
    assert [e["actor"] for e in closed["events"] if e["kind"] in ("en_route", "done", "signed")] == ["anna"] * 3
    [signature] = [e["data"]["content"] for e in closed["events"] if e["kind"] == "signed"]
    assert signature["statement"] == "engineer" and signature["drawing_sha256"]
    assert errors == []


def test_pages_follow_the_role(running_plant: Any, tmp_path: Path) -> None:
    gw, order, _ = running_plant
    code = order["code"]
    gw.gateway.identities.add_user("tim", PASSWORD, "technician", engineer_id="eng-far-mechanical")
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        viewer = watched(browser, gw.url, errors)
        sign_in(viewer, gw.url, "vic")
        viewer.goto(f"{gw.url}/#/work-orders/{code}")
        expect(viewer.locator(".explanation")).to_be_visible()
        assert viewer.locator("form.step").count() == 0
        assert viewer.get_by_role("button", name="Accept").count() == 0
        shoot(viewer, tmp_path, "viewer-work-order")
        viewer.goto(f"{gw.url}/#/device/pump-01")
        expect(viewer.locator('figure[data-metric="vibration"]')).to_be_visible()
        assert viewer.get_by_role("button", name="Set state").count() == 0
        viewer.goto(f"{gw.url}/#/engineers")
        expect(viewer.locator("svg.plot")).to_be_visible()
        expect(viewer.locator('tr[data-engineer="eng-mechanical"]')).to_contain_text("hidden for your role")
        shoot(viewer, tmp_path, "viewer-engineers")

        # A technician who is not assigned sees the order but may not move it or answer its offer.
        other = watched(browser, gw.url, errors)
        sign_in(other, gw.url, "tim")
        other.goto(f"{gw.url}/#/work-orders/{code}")
        expect(other.locator(".explanation")).to_be_visible()
        assert other.locator("form.step").count() == 0
        assert other.get_by_role("button", name="Accept").count() == 0

        # The dispatcher sees contacts and locations, and puts an asset into maintenance with a reason.
        dora = watched(browser, gw.url, errors)
        sign_in(dora, gw.url, "dora")
        dora.goto(f"{gw.url}/#/engineers")
        expect(dora.locator('tr[data-engineer="eng-mechanical"]')).not_to_contain_text("hidden for your role")
        dora.goto(f"{gw.url}/#/device/pump-02")
        dora.get_by_label("Reason").fill("seal change")
        dora.get_by_role("button", name="Set state").click()
        expect(dora.get_by_text("maintenance until")).to_be_visible()
        dora.goto(f"{gw.url}/#/fleet")
        expect(dora.locator('tr[data-device="pump-02"]')).to_have_attribute("data-health", "maintenance")
        shoot(dora, tmp_path, "dispatcher-fleet")
        # A tablet in portrait: nothing wider than the screen but the board's own scroller.
        dora.set_viewport_size({"width": 820, "height": 1180})
        for page_name in ("fleet", "board", f"work-orders/{code}", "engineers"):
            dora.goto(f"{gw.url}/#/{page_name}")
            expect(dora.locator("main h1")).to_be_visible()
            dora.wait_for_timeout(300)
            assert dora.evaluate("document.documentElement.scrollWidth") <= 820, page_name
        shoot(dora, tmp_path, "tablet-engineers")
        dora.set_viewport_size({"width": 1366, "height": 768})
        dora.goto(f"{gw.url}/#/fleet")
        # Keyboard: a page change moves the focus to the content; the skip link does too, and from
        # there Tab reaches the filters; the navigation is just before the content; Enter follows a link.
        # The focus stays on <main> from the page before while the fleet loads: wait for its rows, or
        # the rendered page takes the focus back in the middle of the key presses (seen on CI).
        expect(dora.locator('tr[data-device="pump-02"]')).to_be_visible()
        expect(dora.locator("main")).to_be_focused()
        dora.locator(".skip").focus()
        dora.keyboard.press("Enter")
        expect(dora.locator("main")).to_be_focused()
        dora.get_by_role("button", name="Sign out").focus()
        dora.keyboard.press("Tab")
        expect(dora.get_by_label("site")).to_be_focused()
        dora.keyboard.press("Shift+Tab")
        expect(dora.get_by_role("button", name="Sign out")).to_be_focused()
        dora.keyboard.press("Shift+Tab")
        expect(dora.locator('nav a[data-page="settings"]')).to_be_focused()  # a dispatcher edits ticketing
        dora.keyboard.press("Shift+Tab")
        dora.keyboard.press("Shift+Tab")
        expect(dora.locator('nav a[data-page="board"]')).to_be_focused()
        dora.keyboard.press("Enter")
        expect(dora.get_by_role("heading", name="Work orders")).to_be_visible()
        browser.close()
    assert gw.gateway.ticketing.asset_state("pump-02")["actor"] == "dora"
    assert errors == []


def plant_input(epoch: float) -> str:
    """What a datetime-local input holds for ``epoch`` in the plant's zone."""
    return datetime.fromtimestamp(epoch, ZoneInfo("Europe/Berlin")).strftime("%Y-%m-%dT%H:%M")


def drag(page: Page, over: Any, start: float, end: float) -> None:
    """A mouse drag from ``start`` to ``end`` (fractions of the plot's width). Dispatched as DOM events
    because Chromium's automation sends moves without ``movementX``, and uPlot ignores a drag move
    without movement (its guard against jitter); a hand on a mouse always has some."""
    box = over.bounding_box()
    y = box["height"] / 2
    x0, x1 = box["width"] * start, box["width"] * end
    over.dispatch_event("mousedown", {"clientX": box["x"] + x0, "clientY": box["y"] + y, "button": 0, "bubbles": True})
    for step in range(1, 11):
        over.dispatch_event("mousemove", {"clientX": box["x"] + x0 + (x1 - x0) * step / 10, "clientY": box["y"] + y,
                                          "movementX": (x1 - x0) / 10, "bubbles": True})
    page.evaluate("([x, y]) => document.dispatchEvent(new MouseEvent('mouseup', {clientX: x, clientY: y, bubbles: true}))",
                  [box["x"] + x1, box["y"] + y])


def test_device_chart_ranges_zoom_alarms_and_a_live_fleet(running_plant: Any, tmp_path: Path) -> None:
    """The device chart over 1 h, 24 h, 7 d, a typed range (in the plant's zone, from a browser in
    another) and a drag-zoom, with motor-01's own alarm raised and cleared on it; the fleet page taking
    a state change from the stream; the list view sorted by its headers."""
    gw, order, fault_at = running_plant
    raised_at, cleared_at = fault_at + 20, fault_at + 50
    topic = "plant/north/motor-01/alarm"
    publish.multiple([
        (topic, json.dumps({"code": "OHE", "severity": "high", "message": "winding hot", "ts": raised_at}), 1, False),
        (topic, json.dumps({"code": "OHE", "severity": "high", "message": "winding cool", "active": False,
                            "ts": cleared_at}), 1, False)], hostname="127.0.0.1", port=gw.gateway.config.sources[0].port)
    journal = wait_until(lambda: (lambda rows: rows if len(rows) == 2 else None)(gw.items("/alarms", device_id="motor-01")),
                         timeout=20, what="motor-01's alarm raised and cleared")
    assert [(a["active"], a["outcome"]) for a in journal] == [(False, "cleared"), (True, "work_order")]
    alarm_order = journal[1]["work_order_code"]
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = watched(browser, gw.url, errors, timezone_id="America/New_York")
        sign_in(page, gw.url, "dora")

        # Fleet, live: a state change made elsewhere reaches the open page through the stream.
        expect(page.locator('tr[data-device="motor-01"]')).to_have_attribute("data-health", "work_order")
        page.evaluate("window.notReloaded = true")
        changed = gw.http.put("/assets/pump-02/state", json={"state": "standby", "reason": "spare", "until": None})
        assert changed.status_code == 200, changed.text
        expect(page.locator('tr[data-device="pump-02"]')).to_have_attribute("data-health", "maintenance", timeout=10_000)
        assert page.evaluate("window.notReloaded") is True

        page.goto(f"{gw.url}/#/device/motor-01")
        chart = page.locator('figure[data-metric="vibration"]')
        expect(chart.locator("canvas")).to_have_count(1)

        def shown() -> tuple[float, float]:
            return float(chart.get_attribute("data-since")), float(chart.get_attribute("data-until"))

        # The device's own alarm: a raise and a clear mark, each saying what ticketing made of it.
        raised, cleared = chart.locator(".mark.alarm.raised"), chart.locator(".mark.alarm.cleared")
        expect(raised).to_have_count(1)
        assert float(raised.get_attribute("data-at")) == pytest.approx(raised_at)
        assert float(cleared.get_attribute("data-at")) == pytest.approx(cleared_at)
        expect(raised).to_have_attribute("aria-label", re.compile(rf"device alarm OHE raised .*winding hot.*{alarm_order}"))
        expect(cleared).to_have_attribute("aria-label", re.compile(r"OHE cleared .*winding cool \(cleared"))
        expect(chart.locator(".mark.anomaly")).to_have_count(0)  # motor-01's readings stayed normal
        since, until = shown()
        assert until - since == pytest.approx(3600, abs=1)
        expect(page.get_by_role("button", name="1h")).to_have_attribute("aria-pressed", "true")
        shoot(page, tmp_path, "device-alarms")

        for label, seconds in (("24h", 86400), ("7d", 7 * 86400)):
            page.get_by_role("button", name=label).click()
            expect(page.get_by_role("button", name=label)).to_have_attribute("aria-pressed", "true")
            expect(chart).to_have_attribute("data-until", re.compile("."))
            page.wait_for_function(
                f"() => {{ const f = document.querySelector('figure[data-metric=vibration]');"
                f" return f && f.dataset.until - f.dataset.since > {seconds - 5}; }}")
            chart = page.locator('figure[data-metric="vibration"]')
        expect(chart.locator("figcaption")).to_contain_text("mean per bucket")  # 7 d comes from rollups

        # A typed range is the plant's wall time (Berlin), though this browser runs in New York.
        start, end = int(fault_at // 60 * 60) - 600, int(fault_at // 60 * 60) + 600
        page.get_by_label("start of range").fill(plant_input(end))
        page.get_by_label("end of range").fill(plant_input(start))
        page.get_by_role("button", name="Show").click()
        expect(page.get_by_role("alert")).to_have_text("Choose a start before the end.")
        page.get_by_label("start of range").fill(plant_input(start))
        page.get_by_label("end of range").fill(plant_input(end))
        page.get_by_role("button", name="Show").click()
        expect(chart).to_have_attribute("data-since", str(start))
        assert shown() == (start, end)
        expect(page.locator('.ranges button[aria-pressed="true"]')).to_have_count(0)
        expect(chart.locator(".mark.alarm")).to_have_count(2)

        # Drag across the middle half of the plot: the chart reloads for that span.
        drag(page, chart.locator(".u-over"), 0.25, 0.75)
        page.wait_for_function(f"() => document.querySelector('figure[data-metric=vibration]').dataset.since > {start + 60}")
        zoomed = float(page.locator('figure[data-metric="vibration"]').get_attribute("data-since")), \
            float(page.locator('figure[data-metric="vibration"]').get_attribute("data-until"))
        assert start + 0.2 * 1200 < zoomed[0] < start + 0.3 * 1200 and start + 0.7 * 1200 < zoomed[1] < start + 0.8 * 1200, zoomed
        expect(page.get_by_label("start of range")).to_have_value(plant_input(zoomed[0]))
        shoot(page, tmp_path, "device-zoomed")

        # The list view, sorted by clicking its headers.
        page.goto(f"{gw.url}/#/board")
        page.get_by_role("button", name="List").click()
        rows = page.locator("table.orders tbody tr")
        expect(rows).to_have_count(2)
        page.get_by_role("button", name="Code").click()
        expect(page.locator("th", has=page.get_by_role("button", name="Code"))).to_have_attribute("aria-sort", "descending")
        expect(rows.first).to_have_attribute("data-code", max(order["code"], alarm_order))
        page.get_by_role("button", name="Code").click()
        expect(page.locator("th", has=page.get_by_role("button", name="Code"))).to_have_attribute("aria-sort", "ascending")
        expect(rows.first).to_have_attribute("data-code", min(order["code"], alarm_order))
        shoot(page, tmp_path, "board-list")
        browser.close()
    assert errors == []


def test_a_simulated_clock_is_labelled_in_the_header(mosquitto: Mosquitto, tmp_path: Path, start_gateway) -> None:
    document = plant(mosquitto.port, tmp_path)
    document["plant"] |= {"simulated_speed": 30}
    document["ingest"] = {"max_future_skew_s": 86400}  # as the demo allows its accelerated clock
    gw = start_gateway(document)
    gw.gateway.identities.add_user("vic", PASSWORD, "viewer")
    ahead = time.time() + 5 * 3600  # the simulated devices run hours ahead of the wall clock
    publish.single("plant/north/pump-01/telemetry", json.dumps({"ts": ahead, "metrics": HEALTHY}),
                   qos=1, hostname="127.0.0.1", port=mosquitto.port)
    wait_until(lambda: gw.get("/devices/pump-01/readings/latest")["readings"], timeout=20, what="pump-01's reading")
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = watched(browser, gw.url, errors)
        sign_in(page, gw.url, "vic")
        clock = page.locator("#clock")
        expect(clock).to_contain_text("Simulated time")
        expect(clock).to_contain_text("Europe/Berlin · 30× speed")
        expect(clock).to_have_attribute("title", re.compile("faster than real time"))
        shown = re.search(r"(\d\d):(\d\d):\d\d", clock.text_content())
        expected = datetime.fromtimestamp(ahead, ZoneInfo("Europe/Berlin"))
        minutes = (int(shown[1]) * 60 + int(shown[2]) - expected.hour * 60 - expected.minute) % 1440
        assert minutes < 15, (clock.text_content(), expected)  # the devices' clock, not the wall clock
        browser.close()
    assert errors == []


def test_work_order_filters_sort_and_csv_export(running_plant: Any) -> None:
    gw, order, _ = running_plant
    manual = gw.http.post("/work-orders", json={"device_id": "pump-02", "failure_mode": "NOI", "title": "noise"}).json()

    def codes(**params: Any) -> list[str]:
        return [o["code"] for o in gw.items("/work-orders", **params)]

    assert codes(failure_mode="NOI") == [manual["code"]]
    assert codes(origin="manual") == [manual["code"]] and codes(origin="anomaly") == [order["code"]]
    assert codes(code=order["code"][-4:]) == [order["code"]]
    assert codes(code="%") == [] and codes(code="_") == []  # LIKE wildcards are literal characters
    assert codes(sort="code") == sorted([order["code"], manual["code"]])
    assert codes(sort="-code") == sorted([order["code"], manual["code"]], reverse=True)
    assert codes(open="true", created_since=time.time() + 3600) == []
    assert all(o["sla"]["clocks"] for o in gw.items("/work-orders"))
    export = gw.http.get("/work-orders/export", params={"sort": "code"})
    assert export.headers["content-type"].startswith("text/csv")
    lines = export.text.splitlines()
    assert lines[0].startswith("code,device_id") and [line.split(",")[0] for line in lines[1:]] == codes(sort="code")
    assert gw.http.get("/work-orders/export", params={"sort": "title"}).status_code == 422


def test_the_demo_shows_its_accelerated_clock_as_simulated(tmp_path: Path) -> None:
    from gateway.config import parse_config
    from gateway.demo import demo_document

    plant_config = parse_config(demo_document(1883, 8080, tmp_path, acceleration=30), "demo").plant
    assert (plant_config.simulated_speed, plant_config.timezone) == (30, "Europe/Berlin")
    assert parse_config(demo_document(1883, 8080, tmp_path, acceleration=1), "demo").plant.simulated_speed is None
