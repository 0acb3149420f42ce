"""Backup and restore times of a work-order store, against a plain file copy of the same files.

Work orders are made by the real ticketing service (an anomaly opens one, it is cancelled, so each has a
keyed chain of events and an anchor in the audit log), at two sizes, so the per-order cost and its growth
are measured rather than assumed; the restore (copy, then every chain recomputed) is timed into a fresh
folder and extrapolated to one million orders.

    python -m bench.backup --orders 20000
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from gateway.audit import AuditLog
from gateway.backup import backup, restore
from gateway.config import GatewayConfig, parse_config
from gateway.core import Anomaly, Severity
from gateway.keyring import Keyring
from ticketing.lifecycle import State
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
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pmgw-bench-backup-") as folder:
        scratch = Path(folder)
        config = plant(scratch / "data", options.devices)
        small = options.orders // 4
        fill_s = fill(config, small, 0)
        rows = [measure(config, scratch, "small")]
        fill_s += fill(config, options.orders - small, small)
        rows.append(measure(config, scratch, "large"))
    print(f"{options.orders} work orders made by the ticketing service in {fill_s:.0f} s "
          f"({fill_s / options.orders * 1000:.1f} ms each)\n")
    print("| orders | events | MB | plain copy s | backup s (with verify) | restore s (copy + verify) | restore / copy |"
          " restore s per 1M orders |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        per_million = row["restore_s"] / row["orders"] * 1e6
        print(f"| {row['orders']:,} | {row['events']:,} | {row['bytes'] / 1e6:.1f} | {row['copy_s']:.3f} | "
              f"{row['backup_s']:.2f} | {row['restore_s']:.2f} ({row['restore_copy_s']:.2f} + "
              f"{row['restore_verify_s']:.2f}) | {row['restore_s'] / max(row['copy_s'], 1e-6):.1f} | {per_million:.0f} |")
    growth = (rows[1]["restore_s"] / rows[1]["orders"]) / (rows[0]["restore_s"] / rows[0]["orders"])
    print(f"\nper-order restore cost at {rows[1]['orders']:,} vs {rows[0]['orders']:,} orders: {growth:.2f}x "
          "(1.0: linear, so the extrapolation to 1M holds)")


if __name__ == "__main__":
    main()
