"""What the broker saw acknowledged is stored, across kill -9 of the gateway and a broker restart.

Counted, not assumed: the publisher records every sequence number whose PUBACK
it received from the broker; the gateway runs as a real process and is killed
with SIGKILL mid-stream; afterwards every acknowledged sequence number must be
in the embedded store.
"""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path

from gateway.broker import Mosquitto
from tests.conftest import gateway_document, wait_until
from tests.processes import METRICS, CountingPublisher

def stored_sequences(database: Path) -> dict[int, int]:
    """seq -> readings of that message in the embedded store."""
    if not database.exists():
        return {}
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30) as connection:
        rows = connection.execute(
            "SELECT CAST(value AS INTEGER), COUNT(*) FROM readings WHERE device_id = 'pump-01' GROUP BY value"
        ).fetchall()
    return dict(rows)


def test_kill_9_loses_no_message_the_broker_acknowledged(mosquitto: Mosquitto, tmp_path: Path,
                                                         gateway_process) -> None:
    document = gateway_document(mosquitto.port, tmp_path)
    gateway = gateway_process(document, tmp_path).start()
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
    mosquitto: Mosquitto, tmp_path: Path, gateway_process
) -> None:
    gateway = gateway_process(gateway_document(mosquitto.port, tmp_path), tmp_path).start()
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


def test_sighup_reloads_and_sigterm_stops_cleanly_with_its_checkpoint(mosquitto: Mosquitto, tmp_path: Path,
                                                                     gateway_process) -> None:
    """SIGHUP used to kill the gateway outright (no drain, no detector checkpoint, exit -1): now it re-reads
    the file and the gateway goes on; SIGTERM drains and checkpoints."""
    document = gateway_document(mosquitto.port, tmp_path)
    gateway = gateway_process(document, tmp_path).start()
    publisher = CountingPublisher(mosquitto, rate_per_s=100, t0=time.time() - 3600)
    publisher.start()
    try:
        time.sleep(1)
        gateway.process.send_signal(signal.SIGHUP)
        time.sleep(1)
        assert gateway.process.poll() is None and gateway.health() is not None  # still running
    finally:
        publisher.stop()
    gateway.terminate(signal.SIGTERM)  # exit status 0, drained
    assert (tmp_path / "detectors.ckpt").exists()
    assert publisher.acknowledged and stored_sequences(tmp_path / "telemetry.db")
