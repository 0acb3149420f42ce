"""Fixtures that start real parts on loopback: Mosquitto, the gateway with its API."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest

from gateway.broker import Mosquitto, free_port
from gateway.config import parse_config
from gateway.threaded import GatewayThread

EVERY_DAY = {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start": "00:00", "end": "24:00"}


def chain_parts(directory: Path) -> dict[str, Any]:
    """What a TicketingService needs for keyed chains: a keyring and an audit log, in ``directory``."""
    from gateway.audit import AuditLog
    from gateway.keyring import Keyring

    keyring = Keyring.load(directory / "gateway.key")
    return {"signer": keyring, "anchors": AuditLog(f"sqlite:///{directory / 'audit.db'}", keyring)}


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    broker = Mosquitto.start(directory=tmp_path / "mosquitto")
    yield broker
    broker.stop()


def gateway_document(broker_port: int, data_dir: Path, **overrides: Any) -> dict[str, Any]:
    """A small plant: two pumps and a motor at one site, two engineers."""
    document: dict[str, Any] = {
        "log_level": "INFO",
        "sites": [{"id": "north", "name": "North plant", "latitude": 53.55, "longitude": 9.99}],
        "assets": [
            {"id": "pump-01", "type": "pump", "model": "Etanorm 80-250", "serial": "S1", "site": "north",
             "criticality": "high", "firmware": "2.4.1"},
            {"id": "pump-02", "type": "pump", "model": "Etanorm 80-250", "serial": "S2", "site": "north",
             "criticality": "high", "firmware": "2.4.1"},
            {"id": "motor-01", "type": "motor", "model": "1LE1 75kW", "serial": "S3", "site": "north"},
        ],
        "sources": [{
            "type": "mqtt", "name": "test-broker", "host": "127.0.0.1", "port": broker_port,
            "client_id": f"pmgw-test-{broker_port}", "topic": "plant/{site}/{device}/telemetry",
            "alarm_topic": "plant/{site}/{device}/alarm", "payload": {"metrics_path": "metrics"},
            "batch_size": 200,
        }],
        "engineers": [
            # Closest to the site, but an electrician: must never get a mechanical job.
            {"id": "eng-near-electrical", "name": "Ben", "skills": ["electrical"],
             "home": {"latitude": 53.551, "longitude": 9.991}, "shift": EVERY_DAY},
            {"id": "eng-mechanical", "name": "Anna", "skills": ["mechanical"],
             "home": {"latitude": 53.60, "longitude": 10.05}, "shift": EVERY_DAY},
            {"id": "eng-far-mechanical", "name": "Carla", "skills": ["mechanical"],
             "home": {"latitude": 52.52, "longitude": 13.40}, "shift": EVERY_DAY},
        ],
        "storage": {"telemetry": {"path": str(data_dir / "telemetry.db")}},
        "ticketing": {"database_url": f"sqlite:///{data_dir / 'workorders.db'}"},
        "api": {"host": "127.0.0.1", "port": free_port()},
    }
    document.update(overrides)
    # Model state goes with the test's other data, never into the working directory.
    document["detectors"] = {"checkpoint_path": str(data_dir / "detectors.ckpt"), **document.get("detectors", {})}
    return document


class RunningGateway:
    """A Gateway in its own thread, and an HTTP client for its API."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.config = parse_config(document, "test")
        self.thread = GatewayThread(self.config)
        self.gateway = self.thread.gateway
        self.url = f"http://127.0.0.1:{self.config.api.port}"
        self.api = f"{self.url}/api/v1"
        # The tests act as an admin integration, by API key, unless a test signs in otherwise.
        _, self.admin_key = self.gateway.identities.create_key("tests", "admin", "tests")
        self.http = httpx.Client(base_url=self.api, timeout=10, headers={"Authorization": f"Bearer {self.admin_key}"})

    def start(self) -> "RunningGateway":
        self.thread.start()
        wait_until(self._api_up, timeout=20, what="gateway API to answer")
        return self

    def _api_up(self) -> bool:
        try:
            return self.http.get("/health").status_code == 200
        except httpx.HTTPError:
            return False

    def get(self, path: str, **params: Any) -> Any:
        response = self.http.get(path, params=params)
        response.raise_for_status()
        return response.json()

    def items(self, path: str, **params: Any) -> list[Any]:
        """The items of a list endpoint (its first page: at most 100)."""
        return self.get(path, **params)["items"]

    def stop(self) -> None:
        self.http.close()
        self.thread.stop()


def wait_until(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


@pytest.fixture
def start_gateway() -> Iterator[Callable[[dict[str, Any]], RunningGateway]]:
    started: list[RunningGateway] = []

    def start(document: dict[str, Any]) -> RunningGateway:
        running = RunningGateway(document).start()
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


@pytest.fixture
def gateway_process() -> Iterator[Callable[[dict[str, Any], Path], Any]]:
    """Make gateway processes (``tests.processes.GatewayProcess``); none outlives the test."""
    from tests.processes import GatewayProcess

    made: list[GatewayProcess] = []

    def make(document: dict[str, Any], directory: Path) -> GatewayProcess:
        made.append(GatewayProcess(document, directory))
        return made[-1]

    yield make
    for process in made:
        process.__exit__()
