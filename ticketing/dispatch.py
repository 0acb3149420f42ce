"""Pick the engineer to send: hard filters first, then the nearest.

Pure functions over plain data, so every decision can be replayed and tested.

>>> from ticketing.config import EngineerConfig, Location, ShiftConfig
>>> anna = EngineerConfig(id="anna", name="Anna", skills=["mechanical"], home=Location(latitude=52.52, longitude=13.40))
>>> ben = EngineerConfig(id="ben", name="Ben", skills=["electrical"], home=Location(latitude=52.50, longitude=13.41))
>>> decision = choose_engineer([anna, ben], "mechanical", (52.51, 13.39), datetime(2026, 11, 25, 10, tzinfo=timezone.utc), {})
>>> decision.engineer_id, decision.excluded
('anna', {'ben': 'lacks skill mechanical'})
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

from ticketing.config import WEEKDAYS, EngineerConfig, ShiftConfig

EARTH_RADIUS_KM = 6371.0088
CANDIDATES_KEPT = 5


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in kilometres.

    >>> round(haversine_km(52.5200, 13.4050, 48.1351, 11.5820))  # Berlin - Munich
    504
    """
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi = phi2 - phi1
    dlambda = math.radians(lon2 - lon1)
    a = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlambda / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(a))


def _minutes(clock: str) -> int:
    hours, minutes = clock.split(":")
    return int(hours) * 60 + int(minutes)


def on_shift(shift: ShiftConfig, when: datetime) -> bool:
    """Whether ``when`` falls in the shift; an overnight shift belongs to the day it starts.

    >>> night = ShiftConfig(days=["mon"], start="22:00", end="06:00", timezone="UTC")
    >>> on_shift(night, datetime(2026, 11, 24, 3, 0, tzinfo=timezone.utc))  # Tuesday 03:00
    True
    >>> on_shift(night, datetime(2026, 11, 25, 3, 0, tzinfo=timezone.utc))  # Wednesday 03:00
    False
    """
    local = when.astimezone(ZoneInfo(shift.timezone))
    now = local.hour * 60 + local.minute
    start, end = _minutes(shift.start), _minutes(shift.end)
    today = WEEKDAYS[local.weekday()]
    yesterday = WEEKDAYS[(local.weekday() - 1) % 7]
    if start < end:
        return today in shift.days and start <= now < end
    return (today in shift.days and now >= start) or (yesterday in shift.days and now < end)


@dataclass
class Decision:
    engineer_id: str | None
    reason: str
    candidates: list[dict[str, Any]] = field(default_factory=list)
    excluded: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "engineer_id": self.engineer_id,
            "reason": self.reason,
            "candidates": self.candidates,
            "excluded": self.excluded,
        }


def choose_engineer(
    engineers: list[EngineerConfig],
    required_skill: str,
    site: tuple[float, float],
    when: datetime,
    loads: dict[str, int],
) -> Decision:
    """The nearest engineer who has ``required_skill`` and is on shift at ``when``.

    Ties in distance go to the engineer with fewer open work orders.
    """
    excluded: dict[str, str] = {}
    ranked: list[tuple[float, int, EngineerConfig]] = []
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    for engineer in engineers:
        if required_skill not in engineer.skills:
            excluded[engineer.id] = f"lacks skill {required_skill}"
            continue
        if not on_shift(engineer.shift, when):
            excluded[engineer.id] = "off shift"
            continue
        distance = haversine_km(site[0], site[1], engineer.home.latitude, engineer.home.longitude)
        ranked.append((distance, loads.get(engineer.id, 0), engineer))
    ranked.sort(key=lambda item: (round(item[0], 3), item[1], item[2].id))
    candidates = [
        {"engineer_id": engineer.id, "name": engineer.name, "distance_km": round(distance, 2), "open_work_orders": load}
        for distance, load, engineer in ranked[:CANDIDATES_KEPT]
    ]
    if not ranked:
        return Decision(None, f"no engineer with skill {required_skill} is on shift", candidates, excluded)
    distance, load, chosen = ranked[0]
    reason = (
        f"{chosen.name} is the nearest on-shift engineer with skill {required_skill}: "
        f"{distance:.1f} km from site, {load} open work order(s)"
    )
    return Decision(chosen.id, reason, candidates, excluded)
