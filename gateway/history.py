"""Months of fleet history, quickly, through the real ticketing code: failures become findings,
work orders are opened, dispatched, worked and closed by simulated engineers with failure coding
(some of it wrong, some no-fault-found), on a simulated clock; one reading per device per day
marks it monitored. Planted clusters raise the failure rate of matching assets, so the analysis
has something true to find. Each order records the operating context the simulators' physics give
its asset (its model's design at its site's ambient temperature), as a live gateway records it
from telemetry.

    cluster = PlantedCluster(model="P-200", environment={"humidity_pct": (80, None)},
                             maintainable_item="seal", rate_ratio=3)
"""

from __future__ import annotations

import random
import statistics
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.audit import AuditLog
from gateway.core import Anomaly, Asset, Reading, Severity
from gateway.keyring import Keyring
from ticketing.coding import items_for
from ticketing.config import EngineerConfig, TicketingConfig
from ticketing.lifecycle import State
from simulators.physics import DEVICE_TYPES, DeviceModel, DeviceSpec
from ticketing.service import TicketingService

DAY = 86400.0
MODES_BY_ITEM = {"bearing": ("VIB", "2.4 wear"), "seal": ("ELU", "1.1 leakage"), "impeller": ("LOO", "2.3 erosion"),
                 "winding": ("OHE", "2.7 overheating"), "valve": ("INL", "1.1 leakage")}


@dataclass(frozen=True)
class PlantedCluster:
    """Assets matching every given attribute fail at ``rate_ratio`` times the base rate on ``maintainable_item``.
    ``environment``: site environment ranges, ``name: (low, high)`` with either end open (None)."""

    maintainable_item: str
    rate_ratio: float
    model: str | None = None
    firmware: str | None = None
    environment: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)

    def matches(self, asset: Asset) -> bool:
        if self.model is not None and asset.model != self.model:
            return False
        if self.firmware is not None and asset.firmware != self.firmware:
            return False
        for name, (low, high) in self.environment.items():
            value = asset.site.environment.get(name)
            if value is None or (low is not None and value <= low) or (high is not None and value > high):
                return False
        return True


@dataclass
class HistoryPlan:
    days: int = 180
    # Failures per device-day of each maintainable item, before planted clusters.
    base_rate: float = 0.002
    items: tuple[str, ...] = ("bearing", "seal", "impeller")
    clusters: list[PlantedCluster] = field(default_factory=list)
    miscoding: float = 0.05  # a closure coded with the wrong maintainable item
    false_alarms: float = 0.1  # extra findings per real failure that turn out no-fault-found
    seed: int = 0


