"""Dashboard load times with a big plant, measured by the browser itself (headless Chromium).

A gateway with ``--devices`` assets (each with telemetry) and ``--work-orders`` open work
orders; a signed-in browser loads the fleet page and the work-order board from scratch, and
``performance.now()`` (milliseconds since the navigation started) is read when the page is
drawn: the fleet with every asset row, the board with every column and its first cards. The
baseline, in the same run and browser, is the least a page can do with the same data: fetch the
same API answer and write it into a bare table with innerHTML.

    python -m bench.dashboard --devices 1000 --work-orders 10000
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, sync_playwright

from gateway.broker import Mosquitto, free_port
from gateway.config import parse_config
from gateway.core import Reading, Severity
from gateway.threaded import GatewayThread

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
PASSWORD = "bench password 1"
MODES = ["VIB", "OHE", "NOI", "ELU", "INL", "LOO", "HIO", "PLU", "ERO", "PDE", "FTS", "BRD"]
BARE = """async ([path, token]) => {
  const started = performance.now();
  const answer = await (await fetch(path, { headers: { Authorization: `Bearer ${token}` } })).json();
  document.body.innerHTML = "<table><tbody>" + answer.items.map((e) =>
    `<tr><td>${e.id || e.code}</td><td>${e.health || e.state}</td><td>${e.site_id}</td><td>${e.type || e.priority}</td></tr>`).join("") + "</tbody></table>";
  document.body.offsetHeight;  // layout, as a page that shows the table must
  return performance.now() - started;
}"""


def plant(devices: int, port: int, broker_port: int, directory: Path) -> dict[str, Any]:
    sites = [{"id": f"site-{i}", "name": f"Site {i}", "latitude": 50 + i * 0.1, "longitude": 8 + i * 0.1}
             for i in range(20)]
    assets = [{"id": f"dev-{i:04d}", "type": ("pump", "motor", "compressor")[i % 3], "model": f"M{i % 7}",
               "serial": f"S{i}", "site": f"site-{i % 20}"} for i in range(devices)]
    return {
        "sites": sites, "assets": assets,
        "sources": [{"type": "mqtt", "name": "bench", "host": "127.0.0.1", "port": broker_port,
                     "topic": "plant/{site}/{device}/telemetry"}],
        "storage": {"telemetry": {"path": str(directory / "telemetry.db")}},
        "ticketing": {"database_url": f"sqlite:///{directory / 'workorders.db'}"},
        "detectors": {"checkpoint_path": str(directory / "detectors.ckpt")},
        "api": {"port": port},
    }


def seed(thread: GatewayThread, devices: int, orders: int) -> None:
    gateway = thread.gateway
    now = time.time()
    readings = [Reading(f"dev-{i:04d}", metric, 1.0, now - 30) for i in range(devices)
                for metric in ("vibration", "bearing_temp")]
    gateway.store.write(readings)
    made = 0
    for index in range(orders):
        device, mode = f"dev-{index % devices:04d}", MODES[index // devices % len(MODES)]
        if gateway.ticketing.create_manual(device, mode, Severity.MEDIUM, f"bench order {index}", "bench"):
            made += 1
    print(f"seeded {devices} devices with telemetry, {made} open work orders")


def drawn(page: Page, url: str, ready: str) -> float:
    """Milliseconds from the navigation's start until ``ready`` holds (the browser's own clock)."""
    page.goto("about:blank")
    page.goto(url)
    return float(page.wait_for_function(f"() => ({ready}) && performance.now()", timeout=60_000).json_value())


def measure(url: str, devices: int, rounds: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"fleet": [], "board": [], "bare fleet": [], "bare board": []}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1366, "height": 768})
        page.goto(f"{url}/")
        page.get_by_label("User").fill("bench")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_selector("tr[data-device]")
        token = page.evaluate("JSON.parse(sessionStorage.getItem('pmgw.session')).access_token")
        for _ in range(rounds):
            times["fleet"].append(drawn(page, f"{url}/#/fleet", f"document.querySelectorAll('tr[data-device]').length === {devices}"))
            times["board"].append(drawn(page, f"{url}/#/board",
                                        "document.querySelectorAll('.column').length === 10 && document.querySelector('.card')"))
            page.goto(f"{url}/static/dashboard/app.css")  # same origin, no script of ours
            times["bare fleet"].append(page.evaluate(BARE, ["/api/v1/fleet?limit=1000", token]))
            times["bare board"].append(page.evaluate(BARE, ["/api/v1/work-orders?limit=500", token]))
        browser.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--work-orders", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        broker = Mosquitto.start(directory=directory / "mosquitto")
        port = free_port()
        thread = GatewayThread(parse_config(plant(args.devices, port, broker.port, directory), "bench")).start()
        try:
            thread.gateway.identities.add_user("bench", PASSWORD, "dispatcher")
            started = time.monotonic()
            seed(thread, args.devices, args.work_orders)
            print(f"(seeding took {time.monotonic() - started:.0f} s)")
            times = measure(f"http://127.0.0.1:{port}", args.devices, args.rounds)
        finally:
            thread.stop()
            broker.stop()
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"{args.devices} devices, {args.work_orders} open work orders, median of {args.rounds} loads (ms):")
    print(f"  fleet page  {medians['fleet']:7.0f}  (bare table of the same /fleet answer {medians['bare fleet']:.0f};"
          f" {medians['fleet'] / medians['bare fleet']:.1f}x)")
    print(f"  board page  {medians['board']:7.0f}  (bare table of 500 work orders {medians['bare board']:.0f};"
          f" {medians['board'] / medians['bare board']:.1f}x)")
    print(f"  target: each page under 1000 ms: {'met' if max(medians['fleet'], medians['board']) < 1000 else 'NOT met'}")


if __name__ == "__main__":
    main()
