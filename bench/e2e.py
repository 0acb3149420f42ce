"""End-to-end throughput: readings/s through the whole gateway vs a bare paho subscriber.

Both consumers drain the same kind of backlog from the same Mosquitto in the
same run: each subscribes with a persistent session, goes offline, the fleet
simulator publishes N messages at QoS 1 (the broker queues them), and the
consumer reconnects and drains. The gateway's time runs until every reading is
stored *and* scored by the detectors (work orders included), and with
``--influx`` until a real InfluxDB (started here) holds every reading, counted
there; the baseline's until its last message arrives. ``--repeat`` runs the
whole comparison several times and reports the median ratio, as rates on a
small shared box move by several per cent between runs.

    python -m bench.e2e --devices 50 --messages 60000 --workers 1 [--influx] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
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
from tests.servers import InfluxD, new_influxd

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


def end_session(client_id: str, broker: Mosquitto) -> None:
    """Drop a consumer's persistent session, so the next run's backlog is not queued for it as well."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.connect(broker.host, broker.port, clean_start=True)
    client.loop(1.0)
    client.disconnect()


def bare_paho(broker: Mosquitto, fleet: list[DeviceSpec], messages: int, client_id: str) -> tuple[int, float]:
    """Drain the backlog with a plain paho subscriber that only counts messages."""
    client = persistent_client(client_id, broker)
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

    client = persistent_client(client_id, broker)
    client.on_message = on_message
    started = time.perf_counter()
    client.loop_start()
    if not done.wait(120):
        raise TimeoutError(f"bare subscriber got {received} of {published} messages")
    elapsed = time.perf_counter() - started
    client.loop_stop()
    client.disconnect()
    end_session(client_id, broker)
    return readings, elapsed


def gateway_config(broker: Mosquitto, fleet: list[DeviceSpec], data_dir: Path, workers: int,
                   acknowledge: str, client_id: str, influx: InfluxD | None = None, database: str = "") -> dict:
    sinks = [{"type": "influxdb", "name": "bench-influx", "api": "v1", "url": influx.url, "database": database,
              "gzip": False, "buffer": {"path": str(data_dir / f"buffer-{database}.db")}}] if influx else []
    return {
        "sites": [{"id": "bench", "latitude": 53.5, "longitude": 10.0}],
        "assets": [{"id": d.id, "type": d.type, "model": "M", "serial": d.id, "site": "bench"} for d in fleet],
        "sources": [{"type": "mqtt", "name": "bench", "host": broker.host, "port": broker.port,
                     "client_id": client_id, "topic": TOPIC, "acknowledge": acknowledge,
                     "payload": {"metrics_path": "metrics"}}],
        "engineers": [{"id": "e", "name": "E", "skills": ["mechanical"], "home": {"latitude": 53.5, "longitude": 10}}],
        "storage": {"telemetry": {"path": str(data_dir / f"telemetry-{acknowledge}.db")}, "sinks": sinks},
        "ticketing": {"database_url": f"sqlite:///{data_dir / f'wo-{acknowledge}.db'}"},
        "api": {"enabled": False, "port": free_port()},
        "detectors": {"workers": workers, "checkpoint_path": str(data_dir / f"detectors-{acknowledge}.ckpt")},
        "log_level": "WARNING",
        # The backlog is simulated flat out: its clock runs far ahead of the wall clock.
        "ingest": {"max_future_skew_s": 366 * 86400},
    }


def influx_count(influx: InfluxD, database: str) -> int:
    rows = influx.query(database, 'SELECT COUNT("value") FROM "telemetry"')
    return int(rows[0][1]) if rows else 0


