"""Pick the engineer to send, as field-service schedulers do: hard filters first, then weighted objectives.

Hard filters: not declined, has the skill at the level, holds the certifications (valid
today), on shift (or on call for urgent work), capacity left, within the travel limit, can
arrive before the on-site deadline. The rest are graded 0..1 on travel time, SLA slack, skill fit (an expert is not
burnt on an easy job), load and continuity (fixed this asset before), and the weighted sum
wins. Every decision keeps the top candidates with their grades: anyone can see why.

Pure functions over plain data, so every decision can be replayed and tested.

>>> from ticketing.config import DispatchConfig, EngineerConfig, Location
>>> anna = EngineerConfig(id="anna", name="Anna", skills=["mechanical"], home=Location(latitude=52.52, longitude=13.40))
>>> ben = EngineerConfig(id="ben", name="Ben", skills=["electrical"], home=Location(latitude=52.50, longitude=13.41))
>>> job = Job("mechanical", 1, (), (52.51, 13.39), "P2", "pump-1", on_site_deadline=None)
>>> decision = choose_engineer(job, [anna, ben], Fleet(), datetime(2026, 11, 25, 10, tzinfo=timezone.utc), DispatchConfig())
>>> decision.engineer_id, decision.excluded
('anna', {'ben': 'lacks skill mechanical'})
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
from scipy.optimize import linear_sum_assignment

from ticketing.config import WEEKDAYS, DispatchConfig, EngineerConfig, ShiftConfig

EARTH_RADIUS_KM = 6371.0088


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


@dataclass(frozen=True)
class Job:
    """What a work order needs from an engineer."""

    required_skill: str
    required_level: int
    certifications: tuple[str, ...]
    site: tuple[float, float]
    priority: str
    device_id: str
    on_site_deadline: float | None = None
    excluded: frozenset[str] = frozenset()  # declined it, or let the offer time out


@dataclass
class Fleet:
    """What changes about engineers while the gateway runs."""

    locations: dict[str, tuple[float, float]] = field(default_factory=dict)  # last known, else home
    loads: dict[str, int] = field(default_factory=dict)  # open work orders assigned
    history: dict[str, set[str]] = field(default_factory=dict)  # devices each engineer has fixed
    # When each engineer can set off for new work (after what they are doing); now when absent.
    busy_until: dict[str, float] = field(default_factory=dict)


@dataclass
class Decision:
    engineer_id: str | None
    reason: str
    candidates: list[dict[str, Any]] = field(default_factory=list)
    excluded: dict[str, str] = field(default_factory=dict)

    @property
    def travel_s(self) -> float:
        return self.candidates[0]["travel_min"] * 60 if self.engineer_id and self.candidates else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"engineer_id": self.engineer_id, "reason": self.reason, "candidates": self.candidates,
                "excluded": self.excluded}


def available(engineer: EngineerConfig, priority: str, when: datetime, config: DispatchConfig) -> str | None:
    """Why the engineer cannot be called now, or None."""
    if on_shift(engineer.shift, when):
        return None
    if engineer.on_call is not None and on_shift(engineer.on_call, when):
        if priority in config.on_call_priorities:
            return None
        return f"on call only for {', '.join(config.on_call_priorities)}"
    return "off shift"


def grade(job: Job, engineer: EngineerConfig, fleet: Fleet, when: datetime, config: DispatchConfig,
          enforce_deadline: bool = True) -> dict[str, Any] | str:
    """The engineer's grades for the job, or the hard filter that rules them out.

    With ``enforce_deadline`` off (nobody can make the deadline any more), lateness only
    costs SLA slack: the work still needs the earliest engineer who can do it.
    """
    if engineer.id in job.excluded:
        return "declined or did not answer"
    level = engineer.skill_levels.get(job.required_skill)
    if level is None:
        return f"lacks skill {job.required_skill}"
    if level < job.required_level:
        return f"{job.required_skill} level {level} < {job.required_level}"
    today = when.date()
    missing = [name for name in job.certifications if not engineer.certified(name, today)]
    if missing:
        return f"no valid certification {', '.join(missing)}"
    unavailable = available(engineer, job.priority, when, config)
    if unavailable:
        return unavailable
    load = fleet.loads.get(engineer.id, 0)
    if load >= engineer.capacity:
        return f"at capacity ({load}/{engineer.capacity} open work orders)"
    latitude, longitude = fleet.locations.get(engineer.id, (engineer.home.latitude, engineer.home.longitude))
    distance = haversine_km(job.site[0], job.site[1], latitude, longitude)
    travel_s = distance * config.road_factor / config.average_speed_kmh * 3600
    limit = config.travel_limit_min(job.priority)
    if limit is not None and travel_s > limit * 60:
        # A hard limit, kept even when nobody can make the deadline: better the dispatcher queue than a trip
        # across the continent.
        return f"{travel_s / 60:.0f} min away: beyond the {limit:g} min travel limit"
    now = when.timestamp()
    wait_s = max(0.0, fleet.busy_until.get(engineer.id, now) - now)
    slack = 1.0
    if job.on_site_deadline is not None:
        window = job.on_site_deadline - now
        if window <= 0 or wait_s + travel_s > window:
            if enforce_deadline:
                busy = f", busy for {wait_s / 60:.0f} min" if wait_s else ""
                return f"cannot be on site before the deadline ({travel_s / 60:.0f} min away{busy})"
            slack = 0.0
        else:
            slack = (window - wait_s - travel_s) / window
    grades = {
        "travel": max(0.0, 1.0 - travel_s / 3600 / config.max_travel_h),
        "sla_slack": slack,
        "skill_fit": 1.0 - (level - job.required_level) / 4,
        "load": 1.0 - load / engineer.capacity,
        "continuity": 1.0 if job.device_id in fleet.history.get(engineer.id, set()) else 0.0,
    }
    weights = config.weights[job.priority].model_dump()
    score = sum(weights[name] * value for name, value in grades.items()) / sum(weights.values())
    return {
        "engineer_id": engineer.id, "name": engineer.name, "score": round(score, 4),
        "grades": {name: round(value, 3) for name, value in grades.items()},
        "distance_km": round(distance, 2), "travel_min": round(travel_s / 60, 1), "wait_min": round(wait_s / 60, 1),
        "skill_level": level, "open_work_orders": load,
    }


def _explain(best: dict[str, Any], job: Job, qualified: int) -> str:
    g = best["grades"]
    continuity = "; fixed this asset before" if g["continuity"] else ""
    return (f"{best['name']} scores best ({best['score']:.2f}) of {qualified} qualified for {job.required_skill}: "
            f"{best['travel_min']:.0f} min away ({best['distance_km']:.1f} km), SLA slack {g['sla_slack']:.2f}, "
            f"skill level {best['skill_level']} for {job.required_level}, "
            f"{best['open_work_orders']} open work order(s){continuity}")


def choose_engineer(
    job: Job, engineers: list[EngineerConfig], fleet: Fleet, when: datetime, config: DispatchConfig,
) -> Decision:
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    excluded, ranked, late = _rank(job, engineers, fleet, when, config)
    candidates = ranked[: config.candidates_kept]
    if not ranked:
        return Decision(None, f"no engineer can take it: {len(excluded)} ruled out (see excluded)", [], excluded)
    prefix = "no one can be on site before the deadline (SLA at risk); " if late else ""
    return Decision(ranked[0]["engineer_id"], prefix + _explain(ranked[0], job, len(ranked)), candidates, excluded)


_LATE = "cannot be on site before the deadline"


def _rank(job: Job, engineers: list[EngineerConfig], fleet: Fleet, when: datetime,
          config: DispatchConfig) -> tuple[dict[str, str], list[dict[str, Any]], bool]:
    """Who is ruled out and why, the rest best first, and whether the deadline had to be let go.

    When nobody can make the deadline any more, the work still needs someone: the candidates
    are graded again with lateness costing only SLA slack.
    """
    excluded, ranked = _grade_all(job, engineers, fleet, when, config, enforce_deadline=True)
    if ranked or not any(why.startswith(_LATE) for why in excluded.values()):
        return excluded, ranked, False
    excluded, ranked = _grade_all(job, engineers, fleet, when, config, enforce_deadline=False)
    return excluded, ranked, True


def _grade_all(job: Job, engineers: list[EngineerConfig], fleet: Fleet, when: datetime, config: DispatchConfig,
               enforce_deadline: bool) -> tuple[dict[str, str], list[dict[str, Any]]]:
    excluded: dict[str, str] = {}
    ranked: list[dict[str, Any]] = []
    for engineer in engineers:
        result = grade(job, engineer, fleet, when, config, enforce_deadline)
        if isinstance(result, str):
            excluded[engineer.id] = result
        else:
            ranked.append(result)
    # Ties go to the shorter trip, then the id, so a decision replays identically.
    ranked.sort(key=lambda c: (-c["score"], c["travel_min"], c["engineer_id"]))
    return excluded, ranked


def assign_batch(
    jobs: list[Job], engineers: list[EngineerConfig], fleet: Fleet, when: datetime, config: DispatchConfig,
) -> list[Decision]:
    """All jobs against all engineers at once (Hungarian method): the best total score, capacity respected.

    ``fleet.loads`` must not count the jobs being assigned. An engineer with room for n more
    jobs appears as n slots.
    """
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    slots = [e for e in engineers for _ in range(max(0, e.capacity - fleet.loads.get(e.id, 0)))]
    rankings = [_rank(job, engineers, fleet, when, config) for job in jobs]
    infeasible = -1.0
    scores = np.full((len(jobs), max(1, len(slots))), infeasible)
    for row, (_, ranked, _) in enumerate(rankings):
        score_of = {c["engineer_id"]: c["score"] for c in ranked}
        for column, engineer in enumerate(slots):
            scores[row, column] = score_of.get(engineer.id, infeasible)
    rows, columns = linear_sum_assignment(scores, maximize=True)
    chosen = {row: slots[column].id for row, column in zip(rows, columns)
              if slots and scores[row, column] > infeasible}
    decisions = []
    for row, (job, (excluded, ranked, _)) in enumerate(zip(jobs, rankings)):
        engineer_id = chosen.get(row)
        if engineer_id is None:
            reason = "no engineer left for it in the batch" if ranked else "no engineer can take it"
            decisions.append(Decision(None, reason, ranked[: config.candidates_kept], excluded))
            continue
        best = next(c for c in ranked if c["engineer_id"] == engineer_id)
        candidates = [best] + [c for c in ranked if c is not best][: config.candidates_kept - 1]
        reason = "batch re-optimisation (best total over all open work): " + _explain(best, job, len(ranked))
        decisions.append(Decision(engineer_id, reason, candidates, excluded))
    return decisions
