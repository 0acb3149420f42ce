"""The configuration page in a real headless Chromium: a reliability engineer tightens a limit (checked, tried
on history, applied, and the next reading opens a work order), a refused edit names its paths, a dispatcher
sets a travel limit and tests a routing rule, an admin adds an asset and restores a revision, and a viewer
does not see the page. Screenshots land in the test's temporary directory (``PMGW_SCREENSHOTS`` copies them)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import paho.mqtt.publish as publish
import pyotp
import pytest
from playwright.sync_api import Page, expect, sync_playwright

from gateway.broker import Mosquitto
from tests.conftest import gateway_document, wait_until
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS
from tests.test_dashboard import PASSWORD, shoot, watched

VIBRATION_LIMIT = {"device_type": "pump", "metric": "vibration", "high": 7.1, "on_delay": 2, "failure_mode": "VIB"}


def readings(port: int, device: str, values: list[float], start: float) -> None:
    publish.multiple([(f"plant/north/{device}/telemetry", json.dumps({"ts": start + i, "metrics": {"vibration": v}}), 1,
                       False) for i, v in enumerate(values)], hostname="127.0.0.1", port=port)


def sign_in(page: Page, url: str, username: str, totp: str | None = None) -> None:
    page.goto(f"{url}/")
    page.get_by_label("User").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    if totp:
        page.get_by_label("Authenticator code").fill(pyotp.TOTP(totp).now())
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#who")).to_contain_text(username)


def test_a_plant_engineer_changes_rules_from_the_dashboard_and_sees_the_effect(
        mosquitto: Mosquitto, tmp_path: Path, start_gateway) -> None:
    document = gateway_document(mosquitto.port, tmp_path)
    document["detectors"]["rules"] = [dict(VIBRATION_LIMIT)]
    gw = start_gateway(document)
    identities = gw.gateway.identities
    identities.add_user("rita", PASSWORD, "reliability_engineer")
    identities.add_user("dora", PASSWORD, "dispatcher")
    identities.add_user("vic", PASSWORD, "viewer")
    admin_totp = identities.add_user("ada", PASSWORD, "admin")
    start = time.time() - 3600
    readings(mosquitto.port, "pump-01", [6.2 if 100 <= i < 130 else 2.5 for i in range(300)], start)
    wait_until(lambda: gw.get("/devices/pump-01/detector")["samples"] >= 300, timeout=20, what="the history")
    assert gw.items("/work-orders") == []
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = watched(browser, gw.url, errors)

        # The reliability engineer tightens the pump's vibration limit in the limit-rule table.
        sign_in(page, gw.url, "rita")
        page.get_by_role("link", name="Configuration").click()
        rules = page.get_by_role("table", name="Limit rules")
        expect(rules).to_be_visible()
        high = rules.get_by_label("high").first
        expect(high).to_have_value("7.1")
        high.fill("5")
        limit_panel = page.get_by_role("region", name="Limit rules", exact=True)
        limit_panel.get_by_role("button", name="Check").click()
        expect(limit_panel.locator(".outcome")).to_contain_text("Valid")
        expect(limit_panel.locator("pre.diff .added")).to_contain_text(["high: 5"])
        limit_panel.get_by_role("button", name="Try on history").click()
        would_open = limit_panel.get_by_role("table", name="Would open")
        expect(would_open).to_contain_text("pump-01")
        expect(would_open).to_contain_text("VIB")
        shoot(page, tmp_path, "config-dry-run")
        limit_panel.get_by_label("Reason").fill("bearing wear seen at 5.5 mm/s on this model")
        limit_panel.get_by_role("button", name="Apply").click()
        last_change = page.get_by_role("region", name="Last change", exact=True)
        expect(last_change).to_contain_text("in force (detectors)")
        expect(last_change).to_contain_text("new checks: pump-01")
        # The page shows what is in force now: the new limit, the runtime change over the file.
        expect(page.get_by_role("table", name="Limit rules").get_by_label("high").first).to_have_value("5")
        expect(page.locator(".config-status")).to_contain_text("runtime changes in force over the file")
        revisions = page.get_by_role("table", name="Revisions")
        expect(revisions.locator("tbody tr").first).to_contain_text("rita")
        expect(revisions.locator("tbody tr").first).to_contain_text("bearing wear")
        shoot(page, tmp_path, "config-applied")

        # Its effect: the next readings over 5 (under the old 7.1) open a work order, no restart.
        readings(mosquitto.port, "pump-01", [6.0] * 5, time.time() - 10)
        order = wait_until(lambda: gw.items("/work-orders", device_id="pump-01"), timeout=15, what="a work order")[0]
        page.get_by_role("link", name="Work orders").click()
        expect(page.locator("main")).to_contain_text(order["code"])

        # A broken edit in the YAML editor is refused with its path, and nothing changes.
        page.goto(f"{gw.url}/#/settings/detectors")
        editor = page.get_by_label("detectors as YAML")
        editor.fill(editor.input_value().replace("high: 5.0", "high: five", 1))
        yaml_panel = page.get_by_role("region", name="Detectors and limit rules as YAML", exact=True)
        yaml_panel.get_by_role("button", name="Check").click()
        expect(yaml_panel.get_by_role("list", name="Problems")).to_contain_text("detectors.rules[0].high")
        shoot(page, tmp_path, "config-refused")
        # Ticketing is not the reliability engineer's: read only.
        page.get_by_role("navigation", name="Sections").get_by_role("link", name="ticketing").click()
        expect(page.locator("main")).to_contain_text("read only for your role")
        page.context.close()

        # The dispatcher sets a travel limit and tries a routing rule on an example.
        page = watched(browser, gw.url, errors)
        sign_in(page, gw.url, "dora")
        page.goto(f"{gw.url}/#/settings/ticketing")
        dispatch = page.get_by_role("region", name="Dispatch limits", exact=True)
        dispatch.get_by_label("Travel limit (minutes)").fill("45")
        dispatch.get_by_label("Reason").fill("no trips across the country")
        dispatch.get_by_role("button", name="Apply").click()
        expect(page.get_by_role("region", name="Last change", exact=True)).to_contain_text("in force (ticketing)")
        assert gw.gateway.config.ticketing.dispatch.max_travel_min == 45
        routing = page.get_by_role("form", name="Test routing")
        routing.get_by_role("button", name="Test").click()
        expect(page.locator(".routing-outcome")).to_contain_text("No rule matches")
        # ...then adds a routing rule in the YAML editor, tests it on an example, and sees it on the next order.
        editor = page.get_by_label("ticketing as YAML")
        assert "  routing: []\n" in editor.input_value()
        editor.fill(editor.input_value().replace("  routing: []\n", (
            "  routing:\n  - name: pump vibration is planned work\n    when: {device_types: [pump], failure_modes: [VIB]}\n"
            "    then: {set_priority: P3}\n"), 1))
        yaml_panel = page.get_by_role("region", name="Ticketing, SLA, dispatch and routing as YAML", exact=True)
        yaml_panel.get_by_label("Reason").fill("vibration goes to the weekly plan")
        yaml_panel.get_by_role("button", name="Apply").click()
        expect(page.get_by_role("region", name="Last change", exact=True)).to_contain_text("+  - name: pump vibration")
        routing = page.get_by_role("form", name="Test routing")
        routing.get_by_role("button", name="Test").click()
        expect(page.locator(".routing-outcome")).to_contain_text("Matches pump vibration is planned work")
        shoot(page, tmp_path, "config-ticketing")
        # ...tightens the P3 response time in the SLA table...
        sla = page.get_by_role("region", name="SLA policies", exact=True)
        p3 = sla.locator("tr[data-item]").nth(2)
        expect(p3.get_by_label("priority")).to_have_value("P3")
        p3.get_by_label("respond (s)").fill("1800")
        sla.get_by_label("Reason").fill("planned work answered within 30 min")
        sla.get_by_role("button", name="Apply").click()
        expect(page.get_by_role("region", name="Last change", exact=True)).to_contain_text("respond_s: 1800")
        # ...and adds an engineer to the roster.
        page.get_by_role("navigation", name="Sections").get_by_role("link", name="engineers").click()
        roster = page.get_by_label("engineers as YAML")
        roster.fill(roster.input_value() + "- id: eng-close\n  name: Eve\n  skills: [mechanical]\n"
                                           "  home: {latitude: 53.552, longitude: 9.992}\n")
        roster_panel = page.get_by_role("region", name="Engineer roster as YAML", exact=True)
        roster_panel.get_by_label("Reason").fill("Eve joins the north team")
        roster_panel.get_by_role("button", name="Apply").click()
        expect(page.get_by_role("region", name="Last change", exact=True)).to_contain_text("in force (engineers)")
        # The next order shows all three: routed to P3, the new SLA, the new engineer.
        readings(mosquitto.port, "pump-02", [8.0] * 5, time.time() - 5)
        planned = wait_until(lambda: gw.items("/work-orders", device_id="pump-02"), timeout=15, what="pump-02's order")
        assert planned[0]["priority"] == "P3"
        detail = gw.get(f"/work-orders/{planned[0]['code']}")
        assert detail["assigned_engineer_id"] == "eng-close"
        created = next(e["at"] for e in detail["events"] if e["kind"] == "created")
        assert detail["sla"]["clocks"]["respond"]["deadline"] == pytest.approx(created + 1800, abs=1)
        page.goto(f"{gw.url}/#/work-orders/{planned[0]['code']}")
        expect(page.locator("main")).to_contain_text("P3")
        page.context.close()

        # An admin adds a pump in the registry, then restores the first revision's detectors.
        page = watched(browser, gw.url, errors)
        sign_in(page, gw.url, "ada", admin_totp)
        page.goto(f"{gw.url}/#/settings/assets")
        registry = page.get_by_role("region", name="Assets", exact=True)
        registry.get_by_role("button", name="Add an asset").click()
        added = registry.locator("tr[data-item]").last
        for label, value in (("id", "pump-09"), ("model", "Etanorm 80-250"), ("serial", "S9")):
            added.get_by_label(label, exact=True).fill(value)
        added.get_by_label("criticality").select_option("high")
        registry.get_by_label("Reason").fill("new pump commissioned")
        registry.get_by_role("button", name="Apply").click()
        expect(page.get_by_role("region", name="Last change", exact=True)).to_contain_text("in force (assets)")
        shoot(page, tmp_path, "config-asset-added")
        # A connector setting: only that connector restarts, and readings flow through it again.
        page.get_by_role("navigation", name="Sections").get_by_role("link", name="sources").click()
        sources = page.get_by_label("sources as YAML")
        assert "batch_size: 200" in sources.input_value()
        sources.fill(sources.input_value().replace("batch_size: 200", "batch_size: 100"))
        sources_panel = page.get_by_role("region", name="Connectors (sources) as YAML", exact=True)
        sources_panel.get_by_label("Reason").fill("smaller batches")
        sources_panel.get_by_role("button", name="Apply").click()
        expect(page.get_by_role("region", name="Last change", exact=True)).to_contain_text(
            "connectors restarted: test-broker")
        wait_until(lambda: gw.get("/health")["connectors"][0]["connected"], timeout=15, what="the connector back")
        assert gw.get("/assets/pump-09")["site"]["id"] == "north" and gw.get("/assets/pump-09")["criticality"] == "high"
        readings(mosquitto.port, "pump-09", [2.0] * 3, time.time() - 3)
        wait_until(lambda: gw.get("/devices/pump-09/readings/latest")["readings"], timeout=15, what="pump-09's readings")
        page.goto(f"{gw.url}/#/settings/assets")
        page.on("dialog", lambda dialog: dialog.accept("back to how it was"))
        revisions = page.get_by_role("table", name="Revisions")
        # The first revision has no Eve, who now holds pump-02's order: restoring it is refused, and says why.
        revisions.locator('tr[data-revision="1"]').get_by_role("button", name="restore").click()
        expect(page.locator("main")).to_contain_text("eng-close holds 1 open work order(s)")
        before_sources = revisions.locator("tbody tr").nth(1).get_attribute("data-revision")
        revisions.locator(f'tr[data-revision="{before_sources}"]').get_by_role("button", name="restore").click()
        expect(page.get_by_role("table", name="Revisions")).to_contain_text(f"restores {before_sources}")
        assert gw.gateway.config.sources[0].batch_size == 200
        shoot(page, tmp_path, "config-restored")
        page.context.close()

        # A viewer has no configuration page.
        page = watched(browser, gw.url, errors)
        sign_in(page, gw.url, "vic")
        expect(page.get_by_role("link", name="Configuration")).to_be_hidden()
        browser.close()
    # The refused restore is a 422 on purpose; Chromium logs every failed request to the console.
    assert [e for e in errors if "status of 422" not in e] == []
    assert len([e for e in errors if "status of 422" in e]) == 1
