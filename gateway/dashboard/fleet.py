"""The fleet at a glance: one health word per asset, from telemetry, detectors, work orders and states.

A plain function over the gateway's parts, a handful of queries for the whole
fleet (never one per asset), so a thousand devices cost what ten do.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.app import Gateway

# Worst first: what the fleet view sorts by.
HEALTH_ORDER = ("maintenance", "offline", "degraded", "work_order", "anomalous", "warming_up", "healthy")
NOT_OPERATING = {"maintenance", "standby", "commissioning"}


def plant_now(gateway: "Gateway", last_seen: dict[str, float]) -> float:
    """The plant's clock: the newest reading's time in a simulation (it runs ahead), else the wall clock."""
    if gateway.config.plant.simulated_speed and last_seen:
        return max(last_seen.values())
    return time.time()


def health_of(*, state: str | None, offline: bool, open_priority: str | None, alerting: bool,
              warming_up: bool, degraded: bool = False) -> str:
    """``degraded``: its readings are being refused (out of order, bad quality), so it is not fully watched.

    >>> health_of(state=None, offline=False, open_priority="P2", alerting=True, warming_up=False)
    'work_order'
    >>> health_of(state="standby", offline=True, open_priority=None, alerting=False, warming_up=False)
    'maintenance'
    >>> health_of(state=None, offline=False, open_priority="P2", alerting=False, warming_up=False, degraded=True)
    'degraded'
    """
    if state in NOT_OPERATING:
        return "maintenance"
    if offline:
        return "offline"
    if degraded:
        return "degraded"
    if open_priority:
        return "work_order"
    if alerting:
        return "anomalous"
    return "warming_up" if warming_up else "healthy"


def fleet_entries(gateway: "Gateway") -> tuple[list[dict[str, Any]], float]:
    """Every asset with its health, worst first; and the plant's now they were judged at."""
    last_seen = gateway.store.last_seen()
    now = plant_now(gateway, last_seen)
    open_orders = gateway.ticketing.open_by_device()
    states = gateway.ticketing.asset_states()
    detector = gateway.detectors.summaries()
    reported_offline = gateway.offline_devices()
    limit = gateway.config.plant.offline_after_s
    started_long_ago = time.time() - gateway.started_at > limit
    entries = []
    for asset in gateway.assets.values():
        seen = last_seen.get(asset.id)
        priority, count = open_orders.get(asset.id, (None, 0))
        warming_up, alerting, degraded = detector.get(asset.id, (True, False, False))
        offline = asset.id in reported_offline or (now - seen > limit if seen is not None else started_long_ago)
        entries.append({
            "id": asset.id, "name": asset.name, "site_id": asset.site.id, "site_name": asset.site.name,
            "type": asset.type, "model": asset.model, "criticality": asset.criticality.value,
            "health": health_of(state=states.get(asset.id), offline=offline, open_priority=priority,
                                alerting=alerting, warming_up=warming_up, degraded=degraded),
            "operating_state": states.get(asset.id, "operating"), "open_priority": priority,
            "open_work_orders": count, "last_reading_at": seen,
        })
    entries.sort(key=lambda e: (HEALTH_ORDER.index(e["health"]), e["open_priority"] or "P9", e["id"]))
    return entries, now


@dataclass
class ConnectorRates:
    """Readings per second of each connector, from its counter between two looks."""

    previous: dict[str, tuple[float, int]] = field(default_factory=dict)

    def strip(self, gateway: "Gateway") -> list[dict[str, Any]]:
        now = time.monotonic()
        shown = []
        for connector in gateway.connectors:
            diagnostics = connector.diagnostics()
            readings = int(diagnostics.get("readings", 0))
            before = self.previous.get(connector.name)
            rate = (readings - before[1]) / (now - before[0]) if before and now > before[0] else 0.0
            self.previous[connector.name] = (now, readings)
            errors = diagnostics.get("errors", {})
            shown.append({"name": connector.name, "type": str(diagnostics.get("type", "")),
                          "connected": bool(diagnostics.get("connected", False)), "readings_per_s": max(rate, 0.0),
                          "errors": sum(errors.values()) if isinstance(errors, dict) else int(errors or 0)})
        return shown
