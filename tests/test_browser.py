"""The API documentation in a real headless Chromium (Debian's), with every request off the gateway refused."""

from __future__ import annotations

import shutil
from pathlib import Path

from playwright.sync_api import sync_playwright

from gateway.broker import Mosquitto
from tests.conftest import gateway_document

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# As root in a container, without the network: no sandbox, no background calls home.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def test_swagger_ui_and_redoc_render_air_gapped(mosquitto: Mosquitto, tmp_path: Path, start_gateway) -> None:
    gw = start_gateway(gateway_document(mosquitto.port, tmp_path))
    elsewhere: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()

        def only_the_gateway(route) -> None:  # type: ignore[no-untyped-def]
            if route.request.url.startswith(gw.url) or route.request.url.startswith(("data:", "blob:")):
                route.continue_()
            else:
                elsewhere.append(route.request.url)
                route.abort()

        page.route("**/*", only_the_gateway)
        page.goto(f"{gw.url}/docs")
        page.wait_for_selector(".opblock-summary-path", timeout=30_000)
        paths = page.locator(".opblock-summary-path").all_inner_texts()
        page.screenshot(path=str(tmp_path / "docs.png"), full_page=False)
        page.goto(f"{gw.url}/redoc")
        page.wait_for_selector("h1", timeout=30_000)
        heading = page.locator("h1").first.inner_text()
        page.screenshot(path=str(tmp_path / "redoc.png"), full_page=False)
        browser.close()
    assert "/api/v1/oauth/token" in paths and "/api/v1/work-orders/{code}/transitions" in paths
    assert "pm-gateway" in heading
    assert elsewhere == []
