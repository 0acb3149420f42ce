"""Backup and restore of everything a gateway cannot rebuild, taken while it runs.

A backup is a folder ``pmgw-backup-<UTC time>`` with one file per part and a ``manifest.json``
(sizes, SHA-256 digests, row counts and the verification of the copy). The parts, in the order
they are taken so that every later one is at least as new as what it refers to:

1. the keyring and the audit log's tail witness (files beside the telemetry store; the witness
   before the audit log, so a consistent copy never looks truncated);
2. the identity database (users, keys, the audit log with each work order's chain anchor,
   configuration revisions) when it is not the work-order database;
3. the work-order database (orders, their keyed event chains, the webhook outbox, the alarm
   journal): after the anchors, so every chain reaches its anchor;
4. the durable buffers of the remote sinks, the detector checkpoints, the embedded telemetry
   store (unless left out: then the manifest says where the telemetry lives), the config file.

SQLite databases are copied with SQLite's online backup API (a consistent snapshot while the
gateway writes); PostgreSQL with ``pg_dump --format=custom``, or as a base backup (``pg_basebackup``)
that its WAL archive replays onto (``gateway.wal``: continuous backup, an RPO of the server's
``archive_timeout``). The copy is verified before the backup counts as taken: digests, ``PRAGMA
quick_check``, the audit log's MAC chain and every work order's chain recomputed with the backed-up
keyring (a PostgreSQL store's chains once restored: ``pmgw verify``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from gateway import wal
from gateway.audit import AuditLog
from gateway.config import GatewayConfig
from gateway.keyring import Keyring
from ticketing import chain
from ticketing.models import Event, WorkOrder

log = logging.getLogger(__name__)

FORMAT = "pm-gateway/backup"
VERSION = 1
PREFIX = "pmgw-backup-"


class BackupError(Exception):
    """A backup or restore that cannot be done, or a backup that does not verify."""


@dataclass(frozen=True)
class Part:
    name: str
    kind: str  # "file", "sqlite", "postgres" (pg_dump) or "postgres-base" (pg_basebackup of the whole server)
    source: str  # a path, or a database URL
    file: str  # its name in the backup folder


def _database(url: str) -> tuple[str, str]:
    """("sqlite", path) or ("postgres", libpq URL) of a SQLAlchemy URL."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return "sqlite", str(parsed.database)
    return "postgres", parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def _same_server(first: str, second: str) -> bool:
    a, b = make_url(first), make_url(second)
    return a.get_backend_name() == b.get_backend_name() == "postgresql" and (a.host, a.port) == (b.host, b.port)


def parts(config: GatewayConfig, config_path: Path | None, telemetry: bool = True,
          postgres: str = "dump") -> list[Part]:
    """What to back up, in the order it must be taken. ``postgres``: ``dump`` (pg_dump of each database) or
    ``base`` (a base backup of the work orders' server, onto which its WAL archive replays)."""
    found = [Part("keyring", "file", str(config.keyring_path()), "gateway.key"),
             Part("audit_witness", "file", str(config.audit_witness_path()), "gateway.key.audit-tail")]
    tickets, identities = config.ticketing.database_url, config.identity_database_url()
    base = postgres == "base" and _database(tickets)[0] == "postgres"
    if identities != tickets and not (base and _same_server(tickets, identities)):
        kind, source = _database(identities)
        found.append(Part("identities", kind, source, "identities.db" if kind == "sqlite" else "identities.pgdump"))
    kind, source = _database(tickets)
    if base:
        found.append(Part("workorders", "postgres-base", source, "workorders.base.tar.gz"))
    else:
        found.append(Part("workorders", kind, source, "workorders.db" if kind == "sqlite" else "workorders.pgdump"))
    for sink in config.storage.sinks:
        found.append(Part(f"buffer:{sink.name}", "sqlite", str(sink.buffer.path), f"buffer-{sink.name}.db"))
    checkpoint = config.detectors.checkpoint_path
    if checkpoint is not None:
        for index, path in enumerate(sorted(checkpoint.parent.glob(checkpoint.name + "*"))):
            if not path.name.endswith(".tmp"):
                found.append(Part(f"checkpoint:{path.name}", "file", str(path), f"checkpoint-{index}.ckpt"))
    if telemetry:
        found.append(Part("telemetry", "sqlite", str(config.storage.telemetry.path), "telemetry.db"))
    if config_path is not None:
        found.append(Part("config", "file", str(config_path), "gateway.yaml"))
    return found


