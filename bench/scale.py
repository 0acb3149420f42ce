"""Readings/s and resident memory of one gateway process at 10, 100, 1,000 and 10,000 devices × 5 metrics.

For each size a fresh Mosquitto and a gateway process (``pmgw run``, embedded stores, detectors scoring
in the process): the gateway subscribes once with its persistent session and stops, a backlog of QoS 1
messages (one reading of each of the device's 5 metrics) is queued round robin over the devices, and the
gateway is started again: the time runs until every reading is stored and scored, and the process's
peak resident memory (VmHWM) is read at the end. Ratios are against the smallest fleet of the same run.
Every size gets the same number of messages, so a small fleet spends them past its warm-up and a large
one within it (10,000 devices see 20 samples each).

    python -m bench.scale --messages 200000
"""

from __future__ import annotations

import argparse
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import orjson
import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from gateway.broker import Mosquitto, free_port

# A healthy pump's readings (within every default limit: the bench measures telemetry, not work orders).
NORMAL = {"vibration": 2.0, "bearing_temp": 45.0, "flow": 100.0, "pressure": 4.0, "motor_current": 30.0}
METRICS = list(NORMAL)
BROKER_TUNING = "max_inflight_messages 1000\nmax_queued_messages 10000000\nmax_queued_bytes 0\n"


def document(port: int, devices: int, data: Path) -> dict[str, Any]:
    return {
        "sites": [{"id": "bench", "latitude": 53.5, "longitude": 10.0}],
        "assets": [{"id": f"d{n:05d}", "type": "pump", "model": "M", "serial": f"S{n}", "site": "bench"}
                   for n in range(devices)],
        "sources": [{"type": "mqtt", "name": "bench", "port": port, "client_id": "bench-scale",
                     "topic": "plant/{site}/{device}/telemetry", "payload": {"metrics_path": "metrics"}}],
        "engineers": [{"id": "e", "name": "E", "skills": ["mechanical"], "home": {"latitude": 53.5, "longitude": 10}}],
        "storage": {"telemetry": {"path": str(data / "telemetry.db")}},
        "ticketing": {"database_url": f"sqlite:///{data / 'workorders.db'}"},
        "detectors": {"checkpoint_path": str(data / "detectors.ckpt")},
        "api": {"port": free_port()},
        "log_level": "WARNING",
        "ingest": {"max_future_skew_s": 366 * 86400},
    }


def preload(port: int, devices: int, messages: int) -> int:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-scale-publisher")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    acknowledged = 0

    def on_publish(*_: Any) -> None:
        nonlocal acknowledged
        acknowledged += 1

    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    client.loop_start()
    t0 = time.time() - 86400
    for n in range(messages):
        device, tick = n % devices, n // devices
        payload = orjson.dumps({"ts": t0 + tick, "metrics": {m: v * (1 + (n % 13) * 0.001) for m, v in NORMAL.items()}})
        client.publish(f"plant/bench/d{device:05d}/telemetry", payload, qos=1)
        while n + 1 - acknowledged > 20_000:  # message ids are 16 bits: never that many in flight
            time.sleep(0.005)
    wait(lambda: acknowledged >= messages, 300, "the broker to acknowledge the backlog")
    client.loop_stop()
    client.disconnect()
    return messages * len(METRICS)


def gateway(config: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "gateway.cli", "run", "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=log.open("ab"))


def health(api: str) -> dict[str, Any]:
    try:
        return httpx.get(f"{api}/health", timeout=10).json()
    except httpx.HTTPError:
        return {}


def wait(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise TimeoutError(what)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def opened_on_a_healthy_fleet(database: Path, devices: int) -> None:
    """The fleet is healthy, so any work order is a false one: say what opened it before the folder goes."""
    with closing(sqlite3.connect(database)) as connection:
        rows = connection.execute("SELECT failure_mode, title, COUNT(*), MIN(device_id) FROM work_orders "
                                  "GROUP BY failure_mode, title ORDER BY COUNT(*) DESC").fetchall()
    for failure_mode, title, count, first in rows:
        print(f"  ({devices:,} devices: {count} work order(s) {failure_mode} {title!r}, e.g. on {first})",
              file=sys.stderr, flush=True)


def run(devices: int, messages: int, scratch: Path) -> dict[str, float]:
    scratch.mkdir()
    broker = Mosquitto.start(directory=scratch / "broker", extra_config=BROKER_TUNING)
    try:
        config = document(broker.port, devices, scratch)
        path = scratch / "gateway.yaml"
        path.write_text(yaml.safe_dump(config))
        api = f"http://127.0.0.1:{config['api']['port']}"

        def connected() -> bool:
            return bool(((health(api).get("connectors") or [{}])[0]).get("connected"))

        first = gateway(path, scratch / "gateway.log")  # makes the persistent session
        wait(connected, 120, "gateway connected")
        first.terminate()
        first.wait(120)
        readings = preload(broker.port, devices, messages)
        process = gateway(path, scratch / "gateway.log")
        started = time.perf_counter()

        def drained() -> bool:
            counts = (health(api).get("pipeline") or {}).get("counts") or {}
            return counts.get("readings_stored", 0) >= readings and counts.get("readings_scored", 0) >= readings

        wait(drained, 1800, "backlog stored and scored")
        elapsed = time.perf_counter() - started
        rss = peak_rss_mb(process.pid)
        orders = (health(api).get("ticketing") or {}).get("work_orders_created")
        process.terminate()
        process.wait(300)
        if orders:
            opened_on_a_healthy_fleet(scratch / "workorders.db", devices)
        return {"devices": devices, "readings": readings, "seconds": elapsed, "rss_mb": rss, "orders": orders}
    finally:
        broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, nargs="+", default=[10, 100, 1000, 10_000])
    parser.add_argument("--messages", type=int, default=200_000)
    options = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="pmgw-bench-scale-") as folder:
        for count in options.devices:
            rows.append(run(count, options.messages, Path(folder) / f"fleet-{count}"))
    base = rows[0]["readings"] / rows[0]["seconds"]
    print(f"{options.messages:,} messages × {len(METRICS)} metrics per fleet size; one gateway process, "
          "detectors in it\n")
    print("| devices | streams | readings | seconds | readings/s | ratio to the smallest | peak RSS MB | work orders |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        rate = row["readings"] / row["seconds"]
        print(f"| {row['devices']:,} | {row['devices'] * len(METRICS):,} | {row['readings']:,} | {row['seconds']:.1f} | "
              f"{rate:,.0f} | {rate / base:.2f} | {row['rss_mb']:.0f} | {row['orders']} |")


if __name__ == "__main__":
    main()
