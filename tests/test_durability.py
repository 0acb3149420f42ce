"""What the broker saw acknowledged is stored, across kill -9 of the gateway and a broker restart.

Counted, not assumed: the publisher records every sequence number whose PUBACK
it received from the broker; the gateway runs as a real process and is killed
with SIGKILL mid-stream; afterwards every acknowledged sequence number must be
in the embedded store.
"""

from __future__ import annotations

import signal
import sqlite3
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
from tests.conftest import gateway_document, wait_until

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


class GatewayProcess:
    def __init__(self, document: dict[str, Any], directory: Path) -> None:
        self.config = directory / "gateway.yaml"
        self.config.write_text(yaml.safe_dump(document))
        self.log = directory / "gateway.log"
        self.api = f"http://127.0.0.1:{document['api']['port']}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> "GatewayProcess":
        self.process = subprocess.Popen([sys.executable, "-m", "gateway.cli", "run", "--config", str(self.config)],
                                        stdout=subprocess.DEVNULL, stderr=self.log.open("ab"))
        wait_until(lambda: (self.health() or {}).get("connectors", [{}])[0].get("connected"), timeout=30,
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

    def terminate(self) -> None:
        assert self.process is not None
        self.process.terminate()
        assert self.process.wait(60) == 0, self.log.read_text()[-3000:]


def stored_sequences(database: Path) -> dict[int, int]:
    """seq -> readings of that message in the embedded store."""
    if not database.exists():
        return {}
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30) as connection:
        rows = connection.execute(
            "SELECT CAST(value AS INTEGER), COUNT(*) FROM readings WHERE device_id = 'pump-01' GROUP BY value"
        ).fetchall()
    return dict(rows)


def test_kill_9_loses_no_message_the_broker_acknowledged(mosquitto: Mosquitto, tmp_path: Path) -> None:
    document = gateway_document(mosquitto.port, tmp_path)
    gateway = GatewayProcess(document, tmp_path).start()
    publisher = CountingPublisher(mosquitto, rate_per_s=400, t0=time.time() - 3600)  # 4,000 readings/s
    publisher.start()
    try:
        for _ in range(2):
            time.sleep(3)
            gateway.kill()  # SIGKILL mid-stream: whatever sat in memory is gone
            time.sleep(1)   # the broker keeps queueing for the gateway's persistent session
            gateway.start()
        time.sleep(2)
    finally:
        publisher.stop()
    database = tmp_path / "telemetry.db"
    acknowledged = publisher.acknowledged
    try:
        wait_until(lambda: acknowledged <= set(stored_sequences(database)), timeout=60,
                   what="every acknowledged message in the store")
    finally:
        stored = stored_sequences(database)
        missing = sorted(acknowledged - set(stored))
        print(f"published {publisher.published}, acknowledged by the broker {len(acknowledged)}, "
              f"stored {len(stored)}, missing {len(missing)}: {missing[:20]}")
        gateway.terminate()
    assert len(acknowledged) > 3000
    assert all(stored[seq] == METRICS for seq in acknowledged)


def test_broker_restart_while_the_gateway_is_away_loses_no_acknowledged_message(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    gateway = GatewayProcess(gateway_document(mosquitto.port, tmp_path), tmp_path).start()
    publisher = CountingPublisher(mosquitto, rate_per_s=200, t0=time.time() - 3600)
    publisher.start()
    restarted: Mosquitto | None = None
    try:
        time.sleep(1)
        gateway.terminate()  # from now on the broker queues for the gateway's persistent session
        time.sleep(2)
        mosquitto.stop()  # what it queued must survive in its persistence file
        time.sleep(1)  # the publisher keeps publishing into its own queue during the outage
        restarted = Mosquitto.start(port=mosquitto.port, directory=mosquitto.directory)
        time.sleep(2)
        gateway.start()
        time.sleep(1)
        publisher.stop()
        acknowledged = publisher.acknowledged
        database = tmp_path / "telemetry.db"
        try:
            wait_until(lambda: acknowledged <= set(stored_sequences(database)), timeout=60,
                       what="every acknowledged message in the store")
        finally:
            missing = sorted(acknowledged - set(stored_sequences(database)))
            print(f"published {publisher.published}, acknowledged {len(acknowledged)}, missing {len(missing)}")
            gateway.terminate()
        assert len(acknowledged) > 1000
    finally:
        if restarted is not None:
            restarted.stop()
    assert "Permission denied" not in (mosquitto.directory / "mosquitto.log").read_text()
