"""InfluxDB 1.6 and VictoriaMetrics on free loopback ports, from binaries scripts/setup.sh unpacked."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson

from gateway.broker import free_port, stop_process, wait_for_port

SERVERS = Path(__file__).resolve().parent.parent / ".cache" / "servers" / "usr" / "bin"


def _binary(name: str) -> Path:
    path = SERVERS / name
    if not path.exists():
        raise RuntimeError(f"{path} is missing: run 'bash scripts/setup.sh' (the test command does)")
    return path


@dataclass
class Server:
    port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
        self.process = None


class InfluxD(Server):
    """InfluxDB 1.6 with its own data directory; ``start`` again after ``stop`` keeps the data."""

    def start(self) -> "InfluxD":
        self.directory.mkdir(parents=True, exist_ok=True)
        conf = self.directory / "influxdb.conf"
        conf.write_text(
            "reporting-disabled = true\n"
            f'bind-address = "127.0.0.1:{free_port()}"\n'
            f'[meta]\n  dir = "{self.directory}/meta"\n'
            f'[data]\n  dir = "{self.directory}/data"\n  wal-dir = "{self.directory}/wal"\n'
            "  query-log-enabled = false\n"
            f'[http]\n  bind-address = "127.0.0.1:{self.port}"\n  log-enabled = false\n'
            "[monitor]\n  store-enabled = false\n"
            "[continuous_queries]\n  enabled = false\n"
        )
        log = (self.directory / "influxd.log").open("ab")
        self.process = subprocess.Popen([str(_binary("influxd")), "-config", str(conf)], stdout=log, stderr=log)
        wait_for_port("127.0.0.1", self.port, timeout=30)
        return self

    def query(self, database: str, influxql: str) -> list[list]:
        response = httpx.get(f"{self.url}/query", params={"db": database, "q": influxql, "epoch": "ns"}, timeout=30)
        response.raise_for_status()
        result = response.json()["results"][0]
        assert "error" not in result, result["error"]
        return [row for series in result.get("series", []) for row in series["values"]]

    def create_database(self, name: str) -> None:
        httpx.post(f"{self.url}/query", params={"q": f'CREATE DATABASE "{name}"'}, timeout=30).raise_for_status()


class VictoriaMetrics(Server):
    def start(self) -> "VictoriaMetrics":
        self.directory.mkdir(parents=True, exist_ok=True)
        log = (self.directory / "vm.log").open("ab")
        self.process = subprocess.Popen(
            [str(_binary("victoria-metrics")), f"-storageDataPath={self.directory}/data",
             f"-httpListenAddr=127.0.0.1:{self.port}", "-loggerLevel=ERROR", "-search.disableCache"],
            stdout=log, stderr=log,
        )
        wait_for_port("127.0.0.1", self.port, timeout=30)
        return self

    def export(self, match: str) -> list[dict]:
        httpx.get(f"{self.url}/internal/force_flush", timeout=30)
        response = httpx.get(f"{self.url}/api/v1/export", params={"match[]": match}, timeout=30)
        response.raise_for_status()
        return [orjson.loads(line) for line in response.content.splitlines() if line.strip()]


def new_influxd(directory: Path) -> InfluxD:
    return InfluxD(free_port(), directory).start()


def new_victoria_metrics(directory: Path) -> VictoriaMetrics:
    return VictoriaMetrics(free_port(), directory).start()
