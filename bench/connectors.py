"""Connector throughput against the bare client of the same protocol, on the same server, in the same run.

- ``mqtt``: readings/s through the MQTT connector (decode, validation, batching, acknowledgement once the
  sink took the batch) vs a bare paho subscriber that decodes each payload with orjson and counts the
  metrics; both drain the same QoS 1 backlog from one Mosquitto.
- ``modbus``: registers/s read and decoded from 8 simulated devices (one pymodbus server in a process of
  its own, ``pmgw simulate``), polling flat out: the connector (coalesced plan, per-device connections,
  scaling, validation) vs bare pymodbus clients, one per device, sending the same requests and decoding
  the same registers with pymodbus' own converters.
- ``opcua``: notifications/s of 1,000 variables (200 simulated pumps × 5, written flat out by the OPC UA
  simulator in a process of its own, sampled on every change, published every 100 ms by default): the connector's
  subscription (readings with source timestamps and status) vs a bare asyncua subscription that counts.

The connector hands its batches to a sink that only counts and acknowledges: this measures the
connector, not the pipeline behind it (``bench.e2e`` measures the whole gateway).

    python -m bench.connectors mqtt --devices 50 --messages 60000
    python -m bench.connectors modbus --seconds 10
    python -m bench.connectors opcua --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import threading
import time
from pathlib import Path

import socket
import subprocess
import sys
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import yaml
from pymodbus.client import AsyncModbusTcpClient

from bench.e2e import BROKER_TUNING, TOPIC, devices, persistent_client, preload
from connectors.modbus.hub import DeviceHub
from connectors.mqtt import MqttConnector, MqttSourceConfig
from connectors.registry import build_connector
from gateway.broker import Mosquitto, free_port
from gateway.config import parse_config
from gateway.core import Alarm, Done, Reading
from simulators.physics import DeviceSpec


class CountingSink:
    """Takes batches as the pipeline would and acknowledges them at once."""

    def __init__(self, expected: int) -> None:
        self.readings = 0
        self.expected = expected
        self.done = asyncio.Event()

    async def put(self, readings: list[Reading], on_stored: Done | None = None) -> None:
        self.readings += len(readings)
        if on_stored is not None:
            on_stored()
        if self.readings >= self.expected:
            self.done.set()

    async def put_alarm(self, alarm: Alarm, on_done: Done | None = None) -> None:
        if on_done is not None:
            on_done()


def bare_mqtt(broker: Mosquitto, fleet: list[DeviceSpec], messages: int) -> tuple[int, float]:
    """Drain the backlog with paho, decoding every payload with orjson and counting its metrics."""
    client = persistent_client("bench-bare-decode", broker)
    client.subscribe(TOPIC.format(site="+", device="+"), qos=1)
    client.loop(1.0)
    client.disconnect()
    _, readings = preload(broker, fleet, messages)
    counted = 0
    done = threading.Event()

    def on_message(client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        nonlocal counted
        counted += len(orjson.loads(message.payload)["metrics"])
        if counted >= readings:
            done.set()

    client = persistent_client("bench-bare-decode", broker)
    client.on_message = on_message
    started = time.perf_counter()
    client.loop_start()
    if not done.wait(300):
        raise TimeoutError(f"bare subscriber counted {counted} of {readings} readings")
    elapsed = time.perf_counter() - started
    client.loop_stop()
    client.disconnect()
    return readings, elapsed


async def _drain(connector: MqttConnector, sink: CountingSink) -> float:
    task = asyncio.create_task(connector.run(sink, sink))
    started = time.perf_counter()
    try:
        await asyncio.wait_for(sink.done.wait(), 300)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return time.perf_counter() - started


def connector_mqtt(broker: Mosquitto, fleet: list[DeviceSpec], messages: int) -> tuple[int, float]:
    config = MqttSourceConfig.model_validate({
        "type": "mqtt", "name": "bench", "host": broker.host, "port": broker.port, "client_id": "bench-connector",
        "topic": TOPIC, "payload": {"metrics_path": "metrics"}})
    known = {spec.id for spec in fleet}

    async def session_only() -> None:  # the persistent session, so the backlog queues for it
        sink = CountingSink(0)
        task = asyncio.create_task(MqttConnector(config, known).run(sink, sink))
        await asyncio.sleep(1.5)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(session_only())
    _, readings = preload(broker, fleet, messages)
    elapsed = asyncio.run(_drain(MqttConnector(config, known), CountingSink(readings)))
    return readings, elapsed


MODBUS_REGISTERS = [
    {"metric": "vibration", "table": "holding", "address": 0, "type": "float32", "byte_order": "CDAB"},
    {"metric": "bearing_temp", "table": "input", "address": 4, "type": "int16", "scale": 0.1},
    {"metric": "motor_current", "table": "holding", "address": 10, "type": "uint32", "byte_order": "DCBA",
     "scale": 0.001},
    {"metric": "flow", "table": "holding", "address": 12, "type": "float64", "byte_order": "BADC"},
    {"metric": "pressure", "table": "holding", "address": 16, "type": "int32", "scale": 0.001},
    {"metric": "running", "table": "holding", "address": 30, "type": "uint16", "bit": 0},
]


def modbus_document(port: int, units: int) -> dict[str, Any]:
    return {
        "sites": [{"id": "bench", "latitude": 53.5, "longitude": 10.0}],
        "assets": [{"id": f"pump-{i}", "type": "pump", "model": "M", "serial": f"S{i}", "site": "bench"}
                   for i in range(1, units + 1)],
        # max_gap 16: the plan joins holding 0..30 into one request, as the bare client asks (checked below).
        "sources": [{"type": "modbus", "name": "bench", "host": "127.0.0.1", "port": port, "interval_s": 0.001,
                     "max_gap": 16,
                     "devices": [{"device": f"pump-{i}", "unit_id": i, "registers": MODBUS_REGISTERS}
                                 for i in range(1, units + 1)]}],
    }


# What the bare client sends each poll: (table, first register, count).
BARE_REQUESTS = [("holding", 0, 31), ("input", 4, 1)]


def check_same_requests(document: dict[str, Any]) -> None:
    """The connector's plan must be the bare client's requests, or the ratio compares different work."""
    source = parse_config(document, "bench").sources[0]
    for device in source.devices:
        planned = sorted((block.table, block.start, block.count)
                         for blocks in DeviceHub(source, device).blocks.values() for block in blocks)
        if planned != sorted(BARE_REQUESTS):
            raise SystemExit(f"the connector plans {planned} for {device.device}, the bare client sends "
                             f"{BARE_REQUESTS}: not the same work")


async def _poll_bare(port: int, unit: int, until: float) -> int:
    """One device polled flat out by a bare pymodbus client: the connector's two requests, decoded alike."""
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2)
    await client.connect()
    decode = client.convert_from_registers
    kinds = client.DATATYPE
    readings = 0
    try:
        while time.perf_counter() < until:
            holding = (await client.read_holding_registers(0, count=31, device_id=unit)).registers  # BARE_REQUESTS
            temperature = (await client.read_input_registers(4, count=1, device_id=unit)).registers
            values = [
                decode([holding[1], holding[0]], kinds.FLOAT32),  # CDAB: words swapped
                decode(temperature, kinds.INT16) * 0.1,
                decode(_swap_bytes(holding[10:12])[::-1], kinds.UINT32) * 0.001,  # DCBA
                decode(_swap_bytes(holding[12:16]), kinds.FLOAT64),  # BADC: bytes swapped in each word
                decode(holding[16:18], kinds.INT32) * 0.001,
                holding[30] & 1,
            ]
            readings += len([v for v in values if v == v])
    finally:
        client.close()
    return readings


