"""``pmgw demo``: a broker, a simulated fleet, the gateway and its API, on embedded defaults.

After a healthy period the demo injects bearing wear into one pump and tells
where to look; the gateway should open exactly one work order for that pump
and assign the nearest qualified engineer.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import time
from pathlib import Path
from typing import Any

from gateway.app import Gateway
from gateway.broker import Mosquitto, free_port
from gateway.config import GatewayConfig, parse_config
from gateway.core import WorkOrderEvent
from simulators.mqtt_fleet import FleetConfig, FleetSimulator
from gateway.simulation import device_specs

log = logging.getLogger(__name__)

FAULTY_DEVICE = "pump-02"
FAULT_KIND = "bearing_wear"


def demo_document(broker_port: int, api_port: int, data_dir: Path, acceleration: float = 1.0) -> dict[str, Any]:
    """The demo's configuration, as a user would write it in YAML."""
    everyday = {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start": "00:00", "end": "24:00"}
    return {
        "sites": [
            {"id": "hamburg", "name": "Hamburg waterworks", "latitude": 53.5461, "longitude": 9.9661,
             "environment": {"humidity_pct": 72, "ambient_c": 18}},
            {"id": "bremen", "name": "Bremen booster station", "latitude": 53.0793, "longitude": 8.8017,
             "environment": {"humidity_pct": 84, "ambient_c": 16}},
        ],
        "assets": [
            {"id": "pump-01", "type": "pump", "model": "KSB Etanorm 80-250", "serial": "ETN-1001",
             "site": "hamburg", "criticality": "high", "firmware": "2.4.1"},
            {"id": "pump-02", "type": "pump", "model": "KSB Etanorm 80-250", "serial": "ETN-1002",
             "site": "hamburg", "criticality": "high", "firmware": "2.4.1"},
            {"id": "motor-01", "type": "motor", "model": "Siemens 1LE1 75kW", "serial": "1LE-5531",
             "site": "hamburg", "criticality": "medium"},
            {"id": "compressor-01", "type": "compressor", "model": "Atlas Copco GA 37", "serial": "GA37-771",
             "site": "bremen", "criticality": "medium"},
            {"id": "pump-03", "type": "pump", "model": "Grundfos NK 65-200", "serial": "NK-3303",
             "site": "bremen", "criticality": "low"},
        ],
        "sources": [{
            "type": "mqtt", "name": "demo-broker", "host": "127.0.0.1", "port": broker_port,
            "client_id": "pmgw-demo", "topic": "plant/{site}/{device}/telemetry",
            "alarm_topic": "plant/{site}/{device}/alarm", "payload": {"metrics_path": "metrics"},
        }],
        "engineers": [
            {"id": "eng-anna", "name": "Anna Becker", "skills": ["mechanical", "vibration"],
             "home": {"latitude": 53.5511, "longitude": 9.9937}, "shift": everyday},
            {"id": "eng-ben", "name": "Ben Okafor", "skills": ["electrical"],
             "home": {"latitude": 53.5470, "longitude": 9.9700}, "shift": everyday},
            {"id": "eng-carla", "name": "Carla Jensen", "skills": ["mechanical"],
             "home": {"latitude": 53.0900, "longitude": 8.8000}, "shift": everyday},
            {"id": "eng-dmitri", "name": "Dmitri Volkov", "skills": ["instrumentation", "electrical"],
             "home": {"latitude": 53.3000, "longitude": 9.5000}, "shift": everyday},
        ],
        "storage": {"telemetry": {"path": str(data_dir / "telemetry.db")}},
        "detectors": {"checkpoint_path": str(data_dir / "detectors.ckpt")},
        "ticketing": {"database_url": f"sqlite:///{data_dir / 'workorders.db'}"},
        "api": {"host": "127.0.0.1", "port": api_port},
        # The simulated fleet's clock runs `acceleration` times faster than the wall clock, so its
        # timestamps run ahead of the gateway's: allow that here (a real plant keeps the 5-minute default).
        "ingest": {"max_future_skew_s": 366 * 86400},
        # The dashboard shows the devices' own (accelerated) clock, labelled as simulated time.
        "plant": {"name": "Demo plant", "timezone": "Europe/Berlin",
                  "simulated_speed": acceleration if acceleration != 1 else None,
                  "offline_after_s": 300.0 * max(acceleration, 1.0)},
    }


def fleet_for(config: GatewayConfig, broker_host: str, broker_port: int, acceleration: float,
              seed: int, ground_truth: Path | None) -> FleetConfig:
    """A simulator for every asset of the config, publishing where its MQTT source listens."""
    source = config.sources[0]
    return FleetConfig(
        devices=list(device_specs(config).values()),
        host=broker_host, port=broker_port, telemetry_topic=source.topic,
        alarm_topic=source.alarm_topic or "plant/{site}/{device}/alarm",
        acceleration=acceleration, seed=seed, ground_truth=ground_truth,
    )


def _watch(gateway: Gateway, root_url: str, fault_at: float, stop: threading.Event) -> None:
    """Print the first work order as soon as it exists."""
    while not stop.wait(1.0):
        orders = gateway.ticketing.list_work_orders(limit=5)
        if orders:
            order = orders[-1]
            print(
                f"\n>>> Work order {order['code']} opened for {order['device_id']} "
                f"({order['failure_mode']}, {order['priority']}) {time.monotonic() - fault_at:.0f}s after the fault "
                f"was injected; assigned to {order['assigned_engineer_id']}.\n"
                f"    {root_url}/#/work-orders/{order['code']}\n",
                flush=True,
            )
            return


# One sign-in per role; the technician is the engineer the demo's work order goes to.
DEMO_USERS = [("viewer", "viewer", None), ("anna", "technician", "eng-anna"), ("dispatch", "dispatcher", None),
              ("reliability", "reliability_engineer", None), ("admin", "admin", None)]


def seed_demo_identities(gateway: Gateway, api_url: str) -> str:
    """Users of every role with fresh passwords, and an integrator API key; the text that shows them."""
    lines = ["Sign-ins (POST /oauth/token, grant_type=password; passwords are new every run):"]
    for username, role, engineer_id in DEMO_USERS:
        password = secrets.token_urlsafe(12)
        totp = gateway.identities.add_user(username, password, role, engineer_id=engineer_id)
        extra = f"  TOTP secret {totp}" if totp else ""
        lines.append(f"  {role:<22}{username:<13}{password}{extra}")
    _, key = gateway.identities.create_key("demo integration", "integrator", "demo")
    lines += [f"  {'integrator (API key)':<22}{key}",
              f"  e.g. curl -H 'Authorization: Bearer {key}' {api_url}/work-orders"]
    return "\n".join(lines)


def run_demo(data_dir: Path, api_port: int, acceleration: float, healthy_s: float,
             duration_s: float | None, seed: int) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    # Each demo starts from scratch: its story is a warm-up, a healthy period and a fault.
    for stale in ("telemetry.db", "workorders.db", "ground_truth.jsonl", "detectors.ckpt"):
        for path in data_dir.glob(stale + "*"):
            path.unlink()
    broker = Mosquitto.start(directory=data_dir / "mosquitto")
    api_port = api_port or free_port()
    config = parse_config(demo_document(broker.port, api_port, data_dir, acceleration), "demo")
    root_url = f"http://127.0.0.1:{api_port}"
    api_url = f"{root_url}/api/v1"
    simulator = FleetSimulator(fleet_for(config, "127.0.0.1", broker.port, acceleration, seed,
                                         data_dir / "ground_truth.jsonl"))
    sim_thread = threading.Thread(target=simulator.run, name="simulator", daemon=True)
    gateway = Gateway(config)
    stop_watch = threading.Event()

    def repair_when_done(event: WorkOrderEvent) -> None:
        # The engineer fixed it: the simulated machine is healthy again, so verification can see it recover.
        if event.kind == "done" and event.device_id in simulator.models:
            simulator.repair(event.device_id)

    gateway.events.subscribe(repair_when_done)

    def inject_fault() -> None:
        if stop_watch.wait(healthy_s):
            return
        fault = simulator.inject_now(FAULTY_DEVICE, FAULT_KIND, duration_s=900.0)
        print(f"\n>>> Injected {fault.kind} into {FAULTY_DEVICE}. Watch:\n"
              f"    {root_url}/#/device/{FAULTY_DEVICE}\n    {root_url}/#/board\n"
              f"    {api_url}/work-orders\n", flush=True)
        _watch(gateway, root_url, time.monotonic(), stop_watch)

    print(f"pm-gateway demo\n  dashboard  {root_url}/  (sign in with a user below)\n"
          f"  broker  mqtt://127.0.0.1:{broker.port}\n  API     {api_url}  (docs: {root_url}/docs)\n"
          f"  data    {data_dir}\n  {len(config.assets)} simulated devices at {acceleration:g}x speed; "
          f"bearing wear goes into {FAULTY_DEVICE} after {healthy_s:.0f}s. Ctrl-C stops.", flush=True)
    print(seed_demo_identities(gateway, api_url), flush=True)

    async def main() -> None:
        if duration_s is not None:
            asyncio.get_running_loop().call_later(duration_s, gateway.request_stop)
        await gateway.run()

    sim_thread.start()
    threading.Thread(target=inject_fault, name="fault-injector", daemon=True).start()
    try:
        asyncio.run(main())
    finally:
        stop_watch.set()
        simulator.stop()
        sim_thread.join(timeout=5)
        broker.stop()
