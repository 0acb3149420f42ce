"""InfluxDB 1.6 and VictoriaMetrics on free loopback ports, from binaries scripts/setup.sh unpacked."""

from __future__ import annotations

import shlex
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


class PostgreSQL:
    """A throw-away PostgreSQL cluster on a free loopback port (Debian's server binaries, trust auth).

    PostgreSQL refuses to run as root: as root the cluster belongs to the ``postgres`` user.
    """

    def __init__(self, fsync: bool = False, settings: dict[str, str] | None = None) -> None:
        import os
        import pwd
        import shutil
        import tempfile

        # Tests trade durability across a power cut for speed; a bench that compares with a synced
        # SQLite keeps fsync on.
        self.fsync = fsync
        self.settings = settings or {}
        self.bin = _postgres_bin()
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="pmgw-postgres-"))
        self._as_postgres: list[str] = []
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.directory, owner.pw_uid, owner.pw_gid)
            self._as_postgres = [shutil.which("runuser") or "/sbin/runuser", "-u", "postgres", "--"]
        self.data = self.directory / "data"

    def _run(self, *command: str) -> None:
        subprocess.run([*self._as_postgres, *command], check=True, capture_output=True, timeout=120)

    def start(self) -> "PostgreSQL":
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "pmgw", "--auth=trust", "-E", "UTF8")
        self.resume()
        self._run(str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "pmgw", "pmgw")
        return self

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://pmgw@127.0.0.1:{self.port}/pmgw"

    def halt(self) -> None:
        """Stop the server at once (as a crash would), keeping its data for :meth:`resume`."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def resume(self) -> None:
        # pg_ctl starts the server through the shell.
        extra = "".join(f" -c {name}={shlex.quote(value)}" for name, value in self.settings.items())
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.directory / "postgres.log"), "-w",
                  "-t", "300", "-o", f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 "
                                     f"-c fsync={'on' if self.fsync else 'off'}{extra}", "start")

    def own(self, path: Path) -> None:
        """Give ``path`` (recursively) to the server's user (a data directory or WAL archive made as root)."""
        if self._as_postgres:
            subprocess.run(["chown", "-R", "postgres:postgres", str(path)], check=True)

    def stop(self) -> None:
        import shutil

        try:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


def _postgres_bin() -> Path:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not versions:
        raise RuntimeError("PostgreSQL server binaries are missing: run 'bash scripts/setup.sh' (the test command does)")
    return versions[-1].parent
