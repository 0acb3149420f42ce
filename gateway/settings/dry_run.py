"""A proposed configuration tried on history before it is applied.

The last days of stored readings (when detection changes) or of the findings ticketing received (when
only ticketing, dispatch or the registry changes), and the device alarms of the window, are replayed
through the configuration in force and through the proposed one, each into a throw-away ticketing
database on the findings' own clock. The answer is what would have been different: work orders that
would or would not have opened, and orders that would have had another priority, skill or engineer.

The replay starts cold (detectors warm up again inside the window, orders opened in it stay open), the
same for both sides: the comparison is between two configurations, not a forecast of the plant.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from sqlalchemy import Connection

from detectors.engine import DetectorEngine
from gateway.config import GatewayConfig
from gateway.core import Alarm, Anomaly, Reading
from ticketing.service import TicketingService

if TYPE_CHECKING:
    from gateway.app import Gateway

BATCH = 2000


class _NoAnchors:
    """A replay's chains are thrown away with its database: nothing to anchor."""

    def anchor_many(self, heads: list[tuple[str, str, int, str]], within: Connection) -> Callable[[], None]:
        return _nothing

    def shares(self, within: Connection) -> bool:
        return True  # nothing is pending either

    def latest_anchor(self, code: str) -> dict[str, Any] | None:
        return None


def _nothing() -> None:
    return None


class _ReplayClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _readings(gateway: "Gateway", devices: list[str], since: float, until: float, limit: int) -> list[Reading]:
    share = max(1, limit // max(1, len(devices)))
    readings = [r for device in devices for r in gateway.store.history(device, None, since, until, share)]
    readings.sort(key=lambda r: r.timestamp)
    return readings


def _detect(config: GatewayConfig, readings: list[Reading]) -> list[Anomaly]:
    engine = DetectorEngine(config.detectors, {asset.id: asset.type for asset in config.assets})
    found: list[Anomaly] = []
    for start in range(0, len(readings), BATCH):
        found += engine.process(readings[start:start + BATCH])
    return found


def _ticket(gateway: "Gateway", config: GatewayConfig, anomalies: list[Anomaly], alarms: list[Alarm],
            folder: Path, name: str) -> list[dict[str, Any]]:
    """The work orders ``config`` would have opened from these findings, in time order."""
    findings: list[tuple[float, Anomaly | Alarm]] = [(a.detected_at, a) for a in anomalies]
    findings += [(a.raised_at, a) for a in alarms]
    findings.sort(key=lambda pair: pair[0])
    clock = _ReplayClock(findings[0][0] if findings else 0.0)
    ticketing_config = config.ticketing.model_copy(update={"database_url": f"sqlite:///{folder / name}.db"})
    service = TicketingService(ticketing_config, config.core_assets(), config.engineers, clock=clock,
                               signer=gateway.keyring, anchors=_NoAnchors())
    try:
        for at, finding in findings:
            clock.now = at
            if isinstance(finding, Anomaly):
                service.handle_anomaly(finding)
            else:
                service.handle_alarm(finding)
        orders = service.list_work_orders(limit=100_000)
    finally:
        service.close()
    return sorted((_summary(order) for order in orders), key=lambda o: o["opened_at"])


def _summary(order: dict[str, Any]) -> dict[str, Any]:
    return {"device_id": order["device_id"], "failure_mode": order["failure_mode"], "priority": order["priority"],
            "opened_at": order["created_at"], "engineer_id": order.get("assigned_engineer_id"),
            "required_skill": order.get("required_skill"), "title": order["title"]}


def _compare(current: list[dict[str, Any]], proposed: list[dict[str, Any]], window_s: float) -> dict[str, Any]:
    unmatched = list(current)
    changed, added = [], []
    for order in proposed:
        twin = next((c for c in unmatched if c["device_id"] == order["device_id"]
                     and c["failure_mode"] == order["failure_mode"]
                     and abs(c["opened_at"] - order["opened_at"]) <= window_s), None)
        if twin is None:
            added.append(order)
            continue
        unmatched.remove(twin)
        differences = {key: {"current": twin[key], "proposed": order[key]}
                       for key in ("priority", "engineer_id", "required_skill", "title") if twin[key] != order[key]}
        if differences:
            changed.append({"device_id": order["device_id"], "failure_mode": order["failure_mode"],
                            "opened_at": order["opened_at"], "differences": differences})
    return {"would_open": added, "would_not_open": unmatched, "changed": changed}


def dry_run(gateway: "Gateway", proposed: GatewayConfig, days: float, max_readings: int,
            now: float) -> dict[str, Any]:
    current = gateway.config
    since, until = now - days * 86400, now
    detection_changes = current.detectors != proposed.detectors or current.assets != proposed.assets
    devices = sorted({asset.id for asset in current.assets} | {asset.id for asset in proposed.assets})
    stored_anomalies, alarms = gateway.ticketing.findings_between(since, until, max_readings)
    readings: list[Reading] = []
    if detection_changes:
        readings = _readings(gateway, devices, since, until, max_readings)
        found = {"current": _detect(current, readings), "proposed": _detect(proposed, readings)}
    else:
        found = {"current": stored_anomalies, "proposed": stored_anomalies}
    with tempfile.TemporaryDirectory(prefix="pmgw-dry-run-") as folder:
        orders = {side: _ticket(gateway, config, found[side], alarms, Path(folder), side)
                  for side, config in (("current", current), ("proposed", proposed))}
    return {
        "since": since, "until": until, "devices": len(devices),
        "replayed": "readings" if detection_changes else "findings",
        "readings": len(readings), "alarms": len(alarms),
        "current": {"findings": len(found["current"]), "work_orders": len(orders["current"])},
        "proposed": {"findings": len(found["proposed"]), "work_orders": len(orders["proposed"])},
        **_compare(orders["current"], orders["proposed"], proposed.ticketing.group_window_s),
    }
