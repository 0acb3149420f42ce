"""End-to-end throughput: readings/s through the whole gateway vs a bare paho subscriber.

Both consumers drain the same kind of backlog from the same Mosquitto in the
same run: each subscribes with a persistent session, goes offline, the fleet
simulator publishes N messages at QoS 1 (the broker queues them), and the
consumer reconnects and drains. The gateway's time runs until every reading is
stored *and* scored by the detectors (work orders included); the baseline's
until its last message arrives.

    python -m bench.e2e --devices 50 --messages 60000 --workers 2
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.broker import Mosquitto, free_port
from gateway.config import parse_config
from gateway.threaded import GatewayThread
from simulators.mqtt_fleet import FleetConfig, FleetSimulator
from simulators.physics import DEVICE_TYPES, DeviceModel, DeviceSpec

TOPIC = "plant/{site}/{device}/telemetry"
BROKER_TUNING = "max_inflight_messages 1000\nmax_queued_messages 1000000\nmax_queued_bytes 0\n"


def devices(count: int) -> list[DeviceSpec]:
    return [DeviceSpec(f"dev-{i:04d}", DEVICE_TYPES[i % len(DEVICE_TYPES)], "bench") for i in range(count)]


def preload(broker: Mosquitto, fleet: list[DeviceSpec], messages: int) -> tuple[int, int]:
    """Publish about ``messages`` telemetry messages at QoS 1; returns (messages, readings) published."""
    ticks = max(1, messages // len(fleet))
    simulator = FleetSimulator(FleetConfig(
        devices=fleet, host=broker.host, port=broker.port, telemetry_topic=TOPIC, acceleration=0,
        qos=1, duration_s=float(ticks),
    ))
    simulator.run()
    readings_per_tick = sum(len(DeviceModel(spec, seed=0).step(0.0)) for spec in fleet)
    return simulator.published, ticks * readings_per_tick


def persistent_client(client_id: str, broker: Mosquitto) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = 3600
    client.connect(broker.host, broker.port, clean_start=False, properties=properties)
    return client


def bare_paho(broker: Mosquitto, fleet: list[DeviceSpec], messages: int) -> tuple[int, float]:
    """Drain the backlog with a plain paho subscriber that only counts messages."""
    client = persistent_client("bench-bare", broker)
    client.subscribe(TOPIC.format(site="+", device="+"), qos=1)
    client.loop(1.0)
    client.disconnect()
    published, readings = preload(broker, fleet, messages)
    received = 0
    done = threading.Event()

    def on_message(client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        nonlocal received
        received += 1
        if received >= published:
            done.set()

    client = persistent_client("bench-bare", broker)
    client.on_message = on_message
    started = time.perf_counter()
    client.loop_start()
    if not done.wait(120):
        raise TimeoutError(f"bare subscriber got {received} of {published} messages")
    elapsed = time.perf_counter() - started
    client.loop_stop()
    client.disconnect()
    return readings, elapsed


def gateway_config(broker: Mosquitto, fleet: list[DeviceSpec], data_dir: Path, workers: int,
                   acknowledge: str) -> dict:
    return {
        "sites": [{"id": "bench", "latitude": 53.5, "longitude": 10.0}],
        "assets": [{"id": d.id, "type": d.type, "model": "M", "serial": d.id, "site": "bench"} for d in fleet],
        "sources": [{"type": "mqtt", "name": "bench", "host": broker.host, "port": broker.port,
                     "client_id": f"bench-gateway-{acknowledge}", "topic": TOPIC, "acknowledge": acknowledge,
                     "payload": {"metrics_path": "metrics"}}],
        "engineers": [{"id": "e", "name": "E", "skills": ["mechanical"], "home": {"latitude": 53.5, "longitude": 10}}],
        "storage": {"telemetry": {"path": str(data_dir / f"telemetry-{acknowledge}.db")}},
        "ticketing": {"database_url": f"sqlite:///{data_dir / f'wo-{acknowledge}.db'}"},
        "api": {"enabled": False, "port": free_port()},
        "detectors": {"workers": workers, "checkpoint_path": str(data_dir / f"detectors-{acknowledge}.ckpt")},
        "log_level": "WARNING",
        # The backlog is simulated flat out: its clock runs far ahead of the wall clock.
        "ingest": {"max_future_skew_s": 366 * 86400},
    }


def through_gateway(
    broker: Mosquitto, fleet: list[DeviceSpec], messages: int, data_dir: Path, workers: int, acknowledge: str
) -> tuple[int, float]:
    config = parse_config(gateway_config(broker, fleet, data_dir, workers, acknowledge), "bench")
    GatewayThread(config).start().stop()  # creates the persistent session
    _, readings = preload(broker, fleet, messages)
    running = GatewayThread(config)
    started = time.perf_counter()
    running.start()
    while True:
        pipeline = running.gateway.pipeline
        counts = pipeline.counts if pipeline else {}
        if counts.get("readings_scored", 0) >= readings and counts.get("readings_stored", 0) >= readings:
            break
        if time.perf_counter() - started > 300:
            raise TimeoutError(f"gateway processed {dict(counts)} of {readings} readings")
        time.sleep(0.01)
    elapsed = time.perf_counter() - started
    running.stop()
    return readings, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--messages", type=int, default=60_000)
    parser.add_argument("--workers", type=int, default=1, help="detector worker processes (0: in-process)")
    args = parser.parse_args()
    fleet = devices(args.devices)
    with tempfile.TemporaryDirectory(prefix="pmgw-bench-") as tmp:
        broker = Mosquitto.start(directory=Path(tmp) / "broker", extra_config=BROKER_TUNING)
        try:
            base_readings, base_s = bare_paho(broker, fleet, args.messages)
            runs = {mode: through_gateway(broker, fleet, args.messages, Path(tmp), args.workers, mode)
                    for mode in ("stored", "received")}
        finally:
            broker.stop()
    base_rate = base_readings / base_s
    print(f"{'consumer':<52}{'readings':>10}{'seconds':>10}{'readings/s':>14}{'ratio':>8}")
    print(f"{'bare paho subscriber (baseline)':<52}{base_readings:>10}{base_s:>10.2f}{base_rate:>14.0f}{1:>8.2f}")
    for mode, (readings, seconds) in runs.items():
        label = f"gateway, {args.workers} detector worker(s), acknowledge: {mode}"
        print(f"{label:<52}{readings:>10}{seconds:>10.2f}{readings / seconds:>14.0f}{readings / seconds / base_rate:>8.2f}")
    stored, received = (runs[mode][0] / runs[mode][1] for mode in ("stored", "received"))
    print(f"ratio gateway / baseline: {stored / base_rate:.2f} (acknowledged once stored; "
          f"{received / base_rate:.2f} acknowledged on receipt; stored / on receipt {stored / received:.2f})")


if __name__ == "__main__":
    main()