def _copy_sqlite(source: Path, target: Path) -> None:
    """A consistent snapshot of a live SQLite database (its WAL included), whatever writes meanwhile."""
    live = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=60)
    copy = sqlite3.connect(target)
    try:
        live.backup(copy, pages=4096)
        # A plain file (no -wal or -shm beside it), so its digest is the whole of it.
        copy.execute("PRAGMA journal_mode=DELETE")
    finally:
        copy.close()
        live.close()


def _pg_dump(url: str, target: Path) -> None:
    result = subprocess.run(["pg_dump", "--format=custom", "--no-owner", f"--file={target}", f"--dbname={url}"],
                            capture_output=True, text=True, timeout=3600)
    if result.returncode != 0:
        raise BackupError(f"pg_dump failed: {result.stderr.strip()[:500]}")


def _take(part: Part, folder: Path) -> dict[str, Any] | None:
    target = folder / part.file
    source = Path(part.source)
    if part.kind == "postgres":
        _pg_dump(part.source, target)
    elif part.kind == "postgres-base":
        try:
            wal.base_backup(part.source, target)
        except wal.WalError as error:
            raise BackupError(str(error)) from None
    elif not source.exists():
        return None  # e.g. no checkpoint or witness yet: nothing to keep
    elif part.kind == "sqlite":
        _copy_sqlite(source, target)
    else:
        shutil.copy2(source, target)
    if part.name == "keyring":
        os.chmod(target, 0o600)
    return {"name": part.name, "kind": part.kind, "file": part.file, "bytes": target.stat().st_size,
            "sha256": wal.digest(target),
            "source": _without_password(part.source) if part.kind.startswith("postgres") else part.source}


