"""Readings/s of 1, 2 and 3 gateways sharing one plant, and the time to take over a killed one.

Each run starts a fresh Mosquitto and PostgreSQL, and N gateway processes (``pmgw run``) with a
``cluster`` section, which split the MQTT source's partitions between them. Once every partition is
owned, the gateways are paused (SIGSTOP), the fleet simulator publishes a backlog at QoS 1 into their
persistent partition sessions, and they are resumed together (SIGCONT): the time runs until the sum of
their readings stored and scored reaches the backlog. The ratio is against the single gateway of the
same run. Then one gateway is killed (SIGKILL) and the time until its partitions are leased by the
others is the takeover time (bounded by ``lease_s`` plus one renewal round).

    python -m bench.cluster --devices 60 --messages 60000

The machine has 2 cores: the broker, the publisher and every gateway share them, so a second gateway
can at best use the core the first leaves, and a third only competes for the same two.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml
from sqlalchemy import create_engine, text

from bench.e2e import BROKER_TUNING, TOPIC, devices, preload
from gateway.broker import Mosquitto, free_port
from gateway.keyring import Keyring
from simulators.physics import DeviceSpec
from tests.servers import PostgreSQL

PARTITIONS = 12


def document(broker: Mosquitto, database: str, fleet: list[DeviceSpec], directory: Path, name: str,
             lease_s: float) -> dict[str, Any]:
    return {
        "sites": [{"id": "bench", "latitude": 53.5, "longitude": 10.0}],
        "assets": [{"id": d.id, "type": d.type, "model": "M", "serial": d.id, "site": "bench"} for d in fleet],
        "sources": [{"type": "mqtt", "name": "bench", "host": broker.host, "port": broker.port,
                     "client_id": "bench-plant", "topic": TOPIC, "payload": {"metrics_path": "metrics"}}],
        "engineers": [{"id": "e", "name": "E", "skills": ["mechanical"], "home": {"latitude": 53.5, "longitude": 10}}],
        "storage": {"telemetry": {"path": str(directory / "telemetry.db")}},
        "ticketing": {"database_url": database},
        "auth": {"keyring_file": str(directory / "gateway.key")},
        "api": {"port": free_port()},
        "cluster": {"gateway_id": name, "partitions": PARTITIONS, "lease_s": lease_s, "renew_every_s": 1.0},
        "log_level": "WARNING",
        "ingest": {"max_future_skew_s": 366 * 86400},  # the backlog's clock runs far ahead of the wall clock
    }


class Member:
    def __init__(self, config: dict[str, Any], directory: Path) -> None:
        self.path = directory / "gateway.yaml"
        self.path.write_text(yaml.safe_dump(config))
        self.api = f"http://127.0.0.1:{config['api']['port']}"
        self.process = subprocess.Popen([sys.executable, "-m", "gateway.cli", "run", "--config", str(self.path)],
                                        stdout=subprocess.DEVNULL, stderr=(directory / "gateway.log").open("ab"),
                                        start_new_session=True)

    def health(self) -> dict[str, Any]:
        try:
            return httpx.get(f"{self.api}/health", timeout=10).json()
        except httpx.HTTPError:
            return {}

    def signal(self, sig: signal.Signals) -> None:
        os.killpg(self.process.pid, sig)  # its detector workers too

    def stop(self) -> None:
        if self.process.poll() is None:
            self.signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)


def wait(condition: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(0.05)
    raise TimeoutError(what)


def owners(engine: Any) -> dict[str, str]:
    with engine.connect() as connection:
        if connection.execute(text("SELECT to_regclass('cluster_leases')")).scalar() is None:
            return {}
        return dict(connection.execute(text("SELECT unit, owner FROM cluster_leases WHERE expires_at > now()")).all())


def run(gateways: int, fleet: list[DeviceSpec], messages: int, scratch: Path, lease_s: float) -> dict[str, float]:
    scratch.mkdir()
    broker = Mosquitto.start(directory=scratch / "broker", extra_config=BROKER_TUNING)
    database = PostgreSQL().start()
    engine = create_engine(database.url)
    Keyring.load(scratch / "plant.key")
    members: list[Member] = []
    try:
        for k in range(gateways):
            directory = scratch / f"gw-{k}"
            directory.mkdir()
            (directory / "gateway.key").write_bytes((scratch / "plant.key").read_bytes())
            members.append(Member(document(broker, database.url, fleet, directory, f"gw-{k}", lease_s), directory))
        every = {f"mqtt/bench/{p}" for p in range(PARTITIONS)}
        wait(lambda: set(owners(engine)) == every and len(set(owners(engine).values())) == gateways, 120,
             "every partition owned by every gateway")
        wait(lambda: sum(len((m.health().get("cluster") or {}).get("units") or []) for m in members) == PARTITIONS,
             60, "every partition running")
        for member in members:
            member.signal(signal.SIGSTOP)
        _, readings = preload(broker, fleet, messages)
        started = time.perf_counter()
        for member in members:
            member.signal(signal.SIGCONT)

        def done() -> bool:
            counts = [((m.health().get("pipeline") or {}).get("counts") or {}) for m in members]
            return (sum(c.get("readings_stored", 0) for c in counts) >= readings
                    and sum(c.get("readings_scored", 0) for c in counts) >= readings)

        wait(done, 600, "the backlog stored and scored")
        elapsed = time.perf_counter() - started
        takeover = None
        if gateways > 1:
            victim = members[0]
            victim.signal(signal.SIGKILL)
            killed = time.perf_counter()
            wait(lambda: set(owners(engine)) == every and "gw-0" not in owners(engine).values(), 120,
                 "the killed gateway's partitions taken over")
            takeover = time.perf_counter() - killed
        return {"readings": readings, "seconds": elapsed, "takeover_s": takeover}
    finally:
        for member in members:
            member.stop()
        engine.dispose()
        database.stop()
        broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=60)
    parser.add_argument("--messages", type=int, default=60_000)
    parser.add_argument("--lease-s", type=float, default=10.0)
    parser.add_argument("--gateways", type=int, nargs="+", default=[1, 2, 3])
    options = parser.parse_args()
    fleet = devices(options.devices)
    rows = {}
    with tempfile.TemporaryDirectory(prefix="pmgw-bench-cluster-") as folder:
        for count in options.gateways:
            rows[count] = run(count, fleet, options.messages, Path(folder) / f"run-{count}", options.lease_s)
    base = rows[min(rows)]["readings"] / rows[min(rows)]["seconds"]
    print(f"{os.cpu_count()} cores; {options.devices} devices, {PARTITIONS} partitions, lease {options.lease_s:g} s\n")
    print("| gateways | readings | seconds | readings/s | ratio to 1 gateway | takeover after kill -9 |")
    print("|---|---|---|---|---|---|")
    for count, row in rows.items():
        rate = row["readings"] / row["seconds"]
        takeover = f"{row['takeover_s']:.1f} s" if row["takeover_s"] is not None else "—"
        print(f"| {count} | {row['readings']:,} | {row['seconds']:.2f} | {rate:,.0f} | {rate / base:.2f} | {takeover} |")


if __name__ == "__main__":
    main()