class SimulatedClock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def generate(service: TicketingService, clock: SimulatedClock, assets: dict[str, Asset], plan: HistoryPlan,
             monitored: Any = None) -> dict[str, int]:
    """Drive ``service`` through ``plan.days`` of history; ``monitored(readings)``, if given, is
    handed one reading per device per day. Returns counts of what was made."""
    rng = random.Random(plan.seed)
    start = clock.now
    events: list[tuple[float, str, str, bool]] = []
    for asset in assets.values():
        for item in plan.items:
            rate = plan.base_rate
            for cluster in plan.clusters:
                if cluster.maintainable_item == item and cluster.matches(asset):
                    rate *= cluster.rate_ratio
            t = start
            while True:
                t += rng.expovariate(rate) * DAY
                if t >= start + plan.days * DAY:
                    break
                events.append((t, asset.id, item, True))
                if rng.random() < plan.false_alarms:
                    events.append((t + rng.uniform(1, 20) * DAY, asset.id, item, False))
    events.sort()
    made = {"failures": 0, "false_alarms": 0, "work_orders": 0}
    day = -1
    for at, device, item, real in events:
        if at >= start + plan.days * DAY:
            continue
        if monitored is not None and int((at - start) // DAY) > day:
            # Catch the telemetry up day by day to the next event.
            for d in range(day + 1, int((at - start) // DAY) + 1):
                monitored([Reading(a, "load", 1.0, start + d * DAY) for a in assets])
            day = int((at - start) // DAY)
        clock.now = at
        code = _raise(service, assets[device], item, at)
        if code is None:
            continue
        made["work_orders"] += 1
        made["failures" if real else "false_alarms"] += 1
        _work(service, clock, code, assets[device], item, real, rng, plan)
    if monitored is not None:
        for d in range(day + 1, plan.days):
            monitored([Reading(a, "load", 1.0, start + d * DAY) for a in assets])
    clock.now = start + plan.days * DAY
    return made


def _raise(service: TicketingService, asset: Asset, item: str, at: float) -> str | None:
    mode, mechanism = MODES_BY_ITEM.get(item, ("BRD", "2.5 breakage"))
    return service.handle_anomaly(Anomaly(
        device_id=asset.id, detected_at=at, detector="history", score=10.0, severity=Severity.MEDIUM,
        failure_mode=mode, metrics=["load"], message=f"{item} deteriorating", failure_mechanism=mechanism,
        maintainable_item=item))


def _work(service: TicketingService, clock: SimulatedClock, code: str, asset: Asset, item: str, real: bool,
          rng: random.Random, plan: HistoryPlan) -> None:
    order = service.get_work_order(code)
    if order is not None and order["state"] == "REOPENED":
        # A recurrence soon after the close reopened it: the same engineer goes back.
        engineer = order["assigned_engineer_id"] or service.engineers[0].id
        clock.now += rng.uniform(5, 40) * 60
        order = service.transition(code, State.DISPATCHED, "dispatcher", {"engineer_id": engineer, "eta": clock.now + 3600})
    if order is None or order["state"] not in ("RECEIVED", "DISPATCHED"):
        return  # joined an open order (a repeat occurrence)
    engineer = order["assigned_engineer_id"]
    if engineer is None:
        return  # stays in the backlog
    clock.now += rng.uniform(5, 40) * 60
    service.accept(code, engineer)
    for target in (State.EN_ROUTE, State.ON_SITE, State.IN_PROGRESS):
        clock.now += rng.uniform(10, 90) * 60
        service.transition(code, target, engineer, {})
    clock.now += rng.uniform(0.5, 6) * 3600
    coded = item
    if rng.random() < plan.miscoding:
        coded = rng.choice([i for i in items_for(service.config.coding, asset.type) if i != item] or [item])
    mode, mechanism = MODES_BY_ITEM.get(coded, ("BRD", "2.5 breakage"))
    fields = {"resolution": f"replaced {coded}" if real else "checked, nothing found",
              "failure_mode": mode, "failure_mechanism": mechanism if real else "6.1 no cause found",
              "failure_cause": "wear and tear" if real else "no fault found", "maintainable_item": coded,
              "restored_at": clock.now, "labour_hours": round(rng.uniform(0.5, 6), 1)}
    service.transition(code, State.DONE, engineer, fields)


def default_ticketing(database_url: str) -> TicketingConfig:
    """Ticketing as the history needs it: no grouping window (each failure its own order)."""
    return TicketingConfig(database_url=database_url, group_window_s=0)


# An hour of healthy running, sampled each minute: enough for the thermal lags to settle.
CONTEXT_STEPS, CONTEXT_STEP_S = 60, 60.0


def simulated_operating_means(assets: dict[str, Asset]) -> Callable[[str, float, float], dict[str, float]]:
    """The operating context (each metric's mean) the simulators' physics give each asset: what the
    embedded store would answer had the asset streamed its telemetry. Computed once per asset."""
    cache: dict[str, dict[str, float]] = {}

    def means(device_id: str, since: float, until: float) -> dict[str, float]:
        if device_id not in cache:
            asset = assets[device_id]
            environment = {k: float(v) for k, v in asset.site.environment.items() if isinstance(v, (int, float))}
            spec = DeviceSpec(asset.id, asset.type if asset.type in DEVICE_TYPES else "pump", asset.site.id,
                              asset.model, environment)
            model = DeviceModel(spec, seed=zlib.crc32(asset.id.encode()))
            samples = [model.step(i * CONTEXT_STEP_S) for i in range(1, CONTEXT_STEPS + 1)]
            cache[device_id] = {metric: statistics.fmean(s[metric] for s in samples[CONTEXT_STEPS // 2:])
                                for metric in samples[0]}
        return cache[device_id]

    return means


def scratch_service(directory: Path, assets: dict[str, Asset], start: float, engineers: int = 5,
                    database_url: str | None = None) -> tuple[TicketingService, SimulatedClock]:
    """A ticketing service on SQLite files in ``directory`` (or on ``database_url``), keyed and
    anchored there, on a simulated clock starting at ``start``, with ``engineers`` mechanics who can
    each hold 100 orders, recording the simulated operating context."""
    keyring = Keyring.load(directory / "gateway.key")
    crew = [EngineerConfig(id=f"e{i}", name=f"E{i}", skills=["mechanical"], capacity=100,
                           home={"latitude": 50.0, "longitude": 8.0}) for i in range(engineers)]
    clock = SimulatedClock(start)
    service = TicketingService(default_ticketing(database_url or f"sqlite:///{directory / 'workorders.db'}"), assets, crew,
                               clock=clock, signer=keyring, anchors=AuditLog(f"sqlite:///{directory / 'audit.db'}", keyring),
                               operating_means=simulated_operating_means(assets))
    return service, clock
