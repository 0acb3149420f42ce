"""Backup and restore drills: a verified online backup taken while a real gateway process writes work orders,
the data directory destroyed, restored from the backup, and counted: nothing acknowledged before the backup
began is missing, every chain verifies, and the gateway runs on the restored data. Also PostgreSQL (pg_dump and
pg_restore into a fresh database) and the retention of scheduled backups."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
import yaml

from gateway.broker import Mosquitto
from tests.conftest import gateway_document, wait_until
from tests.processes import GatewayProcess
from tests.servers import PostgreSQL


def pmgw(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True, text=True, timeout=600)


class OrderWriter:
    """Opens a manual work order and cancels it, again and again, remembering when each was acknowledged."""

    def __init__(self, api: str, key: str) -> None:
        self.http = httpx.Client(base_url=api, headers={"Authorization": f"Bearer {key}"}, timeout=10)
        self.acknowledged: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._write, daemon=True)

    def _write(self) -> None:
        while not self._stop.is_set():
            try:
                created = self.http.post("/work-orders", json={"device_id": "pump-01", "failure_mode": "VIB",
                                                               "title": "drill"})
                if created.status_code != 201:
                    continue
                code = created.json()["code"]
                self.acknowledged.append((time.time(), code))
                self.http.post(f"/work-orders/{code}/transitions", json={"to": "CANCELLED", "reason": "drill"})
            except httpx.HTTPError:
                return  # the gateway was killed

    def __enter__(self) -> "OrderWriter":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(20)


def admin_key(config: Path) -> str:
    made = pmgw("keys", "create", "drill", "--config", str(config), "--role", "admin")
    assert made.returncode == 0, made.stderr
    return next(word for word in made.stdout.split() if word.startswith("pmgw_"))


@pytest.fixture
def mosquitto_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    broker = Mosquitto.start(directory=tmp_path / "mosquitto")
    yield broker
    broker.stop()


def test_a_backup_taken_while_writing_restores_everything_acknowledged_before_it(
        mosquitto_broker: Mosquitto, tmp_path: Path) -> None:
    data = tmp_path / "data"
    document = gateway_document(mosquitto_broker.port, data)
    backups = tmp_path / "backups"
    with GatewayProcess(document, tmp_path) as gateway:
        key = admin_key(gateway.config)
        gateway.start()
        with OrderWriter(f"{gateway.api}/api/v1", key) as writer:
            wait_until(lambda: len(writer.acknowledged) >= 30, timeout=60, what="orders written")
            began = time.time()
            taken = pmgw("backup", "--config", str(gateway.config), "--to", str(backups))
            assert taken.returncode == 0, taken.stderr
            time.sleep(1)
            gateway.kill()  # kill -9 while the writer is still writing
        manifest = json.loads(next(backups.glob("pmgw-backup-*/manifest.json")).read_text())
    assert manifest["verification"]["ok"] and {p["name"] for p in manifest["parts"]} >= {
        "keyring", "workorders", "telemetry", "config"}
    before = [code for at, code in writer.acknowledged if at < began]
    after = [code for at, code in writer.acknowledged if at > manifest["finished_at"]]
    assert before and after  # written throughout the backup and after it

    shutil.rmtree(data)  # the box died
    started = time.monotonic()
    restored = pmgw("restore", "--config", str(tmp_path / "gateway.yaml"), "--from", str(backups))
    rto = time.monotonic() - started
    assert restored.returncode == 0, restored.stderr
    assert "chains verified" in restored.stdout
    # A second restore over the restored data is refused (a fresh data directory only, unless --force).
    again = pmgw("restore", "--config", str(tmp_path / "gateway.yaml"), "--from", str(backups))
    assert again.returncode == 1 and "fresh data directory" in again.stderr

    with GatewayProcess(document, tmp_path) as gateway:
        gateway.start()
        http = httpx.Client(base_url=f"{gateway.api}/api/v1", headers={"Authorization": f"Bearer {key}"}, timeout=10)
        stored = {o["code"] for o in http.get("/work-orders", params={"limit": 1000}).json()["items"]}
        missing = [code for code in before if code not in stored]
        assert missing == [], f"acknowledged before the backup began, lost: {missing}"
        lost_after = [code for code in after if code not in stored]
        assert lost_after == after  # what came after the backup is what a restore cannot have (the RPO)
        for code in before[:: max(1, len(before) // 10)]:
            assert http.get(f"/work-orders/{code}/verify").json()["valid"], code
        assert http.get("/auth/audit/verify").json()["valid"]
        assert http.get("/config/revisions").json()["total"] >= 1
        print(f"restore drill: {len(before)} orders before the backup, all restored; {len(lost_after)} written "
              f"after it lost; backup {manifest['finished_at'] - manifest['started_at']:.2f} s, restore {rto:.2f} s")


def test_postgres_backups_restore_into_a_fresh_database_and_old_backups_are_pruned(
        mosquitto_broker: Mosquitto, tmp_path: Path) -> None:
    source, target = PostgreSQL().start(), PostgreSQL().start()
    try:
        data = tmp_path / "data"
        document = gateway_document(mosquitto_broker.port, data, ticketing={"database_url": source.url})
        config = tmp_path / "gateway.yaml"
        with GatewayProcess(document, tmp_path) as gateway:
            key = admin_key(config)
            gateway.start()
            with OrderWriter(f"{gateway.api}/api/v1", key) as writer:
                wait_until(lambda: len(writer.acknowledged) >= 10, timeout=60, what="orders written")
            for _ in range(3):
                taken = pmgw("backup", "--config", str(config), "--to", str(tmp_path / "backups"), "--keep", "2",
                             "--no-telemetry")
                assert taken.returncode == 0, taken.stderr
            assert httpx.get(f"{gateway.api}/health/ready", timeout=5).json()["ready"] is True
            # The database goes away: the gateway is not ready (an orchestrator stops sending it work).
            source.halt()
            unready = httpx.get(f"{gateway.api}/health/ready", timeout=30)
            assert unready.status_code == 503 and "work-order database does not answer" in unready.text
            assert httpx.get(f"{gateway.api}/health/live", timeout=5).status_code == 200
            gateway.kill()
        kept = sorted((tmp_path / "backups").glob("pmgw-backup-*"))
        assert len(kept) == 2  # retention
        manifest = json.loads((kept[-1] / "manifest.json").read_text())
        assert manifest["telemetry"].startswith("not included") and "password" not in json.dumps(manifest)
        assert next(p for p in manifest["parts"] if p["name"] == "workorders")["kind"] == "postgres"

        shutil.rmtree(data)
        moved: dict[str, Any] = yaml.safe_load(config.read_text())
        moved["ticketing"]["database_url"] = target.url
        config.write_text(yaml.safe_dump(moved))
        restored = pmgw("restore", "--config", str(config), "--from", str(tmp_path / "backups"))
        assert restored.returncode == 0, restored.stderr
        assert f"{len(writer.acknowledged)} work orders" in restored.stdout
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            source.stop()  # already stopped above: only its folder is left to remove
        target.stop()


def test_a_store_tampered_with_is_not_backed_up_as_good(tmp_path: Path) -> None:
    """The backup re-verifies every chain: an order edited behind the gateway's back fails the backup, and a
    backup file changed afterwards fails the restore."""
    import sqlite3

    from gateway.backup import BackupError, backup, restore
    from gateway.config import parse_config
    from gateway.core import Anomaly, Severity
    from gateway.keyring import Keyring
    from gateway.audit import AuditLog
    from ticketing.service import TicketingService

    document = gateway_document(1883, tmp_path / "data")
    config = parse_config(document)
    keyring = Keyring.load(config.keyring_path())
    audit = AuditLog(config.identity_database_url(), keyring, config.audit_witness_path())
    service = TicketingService(config.ticketing, config.core_assets(), config.engineers, signer=keyring, anchors=audit)
    codes = [service.handle_anomaly(Anomaly(device, time.time(), "test", 9.0, Severity.HIGH, "VIB", ["vibration"],
                                            "vibration up")) for device in ("pump-01", "pump-02", "motor-01")]
    # A repeat whose limit is NaN: its event data is stored as JSON's NaN, which strict parsers refuse.
    service.handle_anomaly(Anomaly("pump-01", time.time(), "test", 9.0, Severity.HIGH, "VIB", ["vibration"],
                                   "vibration up", limit=float("nan")))
    service.close()
    audit.close()
    folder, manifest = backup(config, None, tmp_path / "backups", telemetry=False)
    assert manifest["verification"]["counts"]["chains_verified"] == 3

    database = sqlite3.connect(tmp_path / "data" / "workorders.db")
    database.execute("UPDATE work_orders SET priority = 'P4' WHERE code = ?", (codes[1],))
    database.commit()
    database.close()
    with pytest.raises(BackupError, match=f"work order {codes[1]}: the work order's fields do not match"):
        backup(config, None, tmp_path / "backups", telemetry=False)

    copy = sqlite3.connect(folder / "workorders.db")
    copy.execute("UPDATE work_orders SET title = 'x'")
    copy.commit()
    copy.close()
    shutil.rmtree(tmp_path / "data")
    with pytest.raises(BackupError, match="not the file that was backed up"):
        restore(folder, config, None)


def test_continuous_postgres_backup_replays_the_wal_archive_to_within_seconds_of_the_crash(
        mosquitto_broker: Mosquitto, tmp_path: Path) -> None:
    """RPO and RTO of a PostgreSQL ticket store backed up continuously: a base backup, then WAL archiving while
    a gateway writes; gateway and database killed together, the database's data directory deleted; restored
    from the base backup and the archive: counted against what the writer saw acknowledged."""
    archive_timeout_s = 5
    # PostgreSQL runs the archive command as its own user: the module (standard library only) from a folder
    # it can read (pytest's are root's only), with a Python it may run.
    source = PostgreSQL()
    tools, archive = source.directory / "tools", source.directory / "wal-archive"
    tools.mkdir()
    archive.mkdir()
    shutil.copy(Path(__file__).parents[1] / "gateway" / "wal.py", tools / "wal.py")
    # Without a Python of the system's (the virtualenv's may sit where the server's user cannot go), the
    # archive command of PostgreSQL's documentation: the restore side is the same.
    command = (f"/usr/bin/python3 {tools / 'wal.py'} archive --to {archive} %p %f" if Path("/usr/bin/python3").exists()
               else f"test ! -f {archive}/%f && cp %p {archive}/%f")
    source.settings = {"archive_mode": "on", "archive_timeout": str(archive_timeout_s), "archive_command": command}
    source.own(source.directory)
    source.start()
    target = PostgreSQL()
    try:
        data = tmp_path / "data"
        document = gateway_document(mosquitto_broker.port, data, ticketing={"database_url": source.url})
        config = tmp_path / "gateway.yaml"
        with GatewayProcess(document, tmp_path) as gateway:
            key = admin_key(config)
            gateway.start()
            with OrderWriter(f"{gateway.api}/api/v1", key) as writer:
                wait_until(lambda: len(writer.acknowledged) >= 10, timeout=60, what="orders written")
                taken = pmgw("backup", "--config", str(config), "--to", str(tmp_path / "backups"), "--postgres", "base",
                             "--no-telemetry")
                assert taken.returncode == 0, taken.stderr
                before_backup = len(writer.acknowledged)
                time.sleep(3 * archive_timeout_s)  # orders after the base backup live only in the WAL archive
                gateway.kill()
                source.halt()
                crashed_at = time.time()
        acknowledged = list(writer.acknowledged)
        assert len(acknowledged) > before_backup + 10
        manifest = json.loads((next((tmp_path / "backups").glob("pmgw-backup-*")) / "manifest.json").read_text())
        assert next(p for p in manifest["parts"] if p["name"] == "workorders")["kind"] == "postgres-base"
        shutil.rmtree(source.data)  # the database's data directory is gone (the archive is elsewhere)
        shutil.rmtree(data)

        began = time.time()
        moved: dict[str, Any] = yaml.safe_load(config.read_text())
        moved["ticketing"]["database_url"] = target.url
        config.write_text(yaml.safe_dump(moved))
        restored = pmgw("restore", "--config", str(config), "--from", str(tmp_path / "backups"),
                        "--pgdata", str(target.data), "--wal-archive", str(archive))
        assert restored.returncode == 0, restored.stderr
        target.own(target.directory)
        target.resume()  # replays the archive, then opens
        verified = pmgw("verify", "--config", str(config))
        recovery_s = time.time() - began
        assert verified.returncode == 0, verified.stderr + verified.stdout
        import sqlalchemy

        engine = sqlalchemy.create_engine(target.url)
        with engine.connect() as connection:
            present = set(connection.execute(sqlalchemy.text("SELECT code FROM work_orders")).scalars())
        engine.dispose()
        lost = [(at, code) for at, code in acknowledged if code not in present]
        newest_kept = max(at for at, code in acknowledged if code in present)
        rpo_s = crashed_at - newest_kept
        print(f"acknowledged {len(acknowledged)} ({before_backup} before the base backup), restored "
              f"{len(acknowledged) - len(lost)}, lost {len(lost)}; RPO {rpo_s:.1f} s (archive_timeout "
              f"{archive_timeout_s} s); RTO {recovery_s:.1f} s (restore, WAL replay, every chain verified); {verified.stdout.strip()}")
        # Everything acknowledged more than one archive period (and the archiver's own delay) before the crash is back.
        assert all(at >= crashed_at - archive_timeout_s - 3 for at, _ in lost), lost[:5]
        assert rpo_s <= archive_timeout_s + 3
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            source.stop()
        with contextlib.suppress(subprocess.CalledProcessError):
            target.stop()


def test_the_wal_archive_never_overwrites_a_different_segment(tmp_path: Path) -> None:
    from gateway import wal

    archive = tmp_path / "archive"
    archive.mkdir()
    segment = tmp_path / "000000010000000000000001"
    segment.write_bytes(b"a" * 4096)
    assert wal.main(["archive", "--to", str(archive), str(segment), segment.name]) == 0
    assert (archive / segment.name).read_bytes() == segment.read_bytes()
    assert wal.archive(segment, segment.name, archive) is False  # archived again after a retry: fine
    segment.write_bytes(b"b" * 4096)
    assert wal.main(["archive", "--to", str(archive), str(segment), segment.name]) == 1  # PostgreSQL keeps it
    assert (archive / segment.name).read_bytes() == b"a" * 4096
    assert not list(archive.glob(".*.partial"))