def _without_password(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def backup(config: GatewayConfig, config_path: Path | None, root: Path, keep: int | None = None,
           telemetry: bool = True, postgres: str = "dump") -> tuple[Path, dict[str, Any]]:
    """Take, verify and keep a backup under ``root``; older ones beyond ``keep`` are removed. Its folder and
    manifest. ``postgres``: how a PostgreSQL store is taken (see :func:`parts`)."""
    started = time.time()
    stamp = datetime.fromtimestamp(started, timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    folder = root / f"{PREFIX}{stamp}"
    partial = root / f".{PREFIX}{stamp}.partial"
    partial.mkdir(parents=True)
    os.chmod(partial, 0o700)  # the keyring is inside
    taken = [entry for part in parts(config, config_path, telemetry, postgres) if (entry := _take(part, partial))]
    manifest: dict[str, Any] = {
        "format": FORMAT, "version": VERSION, "started_at": started, "finished_at": time.time(),
        "parts": taken, "telemetry": "included" if telemetry else _telemetry_pointer(config),
    }
    manifest["verification"] = verify_folder(partial, manifest)
    manifest["verified_at"] = time.time()
    if not manifest["verification"]["ok"]:
        raise BackupError(f"the backup in {partial} does not verify: {manifest['verification']['problems']}")
    (partial / "manifest.json").write_text(json.dumps(manifest, indent=2))
    partial.rename(folder)
    if keep is not None:
        for old in sorted(root.glob(f"{PREFIX}*"))[:-keep]:
            shutil.rmtree(old)
    log.info("backup %s: %d parts, %.1f s", folder, len(taken), time.time() - started)
    return folder, manifest


def _telemetry_pointer(config: GatewayConfig) -> str:
    sinks = ", ".join(f"{sink.name} ({sink.api.url})" for sink in config.storage.sinks)
    return f"not included: the embedded store {config.storage.telemetry.path}" + (f"; remote sinks {sinks}" if sinks else "")


def _part(manifest: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((p for p in manifest["parts"] if p["name"] == name), None)


def verify_folder(folder: Path, manifest: dict[str, Any], chains: bool = True) -> dict[str, Any]:
    """Digests, SQLite integrity, and (``chains``) the audit log's chain and every work order's chain, in the copy."""
    problems: list[str] = []
    for part in manifest["parts"]:
        path = folder / part["file"]
        if not path.exists() or wal.digest(path) != part["sha256"]:
            problems.append(f"{part['file']}: missing or not the file that was backed up")
        elif part["kind"] == "sqlite":
            connection = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
            try:
                verdict = connection.execute("PRAGMA quick_check").fetchone()[0]
            finally:
                connection.close()
            if verdict != "ok":
                problems.append(f"{part['file']}: {verdict}")
    counts: dict[str, Any] = {}
    tickets = _part(manifest, "workorders")
    keyring_part = _part(manifest, "keyring")
    identities = _part(manifest, "identities") or tickets
    if (chains and not problems and tickets is not None and identities is not None and keyring_part is not None
            and tickets["kind"] == identities["kind"] == "sqlite"):
        # Checked on copies: opening a database (even to read) may touch its header, and the backup stays as taken.
        with tempfile.TemporaryDirectory(prefix="pmgw-verify-") as scratch:
            for part in {tickets["file"], identities["file"], keyring_part["file"], "gateway.key.audit-tail"}:
                if (folder / part).exists():
                    shutil.copy2(folder / part, Path(scratch) / part)
            counts, found = verify_chains(f"sqlite:///{Path(scratch) / tickets['file']}",
                                          f"sqlite:///{Path(scratch) / identities['file']}",
                                          Path(scratch) / keyring_part["file"],
                                          Path(scratch) / "gateway.key.audit-tail", manifest["started_at"])
        problems += found
    return {"ok": not problems, "problems": problems, "counts": counts, "at": time.time()}


def _loads(text: str) -> Any:
    """orjson where it can (a store verified whole decodes every event's data), the standard library for what
    only it reads: the NaN and Infinity SQLAlchemy's default serializer writes for a reading that had them."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


# With the audit log in a database of its own (``auth.database_url``), anchoring follows the work orders' commit,
# and a backup taken while the gateway writes can catch an order between the two: such an order, changed this
# close to the snapshot, is counted as pending rather than broken. (In one database they commit together.)
ANCHOR_SETTLE_S = 30.0


def verify_chains(tickets_url: str, identities_url: str, keyring_path: Path, witness: Path | None,
                  taken_at: float | None = None) -> tuple[dict[str, int], list[str]]:
    """Counts of what a ticket store holds and what does not verify in it (the audit log, each order's chain)."""
    keyring = Keyring.load(keyring_path)
    audit = AuditLog(identities_url, keyring, witness if witness is not None and witness.exists() else None)
    problems = []
    try:
        audited = audit.verify()
        if not audited.get("valid", False):
            problems.append(f"audit log: {audited.get('reason', audited)}")
        anchors = audit.anchors()
        # Only read: no BEGIN IMMEDIATE (the gateway's writer lock) while the audit log is open on the same file.
        engine = create_engine(tickets_url, json_deserializer=_loads)
        broken = pending = 0
        with Session(engine) as session:
            orders = session.scalar(select(func.count()).select_from(WorkOrder)) or 0
            events = session.scalar(select(func.count()).select_from(Event)) or 0
            for order, verdict in chain.verify_all(session, keyring, anchors):
                if verdict["valid"]:
                    continue
                if (order.code not in anchors and taken_at is not None
                        and order.updated_at >= taken_at - ANCHOR_SETTLE_S):
                    pending += 1
                else:
                    broken += 1
                    if broken <= 5:
                        problems.append(f"work order {order.code}: {verdict['reason']}")
        engine.dispose()
    finally:
        audit.close()
    if broken > 5:
        problems.append(f"... {broken} work orders in all do not verify")
    return {"work_orders": orders, "events": events, "audit_entries": audited.get("entries", 0),
            "chains_verified": orders - broken - pending, "anchor_pending": pending}, problems


def latest(root: Path) -> Path | None:
    found = sorted(root.glob(f"{PREFIX}*"))
    return found[-1] if found else None


def restore(folder: Path, config: GatewayConfig, config_path: Path | None, force: bool = False,
            pgdata: Path | None = None, wal_archive: Path | None = None) -> dict[str, Any]:
    """Put a backup in place of the data the configuration names (a fresh data directory: existing files are
    refused unless ``force``), then verify what was restored. What was restored, and how long it took.

    A PostgreSQL base backup is unpacked into ``pgdata`` (a fresh data directory) set to replay
    ``wal_archive``; its chains are verified once that server has started (``pmgw verify``)."""
    started = time.time()
    manifest_path = folder / "manifest.json"
    if not manifest_path.exists():
        raise BackupError(f"{folder}: no manifest.json (not a finished backup)")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{folder}: not a pm-gateway backup")
    # The chains were verified when the backup was taken and the digests say it is unchanged since; they are
    # verified again once restored, where it counts.
    checked = verify_folder(folder, manifest, chains=False)
    if not checked["ok"]:
        raise BackupError(f"{folder} does not verify: {checked['problems']}")
    based = any(entry["kind"] == "postgres-base" for entry in manifest["parts"])
    if based and (pgdata is None or wal_archive is None):
        raise BackupError(f"{folder} holds a PostgreSQL base backup: give --pgdata (a fresh data directory for the "
                          "server) and --wal-archive (its WAL archive, replayed onto it)")
    destinations = {part.name: part for part in parts(config, config_path, postgres="base" if based else "dump")}
    # A detector checkpoint is restored under the name it had.
    plan = []
    for entry in manifest["parts"]:
        name = entry["name"]
        if name.startswith("checkpoint:") and config.detectors.checkpoint_path is not None:
            plan.append((entry, Part(name, "file", str(config.detectors.checkpoint_path.parent / name.split(":", 1)[1]),
                                     entry["file"])))
        elif name in destinations:
            plan.append((entry, destinations[name]))
        elif name != "config":
            raise BackupError(f"{entry['file']}: the configuration has no place for {name} (restore with the "
                              "configuration the backup was taken with; it is in the backup as gateway.yaml)")
    occupied = [target.source for entry, target in plan
                if not target.kind.startswith("postgres") and target.name != "config" and Path(target.source).exists()]
    if occupied and not force:
        raise BackupError("restore into a fresh data directory; these exist already: " + ", ".join(occupied))
    for entry, target in plan:
        if target.name == "config":
            continue
        source = folder / entry["file"]
        if target.kind == "postgres-base":
            assert pgdata is not None and wal_archive is not None
            try:
                wal.prepare_recovery(source, pgdata, wal_archive)
            except (OSError, tarfile.TarError, wal.WalError) as error:
                raise BackupError(f"{source}: {error}") from None
            continue
        if target.kind == "postgres":
            result = subprocess.run(["pg_restore", "--clean", "--if-exists", "--no-owner", f"--dbname={target.source}",
                                     str(source)], capture_output=True, text=True, timeout=3600)
            if result.returncode != 0:
                raise BackupError(f"pg_restore failed: {result.stderr.strip()[:500]}")
            continue
        destination = Path(target.source)
        destination.parent.mkdir(parents=True, exist_ok=True)
        for stale in (destination.with_name(destination.name + "-wal"), destination.with_name(destination.name + "-shm")):
            stale.unlink(missing_ok=True)
        shutil.copy2(source, destination)
        if target.name == "keyring":
            os.chmod(destination, 0o600)
    copied = time.time()
    if based:
        return {"backup": str(folder), "taken_at": manifest["started_at"], "parts": len(plan), "counts": None,
                "pgdata": str(pgdata), "copy_s": round(copied - started, 2), "verify_s": None,
                "restore_s": round(copied - started, 2)}
    counts, problems = verify_chains(config.ticketing.database_url, config.identity_database_url(),
                                     config.keyring_path(), config.audit_witness_path(), manifest["started_at"])
    if problems:
        raise BackupError(f"the restored data does not verify: {problems}")
    return {"backup": str(folder), "taken_at": manifest["started_at"], "parts": len(plan), "counts": counts,
            "copy_s": round(copied - started, 2), "verify_s": round(time.time() - copied, 2),
            "restore_s": round(time.time() - started, 2)}