def through_gateway(
    broker: Mosquitto, fleet: list[DeviceSpec], messages: int, data_dir: Path, workers: int, acknowledge: str,
    influx: InfluxD | None, client_id: str,
) -> tuple[int, float]:
    database = f"bench_{acknowledge}_{time.time_ns()}"
    if influx is not None:
        influx.create_database(database)
    config = parse_config(gateway_config(broker, fleet, data_dir, workers, acknowledge, client_id, influx, database), "bench")
    GatewayThread(config).start().stop()  # creates the persistent session
    _, readings = preload(broker, fleet, messages)
    running = GatewayThread(config)
    started = time.perf_counter()
    running.start()
    while True:
        pipeline = running.gateway.pipeline
        counts = pipeline.counts if pipeline else {}
        if counts.get("readings_scored", 0) >= readings and counts.get("readings_stored", 0) >= readings:
            sinks = running.gateway.remote_sinks
            if not sinks or all(sink.buffer.pending_readings == 0 for sink in sinks):
                break
        if time.perf_counter() - started > 300:
            raise TimeoutError(f"gateway processed {dict(counts)} of {readings} readings")
        time.sleep(0.01)
    elapsed = time.perf_counter() - started
    assert pipeline is not None
    gave_way = pipeline.precedence.diagnostics()
    print(f"  ({acknowledge}: {pipeline.counts.get('findings_ticketed', 0)} findings ticketed meanwhile; storing and "
          f"scoring gave way to them {gave_way['gave_way']} times, {gave_way['waited_s']:.2f} s)", flush=True)
    running.stop()
    end_session(client_id, broker)
    if influx is not None:
        # Counted in InfluxDB itself, not taken from the forwarder's word.
        stored = influx_count(influx, database)
        if stored != readings:
            raise AssertionError(f"InfluxDB holds {stored} of {readings} readings")
    return readings, elapsed


def compare(broker: Mosquitto, fleet: list[DeviceSpec], args: argparse.Namespace, directory: Path,
            influx: InfluxD | None) -> dict[str, tuple[int, float]]:
    """One bare paho drain, then the gateway acknowledging once stored and on receipt: (readings, seconds)."""
    runs = {"baseline": bare_paho(broker, fleet, args.messages, f"bench-bare-{directory.name}")}
    for mode in ("stored", "received"):
        runs[mode] = through_gateway(broker, fleet, args.messages, directory, args.workers, mode, influx,
                                     f"bench-gateway-{mode}-{directory.name}")
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--messages", type=int, default=60_000)
    parser.add_argument("--workers", type=int, default=1, help="detector worker processes (0: in-process)")
    parser.add_argument("--influx", action="store_true",
                        help="an InfluxDB sink behind the durable buffer too (a real InfluxDB started here)")
    parser.add_argument("--repeat", type=int, default=1, help="comparisons in a row; the median ratio is reported")
    args = parser.parse_args()
    fleet = devices(args.devices)
    results: list[dict[str, tuple[int, float]]] = []
    with tempfile.TemporaryDirectory(prefix="pmgw-bench-") as tmp:
        broker = Mosquitto.start(directory=Path(tmp) / "broker", extra_config=BROKER_TUNING)
        influx = new_influxd(Path(tmp) / "influx") if args.influx else None
        try:
            for repeat in range(args.repeat):
                directory = Path(tmp) / f"run-{repeat}"
                directory.mkdir()
                results.append(compare(broker, fleet, args, directory, influx))
        finally:
            if influx is not None:
                influx.stop()
            broker.stop()
    sink = " and an InfluxDB sink (every reading counted there)" if args.influx else ""
    print(f"{args.devices} devices, {args.messages} messages, {args.workers} detector worker(s), "
          f"embedded store{sink}")
    print(f"{'run':<5}{'consumer':<44}{'readings':>10}{'seconds':>10}{'readings/s':>14}{'ratio':>8}")
    ratios: dict[str, list[float]] = {"stored": [], "received": []}
    for number, runs in enumerate(results, 1):
        base_rate = runs["baseline"][0] / runs["baseline"][1]
        for mode, (readings, seconds) in runs.items():
            rate = readings / seconds
            label = "bare paho subscriber (baseline)" if mode == "baseline" else f"gateway, acknowledge: {mode}"
            print(f"{number:<5}{label:<44}{readings:>10}{seconds:>10.2f}{rate:>14.0f}{rate / base_rate:>8.2f}")
            if mode in ratios:
                ratios[mode].append(rate / base_rate)
    stored, received = (statistics.median(ratios[mode]) for mode in ("stored", "received"))
    print(f"ratio gateway / baseline, median of {len(results)}: {stored:.2f} acknowledged once stored "
          f"({', '.join(f'{r:.2f}' for r in ratios['stored'])}); {received:.2f} acknowledged on receipt "
          f"({', '.join(f'{r:.2f}' for r in ratios['received'])})")


if __name__ == "__main__":
    main()
