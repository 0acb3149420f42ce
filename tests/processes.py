"""Helpers for tests that count what a sender saw acknowledged: a numbered QoS 1 publisher and the
gateway as a real process that can be SIGKILLed."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from gateway.broker import Mosquitto
from tests.conftest import wait_until

METRICS = 10  # readings per message
TOPIC = "plant/north/pump-01/telemetry"


class CountingPublisher:
    """Publishes numbered QoS 1 messages at a steady rate and remembers which ones the broker acknowledged."""

    def __init__(self, broker: Mosquitto, rate_per_s: float, t0: float, client_id: str = "counting-publisher") -> None:
        self.rate_per_s = rate_per_s
        self.t0 = t0
        self.published = 0
        self._sent: list[tuple[int, mqtt.MQTTMessageInfo]] = []
        # PUBACKs by message id (ids are not reused: a test publishes far fewer than 65,535 messages).
        self._acknowledged_mids: set[int] = set()
        self._stop = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.max_queued_messages_set(0)
        self.client.max_inflight_messages_set(1000)
        self.client.on_publish = lambda client, userdata, mid, reason, properties: (
            None if reason.is_failure else self._acknowledged_mids.add(mid))
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self._thread = threading.Thread(target=self._publish, daemon=True)

    def payload(self, seq: int) -> bytes:
        return orjson.dumps({"ts": self.t0 + seq * 0.001, "metrics": {f"m{k}": float(seq) for k in range(METRICS)}})

    @property
    def acknowledged(self) -> set[int]:
        """Sequence numbers whose PUBACK came back from the broker."""
        return {seq for seq, info in self._sent if info.mid in self._acknowledged_mids}

    def _publish(self) -> None:
        started = time.monotonic()
        while not self._stop.is_set():
            seq = self.published
            self._sent.append((seq, self.client.publish(TOPIC, self.payload(seq), qos=1)))
            self.published += 1
            ahead = self.published / self.rate_per_s - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        wait_until(lambda: len(self._acknowledged_mids) >= len(self._sent), timeout=60,
                   what="the broker to acknowledge every publish")
        self.client.loop_stop()
        self.client.disconnect()


class FleetPublisher:
    """QoS 1 messages for many devices, round robin at a steady total rate, each (device, timestamp) remembered
    with its PUBACK; ``fault`` raises a device's vibration for a while (the ground truth of an injected fault)."""

    def __init__(self, broker: Mosquitto, devices: list[str], rate_per_s: float, client_id: str = "fleet") -> None:
        self.devices = devices
        self.rate_per_s = rate_per_s
        self.published = 0
        self._sent: list[tuple[str, float, mqtt.MQTTMessageInfo]] = []
        self._acknowledged_mids: set[int] = set()
        self._faults: dict[str, tuple[float, float]] = {}
        self._stop = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.max_queued_messages_set(0)
        self.client.max_inflight_messages_set(1000)
        self.client.on_publish = lambda client, userdata, mid, reason, properties: (
            None if reason.is_failure else self._acknowledged_mids.add(mid))
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self._thread = threading.Thread(target=self._publish, daemon=True)
        self._random = random.Random(7)

    def fault(self, device: str, seconds: float) -> None:
        now = time.time()
        self._faults[device] = (now, now + seconds)

    def _vibration(self, device: str, at: float) -> float:
        start, end = self._faults.get(device, (0.0, 0.0))
        return (9.0 if start <= at < end else 2.0) + self._random.gauss(0, 0.05)

    @property
    def acknowledged(self) -> set[tuple[str, float]]:
        return {(device, ts) for device, ts, info in self._sent if info.mid in self._acknowledged_mids}

    def _publish(self) -> None:
        started = time.monotonic()
        while not self._stop.is_set():
            device = self.devices[self.published % len(self.devices)]
            ts = round(time.time(), 6)
            payload = orjson.dumps({"ts": ts, "metrics": {"vibration": self._vibration(device, ts),
                                                          "temperature": 40.0 + self._random.gauss(0, 0.2)}})
            self._sent.append((device, ts, self.client.publish(f"plant/north/{device}/telemetry", payload, qos=1)))
            self.published += 1
            ahead = self.published / self.rate_per_s - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        wait_until(lambda: len(self._acknowledged_mids) >= len(self._sent), timeout=60,
                   what="the broker to acknowledge every publish")
        self.client.loop_stop()
        self.client.disconnect()


class GatewayProcess:
    """The gateway as a real process (``pmgw run``), so it can be SIGKILLed. Use as a context manager:
    whatever a test does, the process does not outlive it."""

    def __init__(self, document: dict[str, Any], directory: Path) -> None:
        self.config = directory / "gateway.yaml"
        self.config.write_text(yaml.safe_dump(document))
        self.log = directory / "gateway.log"
        self.api = f"http://127.0.0.1:{document['api']['port']}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> "GatewayProcess":
        """Start it; with ``wait``, return once its first connector is connected."""
        self.process = subprocess.Popen([sys.executable, "-m", "gateway.cli", "run", "--config", str(self.config)],
                                        stdout=subprocess.DEVNULL, stderr=self.log.open("ab"))
        if wait:
            wait_until(lambda: ((self.health() or {}).get("connectors") or [{}])[0].get("connected"), timeout=30,
                       what="gateway connected")
        return self

    def health(self) -> dict[str, Any] | None:
        try:
            return httpx.get(f"{self.api}/health", timeout=5).json()
        except httpx.HTTPError:
            return None

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def terminate(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Stop it with ``sig``; it must exit 0 (a clean stop) within a minute."""
        assert self.process is not None
        self.process.send_signal(sig)
        assert self.process.wait(60) == 0, self.log.read_text()[-3000:]

    def __enter__(self) -> "GatewayProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
