"""Backup and restore times of a work-order store, against a plain file copy of the same files.

Work orders are made by the real ticketing service (an anomaly opens one, it is cancelled, so each has a
keyed chain of events and an anchor in the audit log), at two sizes, so the per-order cost and its growth
are measured rather than assumed; the restore (copy, then every chain recomputed) is timed into a fresh
folder.

    python -m bench.backup --orders 20000

The service makes about 40 orders a second here (23 ms each), so a store of a million orders would take
about seven hours to make. ``--clone N`` makes ``--orders`` real ones, then fills the store up to N with copies of them: each
copy a new order (its own code, day and times), its events re-sealed into a chain of its own with the
gateway's key (``ticketing.chain.seal``) and its heads anchored in the audit log as the service anchors
them, so the restore verifies a million distinct chains exactly as it would verify real ones.

    python -m bench.backup --orders 2000 --clone 1000000
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from sqlalchemy import create_engine, func, insert, select

from gateway.audit import ANCHOR, AuditLog, Entry
from gateway.backup import backup, restore
from gateway.config import GatewayConfig, parse_config
from gateway.core import Anomaly, Severity
from gateway.keyring import Keyring
from ticketing import chain
from ticketing.lifecycle import State
from ticketing.models import Event, WorkOrder
from ticketing.service import TicketingService


def plant(data: Path, devices: int) -> GatewayConfig:
    return parse_config({
        "sites": [{"id": "north", "latitude": 53.55, "longitude": 9.99}],
        "assets": [{"id": f"pump-{i}", "type": "pump", "model": "Etanorm", "serial": f"S{i}", "site": "north"}
                   for i in range(devices)],
        "sources": [{"type": "mqtt", "name": "bench", "topic": "plant/{site}/{device}/telemetry"}],
        "engineers": [{"id": "e1", "name": "Eve", "skills": ["mechanical"], "capacity": 100,
                       "home": {"latitude": 53.6, "longitude": 10.0}}],
        "storage": {"telemetry": {"path": str(data / "telemetry.db")}},
        "ticketing": {"database_url": f"sqlite:///{data / 'workorders.db'}"},
        "detectors": {"checkpoint_path": str(data / "detectors.ckpt")},
    }, "bench")


def fill(config: GatewayConfig, orders: int, start: int) -> float:
    """``orders`` more work orders, each opened by a finding and cancelled; the seconds it took."""
    keyring = Keyring.load(config.keyring_path())
    audit = AuditLog(config.identity_database_url(), keyring, config.audit_witness_path())
    service = TicketingService(config.ticketing, config.core_assets(), config.engineers, signer=keyring, anchors=audit)
    began = time.perf_counter()
    devices = len(config.assets)
    for i in range(start, start + orders):
        code = service.handle_anomaly(Anomaly(f"pump-{i % devices}", 1.8e9 + i, "bench", 1.0, Severity.MEDIUM, "VIB",
                                              ["vibration"], "bench"))
        assert code is not None
        service.transition(code, State.CANCELLED, "bench", {"reason": "bench"})
    service.close()
    audit.close()
    return time.perf_counter() - began


# The order's own times, moved with a copy (JSON fields keep the template's: their size is what counts here).
SHIFTED = ("created_at", "updated_at", "last_occurrence_at", "closed_at", "offered_at", "accepted_at", "due_at")
CLONE_BATCH = 10_000


def clone(config: GatewayConfig, total: int) -> float:
    """Fill the store up to ``total`` orders with re-sealed copies of the real ones in it; the seconds it took."""
    keyring = Keyring.load(config.keyring_path())
    audit = AuditLog(config.identity_database_url(), keyring, config.audit_witness_path())
    engine = create_engine(config.ticketing.database_url)
    began = time.perf_counter()
    with engine.connect() as connection:
        templates = [dict(row._mapping) for row in connection.execute(select(WorkOrder.__table__).order_by(WorkOrder.id))]
        events: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for row in connection.execute(select(Event.__table__).order_by(Event.id)):
            events[row.work_order_id].append(dict(row._mapping))
        next_id = (connection.scalar(select(func.max(WorkOrder.id))) or 0) + 1
    with audit.engine.connect() as connection:
        anchored: dict[str, list[int]] = defaultdict(list)  # the lengths at which the service anchored each
        for target, details in connection.execute(select(Entry.target, Entry.details).where(Entry.action == ANCHOR)
                                                  .order_by(Entry.seq)):
            anchored[target].append(details["length"])
    # Copies start the day after the last real order, 1,440 a day (one a minute).
    start = (max(t["created_at"] for t in templates) // 86400 + 1) * 86400
    made = len(templates)
    while made < total:
        orders, sealed, heads = [], [], []
        for _ in range(min(CLONE_BATCH, total - made)):
            template = templates[made % len(templates)]
            at = start + (made - len(templates)) * 60.0
            day = datetime.fromtimestamp(at, timezone.utc).strftime("%Y%m%d")
            order = dict(template, id=next_id, code=f"{config.ticketing.code_prefix}-{day}-{int(at % 86400) // 60 + 1:04d}",
                         external_ref=None, open_dedup_key=None)
            delta = at - template["created_at"]
            for name in SHIFTED:
                if order[name] is not None:
                    order[name] += delta
            digest = chain.row_digest(SimpleNamespace(**order))
            previous = chain.GENESIS_HASH
            mine = []
            for original in events[template["id"]]:
                event = SimpleNamespace(**{**original, "id": None, "work_order_id": next_id, "at": original["at"] + delta})
                chain.seal(keyring, previous, order["code"], event, digest)
                previous = event.hash
                mine.append(event)
            sealed += [{k: v for k, v in vars(e).items() if k != "id"} for e in mine]
            heads += [(order["code"], mine[length - 1].hash, length, mine[length - 1].actor)
                      for length in anchored[template["code"]]]
            orders.append(order)
            next_id += 1
            made += 1
        with engine.begin() as connection:
            connection.execute(insert(WorkOrder.__table__), orders)
            connection.execute(insert(Event.__table__), sealed)
            anchored = audit.anchor_many(heads, connection)  # as the service anchors
        anchored()
        print(f"  {made:,} orders ({time.perf_counter() - began:.0f} s)", flush=True)
    engine.dispose()
    audit.close()
    return time.perf_counter() - began


def measure(config: GatewayConfig, scratch: Path, label: str) -> dict[str, float]:
    data = config.storage.telemetry.path.parent
    copied = scratch / f"copy-{label}"
    began = time.perf_counter()
    shutil.copytree(data, copied)
    copy_s = time.perf_counter() - began
    folder, manifest = backup(config, None, scratch / f"backups-{label}", telemetry=False)
    backup_s = manifest["verified_at"] - manifest["started_at"]
    fresh = plant(scratch / f"restored-{label}", len(config.assets))
    result = restore(folder, fresh, None)
    return {"orders": manifest["verification"]["counts"]["work_orders"],
            "events": manifest["verification"]["counts"]["events"],
            "bytes": sum(p["bytes"] for p in manifest["parts"]), "copy_s": copy_s, "backup_s": backup_s,
            "restore_s": result["restore_s"], "restore_copy_s": result["copy_s"], "restore_verify_s": result["verify_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=20_000, help="work orders at the larger size")
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--clone", type=int, default=0, metavar="N",
                        help="then fill the store up to N orders with re-sealed copies and measure that size too")
    parser.add_argument("--scratch", type=Path, default=None, help="folder for the stores (default: a temporary one)")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pmgw-bench-backup-", dir=options.scratch) as folder:
        scratch = Path(folder)
        config = plant(scratch / "data", options.devices)
        small = options.orders // 4
        fill_s = fill(config, small, 0)
        rows = [measure(config, scratch, "small")]
        fill_s += fill(config, options.orders - small, small)
        rows.append(measure(config, scratch, "large"))
        if options.clone > options.orders:
            clone_s = clone(config, options.clone)
            rows.append(measure(config, scratch, "cloned"))
    print(f"{options.orders} work orders made by the ticketing service in {fill_s:.0f} s "
          f"({fill_s / options.orders * 1000:.1f} ms each)")
    if options.clone > options.orders:
        print(f"filled up to {options.clone:,} with re-sealed copies in {clone_s:.0f} s")
    print()
    print("| orders | events | MB | plain copy s | backup s (with verify) | restore s (copy + verify) | restore / copy |"
          " restore s per 1M orders |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        per_million = row["restore_s"] / row["orders"] * 1e6
        print(f"| {row['orders']:,} | {row['events']:,} | {row['bytes'] / 1e6:.1f} | {row['copy_s']:.3f} | "
              f"{row['backup_s']:.2f} | {row['restore_s']:.2f} ({row['restore_copy_s']:.2f} + "
              f"{row['restore_verify_s']:.2f}) | {row['restore_s'] / max(row['copy_s'], 1e-6):.1f} | {per_million:.0f} |")
    for row in rows[1:]:
        growth = (row["restore_s"] / row["orders"]) / (rows[0]["restore_s"] / rows[0]["orders"])
        print(f"per-order restore cost at {row['orders']:,} vs {rows[0]['orders']:,} orders: {growth:.2f}x")


if __name__ == "__main__":
    main()