def _swap_bytes(words: list[int]) -> list[int]:
    return [((w & 0xFF) << 8) | (w >> 8) for w in words]


def bare_modbus(port: int, units: int, seconds: float) -> tuple[int, float]:
    async def run() -> int:
        until = time.perf_counter() + seconds
        return sum(await asyncio.gather(*(_poll_bare(port, unit, until) for unit in range(1, units + 1))))

    started = time.perf_counter()
    readings = asyncio.run(run())
    return readings, time.perf_counter() - started


def connector_run(document: dict[str, Any], seconds: float) -> tuple[int, float]:
    """Readings the document's first source hands over in ``seconds``, once it is connected."""
    config = parse_config(document, "bench")
    connector = build_connector(config.sources[0], {asset.id for asset in config.assets})
    sink = CountingSink(10**12)

    async def run() -> float:
        task = asyncio.create_task(connector.run(sink, sink))
        await asyncio.sleep(1.0)  # connected and polling
        counted, started = sink.readings, time.perf_counter()
        await asyncio.sleep(seconds)
        elapsed = time.perf_counter() - started
        sink.readings -= counted
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return elapsed

    elapsed = asyncio.run(run())
    return sink.readings, elapsed


def modbus(units: int, seconds: float) -> tuple[tuple[int, float], tuple[int, float]]:
    port = free_port()
    document = modbus_document(port, units)
    check_same_requests(document)
    with tempfile.TemporaryDirectory(prefix="pmgw-bench-") as folder:
        path = Path(folder) / "modbus.yaml"
        path.write_text(yaml.safe_dump(document))
        server = subprocess.Popen([sys.executable, "-m", "gateway.cli", "simulate", "--config", str(path)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_for_port(port, "the Modbus simulator")
            return bare_modbus(port, units, seconds), connector_run(document, seconds)
        finally:
            server.terminate()
            server.wait(10)


OPCUA_METRICS = ["vibration", "bearing_temp", "motor_current", "flow", "pressure"]


def opcua_document(port: int, devices: int, publishing_ms: float) -> dict[str, Any]:
    """``devices`` pumps of 5 variables each, sampled on every change and published every ``publishing_ms``."""
    ids = [f"pump-{i:03d}" for i in range(devices)]
    return {
        "sites": [{"id": "bench", "latitude": 53.5, "longitude": 10.0}],
        "assets": [{"id": device, "type": "pump", "model": "M", "serial": device, "site": "bench"} for device in ids],
        "sources": [{"type": "opcua", "name": "bench", "url": f"opc.tcp://127.0.0.1:{port}/pmgw/",
                     "publishing_interval_ms": publishing_ms, "sampling_interval_ms": 0.0, "queue_size": 100,
                     "events": {"enabled": False}, "offline_after_s": 600.0,
                     "devices": [{"device": device, "nodes": [{"metric": metric, "node_id": f"ns=2;s={device}.{metric}"}
                                                              for metric in OPCUA_METRICS]} for device in ids]}],
    }


class _Counter:
    def __init__(self) -> None:
        self.notifications = 0

    def datachange_notification(self, node: Any, value: Any, data: Any) -> None:
        self.notifications += 1


async def _bare_opcua(document: dict[str, Any], seconds: float) -> tuple[int, float]:
    """One asyncua subscription of the same variables, with the same intervals and queue, counting."""
    from asyncua import Client

    source = document["sources"][0]
    client = Client(source["url"], timeout=10)
    await client.connect()
    try:
        counter = _Counter()
        subscription = await client.create_subscription(source["publishing_interval_ms"], counter)
        nodes = [client.get_node(node["node_id"]) for device in source["devices"] for node in device["nodes"]]
        for start in range(0, len(nodes), 500):
            await subscription.subscribe_data_change(nodes[start:start + 500], queuesize=source["queue_size"],
                                                     sampling_interval=source["sampling_interval_ms"])
        await asyncio.sleep(2.0)  # the initial values are in
        counted, started = counter.notifications, time.perf_counter()
        await asyncio.sleep(seconds)
        return counter.notifications - counted, time.perf_counter() - started
    finally:
        await client.disconnect()


def opcua(devices: int, seconds: float, publishing_ms: float) -> tuple[tuple[int, float], tuple[int, float]]:
    port = free_port()
    document = opcua_document(port, devices, publishing_ms)
    with tempfile.TemporaryDirectory(prefix="pmgw-bench-") as folder:
        path = Path(folder) / "opcua.yaml"
        path.write_text(yaml.safe_dump(document))
        # The simulator writes every variable as fast as it can (acceleration 0), in a process of its own.
        server = subprocess.Popen([sys.executable, "-m", "gateway.cli", "simulate", "--config", str(path),
                                   "--acceleration", "0"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_for_port(port, "the OPC UA simulator")
            time.sleep(2.0)
            bare = asyncio.run(_bare_opcua(document, seconds))
            ours = connector_run(document, seconds)  # the same counting run, whatever the protocol
            return bare, ours
        finally:
            server.terminate()
            server.wait(10)


def _wait_for_port(port: int, what: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} did not start") from None
            time.sleep(0.1)


def report(unit: str, baseline: str, ours: str, base: tuple[int, float], mine: tuple[int, float]) -> None:
    base_rate, our_rate = base[0] / base[1], mine[0] / mine[1]
    print(f"{'consumer':<52}{unit:>10}{'seconds':>10}{unit + '/s':>14}{'ratio':>8}")
    print(f"{baseline + ' (baseline)':<52}{base[0]:>10}{base[1]:>10.2f}{base_rate:>14.0f}{1:>8.2f}")
    print(f"{ours:<52}{mine[0]:>10}{mine[1]:>10.2f}{our_rate:>14.0f}{our_rate / base_rate:>8.2f}")
    print(f"ratio connector / bare client: {our_rate / base_rate:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("protocol", choices=["mqtt", "modbus", "opcua"])
    parser.add_argument("--devices", type=int, default=50,
                        help="mqtt: devices publishing; modbus: 8 by default; opcua: 200 by default (1,000 variables)")
    parser.add_argument("--messages", type=int, default=60_000, help="mqtt")
    parser.add_argument("--seconds", type=float, default=10.0, help="modbus, opcua: how long each side counts")
    parser.add_argument("--publishing-ms", type=float, default=100.0, help="opcua: the subscription's publishing interval")
    options = parser.parse_args()
    if options.protocol == "opcua":
        count = options.devices if options.devices != 50 else 200
        base, mine = opcua(count, options.seconds, options.publishing_ms)
        report("readings", f"bare asyncua subscription, {count * 5} variables",
               f"OPC UA connector, {count * 5} variables", base, mine)
        return
    if options.protocol == "modbus":
        units = options.devices if options.devices != 50 else 8
        base, mine = modbus(units, options.seconds)
        report("readings", f"bare pymodbus, {units} devices", f"Modbus connector, {units} devices", base, mine)
        return
    fleet = devices(options.devices)
    with tempfile.TemporaryDirectory(prefix="pmgw-bench-") as folder:
        broker = Mosquitto.start(directory=Path(folder) / "broker", extra_config=BROKER_TUNING)
        try:
            base = bare_mqtt(broker, fleet, options.messages)
            ours = connector_mqtt(broker, fleet, options.messages)
        finally:
            broker.stop()
    base_rate, our_rate = base[0] / base[1], ours[0] / ours[1]
    print(f"{'consumer':<48}{'readings':>10}{'seconds':>10}{'readings/s':>14}{'ratio':>8}")
    print(f"{'bare paho + orjson decode (baseline)':<48}{base[0]:>10}{base[1]:>10.2f}{base_rate:>14.0f}{1:>8.2f}")
    print(f"{'MQTT connector (to a counting sink)':<48}{ours[0]:>10}{ours[1]:>10.2f}{our_rate:>14.0f}"
          f"{our_rate / base_rate:>8.2f}")
    print(f"ratio connector / bare client: {our_rate / base_rate:.2f}")


if __name__ == "__main__":
    main()
